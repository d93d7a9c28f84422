# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception`: train, evaluate, predict, export, make-bag, replay, evaluate-bag, harvest, demo, bench, adapt.

Each subcommand is a thin argument parser over the ROS-free core; expected
failures (bad files, bad config) print one clear line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..classes import ClassTableError
from ..inference.checkpoint import CheckpointError
from ..inference.export import ExportMismatchError
from ..inference.input_size import InputSizeError
from ..inference.providers import ProviderError
from ..inference.segmenter import InputError
from ..learning.datasets import IMAGE_SUFFIXES, LAYOUTS, DatasetError, read_rgb
from ..learning.models import UnknownModelError
from ..learning.training import CHOICES, ConfigError, TrainConfig
from .common import add_model_args, open_segmenter

EXPECTED_ERRORS = (CheckpointError, ClassTableError, DatasetError, UnknownModelError, ConfigError,
                   FileNotFoundError, InputError, ExportMismatchError, InputSizeError, ProviderError)


def _pair(kind):
    def parse(text: str):
        parts = text.replace("x", ",").split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected two values like 480x360, got '{text}'")
        return tuple(kind(p) for p in parts)
    return parse


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (YAML config and/or flags)",
                       description="Train a segmentation model. Flags override keys of --config.")
    p.add_argument("--config", help="YAML file with TrainConfig keys")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                   help="root folder of the dataset NAME of the config's datasets list (repeatable)")
    choices = {"layout": LAYOUTS, **CHOICES}
    fields = TrainConfig.__dataclass_fields__
    for name, f in fields.items():
        flag = "--" + name.replace("_", "-")
        default_type = type(f.default) if f.default is not None else str
        shown = f"default: {f.default}" + ("; see docs/learning.md" if name not in choices else "")
        if name in ("datasets", "unlabelled", "pseudo_thresholds", "copy_paste_classes"):
            continue  # lists and mappings: YAML only
        if name in ("crop", "resize"):
            p.add_argument(flag, type=_pair(int), help=f"width x height, e.g. 480x360 ({shown})")
        elif name in ("scale",):
            p.add_argument(flag, type=_pair(float), help=f"min,max random scale ({shown})")
        elif name == "val_drives":
            p.add_argument(flag, type=_drives, help="drives to hold out of the train split for validation: a "
                                                    "number, or names separated by commas")
        elif name in ("max_images", "patience", "max_steps", "threads"):
            p.add_argument(flag, type=int, help=shown)
        elif isinstance(f.default, bool):
            p.add_argument(flag, type=_yes_no, metavar="{yes,no}", help=shown)
        elif name in ("dropout", "time_budget_min", "bn_momentum", "ema_decay", "blur", "noise", "pseudo_class_share"):
            p.add_argument(flag, type=float, help=shown)
        else:
            p.add_argument(flag, type=default_type, choices=choices.get(name), help=shown)


def _drives(text: str):
    """--val-drives 30 (how many, drawn with the seed) or --val-drives 0001TP,0006R0 (which)."""
    return int(text) if text.strip().isdigit() else [d.strip() for d in text.split(",") if d.strip()]


def _yes_no(text: str) -> bool:
    """Boolean flag value; argparse's bool('no') would be True."""
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got '{text}'")


def run_train(args) -> int:
    from ..learning import distributed as ddp
    from ..learning.training import Trainer
    cfg = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    if args.data_root:
        overrides.update(cfg.with_roots(args.data_root))
    cfg = TrainConfig.from_dict({**cfg.__dict__, **overrides}, source="flags")
    try:  # under torchrun: this process's rank; a batch that does not divide fails here, before any waiting
        ranks = ddp.Ranks.from_env()
        ddp.batch_per_process(cfg.batch_size, ranks)
    except ddp.DistributedError as exc:
        raise ConfigError(str(exc)) from None
    with ddp.process_group(ranks) as ranks:
        result = Trainer(cfg, resume=args.resume, progress=not args.no_progress, ranks=ranks).run()
    if ranks.main:
        print(f"best val mIoU {100 * max(result['best_miou'], 0):.2f} at epoch {result['best_epoch']} "
              f"({result['stop_reason']})")
    return 0


def add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score a model on labelled images",
                       description="Score a model on labelled images: mIoU, per-class IoU, pixel accuracy, "
                                   "confusion matrix (JSON + table + PNG plots).")
    add_model_args(p)
    p.add_argument("--layout", default=None, choices=LAYOUTS,
                   help="dataset layout (default: generic when --images is given, else camvid)")
    p.add_argument("--root", help="dataset root (camvid, cityscapes)")
    p.add_argument("--split", default="val")
    p.add_argument("--images", help="image folder (generic layout)")
    p.add_argument("--labels", help="label folder (generic layout)")
    p.add_argument("--classes", help="class table of the labels: camvid, cityscapes, driving or a class YAML "
                                     "(default: the model's)")
    p.add_argument("--mapping", help="class mapping YAML from the labels' classes onto the model's "
                                     "(e.g. config/mappings/camvid_to_driving.yaml)")
    p.add_argument("--drives", type=_drives, help="score only these drives: a number (drawn with --seed, as train's "
                                                  "val_drives draws them) or names separated by commas")
    p.add_argument("--seed", type=int, default=0, help="seed that draws --drives N (default 0)")
    p.add_argument("--crop-aspect", type=_aspect, metavar="W:H",
                   help="score the centre crop of each frame (and its labels) of this aspect ratio, e.g. 16:9: "
                        "how the model does on a camera of another shape (with --input-size)")
    p.add_argument("--output", required=True, help="folder for metrics.json, metrics.md and plots")
    p.add_argument("--no-progress", action="store_true")


def _aspect(text: str) -> float:
    try:
        w, h = (float(v) for v in text.split(":"))
        if w > 0 and h > 0:
            return w / h
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"'{text}' is not an aspect ratio W:H such as 16:9")


def _centre_crops(frames, aspect: float):
    """Each (name, rgb, label) cut to its centre `aspect` (width/height) crop."""
    for name, rgb, label in frames:
        h, w = rgb.shape[:2]
        cw, ch = (w, int(round(w / aspect))) if w / h < aspect else (int(round(h * aspect)), h)
        y, x = (h - ch) // 2, (w - cw) // 2
        yield name, rgb[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


def run_evaluate(args) -> int:
    from ..evaluation.labelled_images import (
        dataset_frames,
        evaluate_frames,
        write_evaluation,
    )
    from ..learning.training_data import DatasetSpec, open_spec
    seg = open_segmenter(args)
    layout = args.layout or ("generic" if args.images else "camvid")
    spec = DatasetSpec(name=layout, layout=layout, root=args.root, split=args.split, images=args.images,
                       labels=args.labels, classes=args.classes or (seg.classes if layout == "generic" else None),
                       mapping=args.mapping, val_drives=args.drives)
    splits = open_spec(spec, seg.classes, seed=args.seed)
    ds = splits.val if args.drives is not None else splits.train
    frames = dataset_frames(ds)
    if args.crop_aspect:
        frames = _centre_crops(frames, args.crop_aspect)
    result = evaluate_frames(seg, frames, classes=ds.classes, total=len(ds), progress=not args.no_progress)
    result["dataset"] = ds.description + (f", centre crops {args.crop_aspect:.3f}:1" if args.crop_aspect else "")
    paths = write_evaluation(result, args.output, ds.classes, title=f"{seg.info.arch} on {ds.description}")
    print(paths["table"].read_text())
    print(f"{result['frames']} frames; results in {args.output}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="segment image files (offline twin of the node)",
                       description="Write one mono8 label PNG per input image (class ids, same stem, "
                                   "same size), and optionally colour overlays.")
    add_model_args(p)
    p.add_argument("--input", required=True, help="an image file or a folder of images")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--overlay", action="store_true", help="also write overlays to OUTPUT/overlay/")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    p.add_argument("--bev", metavar="CALIBRATION",
                   help="also draw camera | overlay | bird's-eye grid per image to OUTPUT/bev/, as the node's "
                        "segmentation/grid would be with this camera calibration (camera_calibration YAML with "
                        "camera_position and camera_rpy, e.g. config/cameras/camvid.yaml), and print the free "
                        "distance ahead: for checking a calibration")
    p.add_argument("--camera-position", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="with --bev: override the calibration's camera_position (m, base_frame)")
    p.add_argument("--camera-rpy", type=float, nargs=3, metavar=("R", "P", "Y"),
                   help="with --bev: override the calibration's camera_rpy (rad; positive pitch looks down)")
    p.add_argument("--max-range", type=float, default=30.0, help="with --bev: the node's max_range (m, default 30)")
    p.add_argument("--corridor-width", type=float, default=2.0,
                   help="with --bev: corridor for the free distance ahead (m, default 2)")
    p.add_argument("--no-progress", action="store_true")


def _bird_eye(rgb, labels, seg, calibration, args, cache: dict):
    """Camera | overlay | bird's-eye grid of one image, and its free distance ahead (the node's maths)."""
    import numpy as np

    from ..geometry import free_space
    from ..geometry.bev import draw_bev
    from ..geometry.ground_projection import (
        GridSpec,
        GroundProjection,
        GroundProjectionError,
    )
    from ..inference.masks import group_lut, overlay
    key = labels.shape
    if key not in cache:
        try:
            cache[key] = GroundProjection(calibration.for_image(labels.shape[1], labels.shape[0]), calibration.pose,
                                          max_range=args.max_range, grid=GridSpec())
        except GroundProjectionError as exc:
            raise DatasetError(f"--bev {calibration.source}: {exc}") from None
    proj = cache[key]
    classes = seg.classes
    drivable = group_lut(classes.ids(classes.drivable))[labels]
    obstacle_lut = group_lut(classes.ids(classes.obstacle))
    grid = free_space.occupancy(proj, free_space.find_boundary(proj, labels, drivable), obstacle_lut, 70)
    spec = proj.grid
    free = free_space.grid_free_distance(grid, width=spec.width, height=spec.height, resolution=spec.resolution,
                                         origin_x=spec.x_range[0], origin_y=spec.y_range[0],
                                         corridor_width=args.corridor_width, corridor_start=0.0,
                                         occupied_threshold=65)
    view = draw_bev(grid, spec, height=rgb.shape[0], free_distance=free, corridor_width=args.corridor_width)
    picture = np.hstack([rgb, overlay(rgb, labels, classes.palette_array(), args.alpha), view])
    return picture, free


def run_predict(args) -> int:

    import cv2
    from tqdm import tqdm

    from ..inference.masks import overlay

    src = Path(args.input)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"folder {src} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    elif src.is_file():
        files = [src]
    else:
        raise DatasetError(f"input {src} does not exist")
    if not 0.0 <= args.alpha <= 1.0:
        raise DatasetError(f"--alpha {args.alpha} is outside 0..1")
    calibration = None
    if args.bev:
        from ..geometry.calibration import CalibrationError, load_calibration
        try:
            calibration = load_calibration(args.bev, position=args.camera_position, rpy=args.camera_rpy)
        except CalibrationError as exc:
            raise DatasetError(str(exc)) from None
    elif args.camera_position or args.camera_rpy:
        raise DatasetError("--camera-position and --camera-rpy go with --bev CALIBRATION")
    seg = open_segmenter(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.overlay:
        (out / "overlay").mkdir(exist_ok=True)
    if calibration is not None:
        (out / "bev").mkdir(exist_ok=True)
    projections: dict = {}
    free_distances = []
    lut = seg.classes.palette_array()
    failed = []
    for path in tqdm(files, desc="predict", file=sys.stderr, disable=args.no_progress or len(files) < 2):
        try:
            rgb = read_rgb(path)
        except DatasetError as exc:
            print(f"seg-perception predict: skipped: {exc}", file=sys.stderr)
            failed.append(path.name)
            continue
        result = seg.segment(rgb)
        cv2.imwrite(str(out / f"{path.stem}.png"), result.labels)
        if args.overlay:
            blended = overlay(rgb, result.labels, lut, args.alpha)
            cv2.imwrite(str(out / "overlay" / f"{path.stem}.png"), cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
        if calibration is not None:
            picture, free = _bird_eye(rgb, result.labels, seg, calibration, args, projections)
            cv2.imwrite(str(out / "bev" / f"{path.stem}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            free_distances.append(free)
            print(f"{path.name}: free distance ahead {free:.1f} m (corridor {args.corridor_width:g} m)")
    done = len(files) - len(failed)
    print(f"wrote {done} label images to {out}" + (f"; {len(failed)} unreadable: {failed[:5]}" if failed else "")
          + (f"; bird's-eye views in {out / 'bev'}" if calibration is not None else ""))
    return 0 if not failed else 1


def add_export(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to ONNX (checked against PyTorch)",
                       description="Export to ONNX with dynamic batch/height/width, the checkpoint metadata "
                                   "stored in the file, and outputs compared with PyTorch.")
    p.add_argument("checkpoint", help="model checkpoint (.pt); with --int8 also an exported fp32 .onnx")
    p.add_argument("--output", help="ONNX file (default: the checkpoint path with .onnx)")
    p.add_argument("--int8", action="store_true",
                   help="also write the int8 model (static QDQ quantization, per-channel weights) next to the fp32 "
                        "one as NAME.int8.onnx, calibrated on --calibration frames")
    p.add_argument("--calibration", nargs="+", metavar="PATH",
                   help="training images (files or folders searched recursively) to calibrate the int8 model on; "
                        "frames of the model's own training drives, never of the drives you evaluate on")
    p.add_argument("--calibration-frames", type=int, default=64,
                   help="use at most this many of them, evenly spaced (default 64)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static", action="store_true", help="fixed input size instead of dynamic axes")
    p.add_argument("--half-weights", metavar="PT",
                   help="also write a copy of the checkpoint with fp16 weights (half the size) to PT")


def run_export(args) -> int:
    from ..inference.checkpoint import load_checkpoint, save_checkpoint
    from ..inference.export import export_onnx
    ckpt = args.checkpoint
    if args.int8 and not args.calibration:
        raise DatasetError("--int8 needs --calibration images (frames of the model's training drives)")
    if str(ckpt).endswith(".onnx"):
        if not args.int8:
            raise CheckpointError(f"{ckpt} is already ONNX; give the .pt checkpoint (or add --int8 to quantize it)")
        return _export_int8(Path(ckpt), args)
    if args.half_weights:
        model, info = load_checkpoint(ckpt)
        save_checkpoint(args.half_weights, model, info, half=True)
        print(f"wrote {args.half_weights} (fp16 weights)")
        ckpt = args.half_weights
    res = export_onnx(ckpt, args.output, opset=args.opset, dynamic=not args.static)
    print(f"wrote {res['output']} ({res['bytes'] / 1e6:.1f} MB); vs PyTorch: max |logit diff| "
          f"{res['max_abs_diff']:.2e}, label agreement {100 * res['label_agreement']:.3f}% "
          f"at sizes {res['checked_sizes']}")
    return _export_int8(Path(res["output"]), args) if args.int8 else 0


def _export_int8(fp32: Path, args) -> int:
    """Quantize `fp32` on the calibration frames and say how far its labels move on them."""
    from ..inference.quantize import quantize_int8
    from ..inference.segmenter import Segmenter
    files = []
    for item in args.calibration:
        path = Path(item)
        files += sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() \
            else [path]
    if not files:
        raise DatasetError(f"no images (.png, .jpg) in {args.calibration}")
    if len(files) > args.calibration_frames:
        step = len(files) / args.calibration_frames
        files = [files[int(i * step)] for i in range(args.calibration_frames)]
    res = quantize_int8(fp32, (read_rgb(f) for f in files),
                        source=f"{len(files)} images from {', '.join(Path(c).name for c in args.calibration)}")
    a = Segmenter(fp32, precision="fp32")
    b = Segmenter(res["output"], precision="int8")
    agree = total = 0
    for f in files[:16]:
        rgb = read_rgb(f)
        agree += int((a.segment(rgb).labels == b.segment(rgb).labels).sum())
        total += rgb.shape[0] * rgb.shape[1]
    print(f"wrote {res['output']} ({res['bytes'] / 1e6:.1f} MB, int8, calibrated on {res['calibration_frames']} "
          f"frames); label agreement with fp32 on {min(16, len(files))} of them: {100 * agree / total:.2f}%")
    return 0


COMMANDS = {
    "train": (add_train, run_train),
    "evaluate": (add_evaluate, run_evaluate),
    "predict": (add_predict, run_predict),
    "export": (add_export, run_export),
}
from .bags import BAG_COMMANDS; COMMANDS.update(BAG_COMMANDS)  # noqa: E402,E702,I001  make-bag, replay, evaluate-bag, harvest
from .demo import DEMO_COMMANDS; COMMANDS.update(DEMO_COMMANDS)  # noqa: E402,E702,I001  demo
from .bench import BENCH_COMMANDS; COMMANDS.update(BENCH_COMMANDS)  # noqa: E402,E702,I001  bench
from .adapt import ADAPT_COMMANDS; COMMANDS.update(ADAPT_COMMANDS)  # noqa: E402,E702,I001  adapt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-perception", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args = []
    if "--ros-args" in argv:  # ROS arguments (for the commands that make a node) are not ours to parse
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    args.ros_args = ros_args
    try:
        return COMMANDS[args.command][1](args)
    except EXPECTED_ERRORS as exc:
        print(f"seg-perception {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seg-perception {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
