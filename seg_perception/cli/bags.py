# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The bag subcommands of `seg-perception`: make-bag, replay, evaluate-bag, harvest.

Argument parsers and thin run functions over `bags`, `replay`, `bag_evaluation`,
`report` and `harvest`; `cli.py` registers them from BAG_COMMANDS. Heavy imports (rclpy,
torch) happen inside the run functions, so `seg-perception --help` stays fast
and the ROS-free commands work without ROS.
"""
from __future__ import annotations

import sys

from ..evaluation.ray_engine import HARD_STOP_GRACE_S
from ..learning.datasets import LAYOUTS
from ..learning.harvest import RANK_BY
from .common import MODEL_HELP, add_model_args, open_segmenter

DEFAULTS = {"image_topic": "/camera/image_raw", "info_topic": "/camera/camera_info",
            "label_topic": "/camera/ground_truth"}


def _classes_arg(value):
    """A built-in table name (camvid, cityscapes, driving) or a class YAML path."""
    from ..classes import class_table
    return None if value is None else class_table(value)


# -- make-bag -------------------------------------------------------------------

def add_make_bag(sub) -> None:
    p = sub.add_parser(
        "make-bag", help="write labelled image folders into a rosbag2 (mcap or sqlite3)",
        description="Write a labelled image folder into a rosbag2: camera images (raw rgb8 sensor_msgs/Image, or "
                    "JPEG/PNG sensor_msgs/CompressedImage on <topic>/compressed), sensor_msgs/CameraInfo and the "
                    "ground truth as mono8 class-id images, all three with the same header stamps, frames in "
                    "file-name order at --fps.")
    p.add_argument("output", help="bag folder to create (must not exist)")
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="dataset layout (default: generic when --images is given, else camvid)")
    p.add_argument("--root", help="dataset root (camvid, cityscapes)")
    p.add_argument("--split", default="val", help="split folder (camvid, cityscapes; default val)")
    p.add_argument("--images", help="image folder (generic layout)")
    p.add_argument("--labels", help="label folder of class-id images (generic layout)")
    p.add_argument("--classes", help="class table of the labels for the generic layout: camvid, cityscapes, "
                                     "driving or a "
                                     "class YAML")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)")
    p.add_argument("--compression", choices=["none", "jpeg", "png"], default="none",
                   help="camera images: none = raw rgb8 Image; jpeg/png = CompressedImage on <topic>/compressed "
                        "(labels always stay lossless mono8)")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of the stamps (default 10)")
    p.add_argument("--start-time", type=float, default=None,
                   help="stamp of the first frame, seconds since the epoch (default: now)")
    p.add_argument("--frame-id", default="camera", help="header frame_id (default camera)")
    p.add_argument("--image-topic", default=DEFAULTS["image_topic"])
    p.add_argument("--info-topic", default=DEFAULTS["info_topic"])
    p.add_argument("--label-topic", default=DEFAULTS["label_topic"])
    p.add_argument("--max-frames", type=int, default=None, help="write only the first N frames")
    p.add_argument("--no-progress", action="store_true")


def run_make_bag(args) -> int:
    from ..bags import make_bag
    from ..learning.datasets import open_dataset
    layout = args.layout or ("generic" if args.images else "camvid")
    ds = open_dataset(layout, root=args.root, split=args.split, images=args.images, labels=args.labels,
                      classes=_classes_arg(args.classes))
    summary = make_bag(ds, args.output, storage=args.storage, compression=args.compression, fps=args.fps,
                       frame_id=args.frame_id, image_topic=args.image_topic, info_topic=args.info_topic,
                       label_topic=args.label_topic, max_frames=args.max_frames, start_time=args.start_time,
                       jpeg_quality=args.jpeg_quality, progress=not args.no_progress)
    w, h = summary["size"]
    print(f"wrote {summary['frames']} frames ({w}x{h}) to {summary['path']} ({summary['storage']}): "
          f"{summary['image_topic']}, {summary['info_topic']}, {summary['label_topic']}")
    return 0


# -- replay ---------------------------------------------------------------------

def add_replay(sub) -> None:
    p = sub.add_parser(
        "replay", help="publish a bag over DDS with its recorded timing (no ros2 bag needed)",
        description="Publish a bag's topics with the recorded spacing between messages, as recorded (serialised "
                    "CDR, untouched). Ctrl-C stops. The node is bag_replay_<pid>; ROS arguments go after "
                    "--ros-args (e.g. --ros-args -r __node:=front_replay).")
    p.add_argument("bag", help="rosbag2 folder, or a single .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast; default 1)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    p.add_argument("--start-offset", type=float, default=0.0, help="skip the first SECONDS of the bag")
    p.add_argument("--topics", nargs="+", default=None, help="replay only these topics (default: all)")
    p.add_argument("--remap", action="append", default=[], metavar="OLD:=NEW",
                   help="publish topic OLD as NEW (repeatable)")
    p.add_argument("--qos", choices=["reliable", "best_effort"], default="reliable",
                   help="publisher reliability (default reliable)")
    p.add_argument("--depth", type=int, default=10, help="publisher history depth (default 10)")
    p.add_argument("--wait-subscribers", type=float, default=0.0, metavar="SECONDS",
                   help="before playing, wait up to SECONDS for every replayed topic to have a subscriber")
    p.add_argument("--no-progress", action="store_true")


def run_replay(args) -> int:
    from ..ros.replay import parse_remaps, replay_bag
    stats = replay_bag(args.bag, topics=args.topics, remap=parse_remaps(args.remap), rate=args.rate,
                       start_offset=args.start_offset, loop=args.loop, reliability=args.qos, depth=args.depth,
                       wait_subscribers=args.wait_subscribers, progress=not args.no_progress,
                       ros_args=getattr(args, "ros_args", ()))
    counts = ", ".join(f"{t} {n}" for t, n in stats.published.items())
    print(f"published {stats.total()} messages in {stats.wall_s:.1f} s ({counts})")
    return 0


# -- evaluate-bag ---------------------------------------------------------------

def add_evaluate_bag(sub) -> None:
    p = sub.add_parser(
        "evaluate-bag", help="score a model on bags against their ground-truth label topic",
        description="Score a model on bags' images against their ground-truth label topic (pairs matched by "
                    "header stamp). Offline (default): the model runs here, deterministically, with the same code "
                    "as `evaluate`. --live: the bag is replayed over DDS into the segmentation node and its "
                    "segmentation/labels outputs are scored, with latency and dropped frames. Several bags "
                    "(paths, folders searched for bags, text files listing bags) give one pooled report with a row "
                    "per bag, in this process or, with --engine ray, as Ray tasks on a local instance or a cluster. "
                    "Exit status: 0 all bags scored, 1 some failed (their rows say why), 2 nothing scored.")
    p.add_argument("bags", nargs="+", metavar="BAG",
                   help="rosbag2 folder or single .mcap/.db3 file; a folder of bags (searched recursively); or a text "
                        "file naming one bag or folder per line ('#' comments, paths relative to the file)")
    p.add_argument("--image-topic", default=None,
                   help=f"camera topic, Image or CompressedImage (default {DEFAULTS['image_topic']}, or its "
                        "/compressed when only that exists)")
    p.add_argument("--label-topic", default=DEFAULTS["label_topic"], help="ground-truth class-id topic")
    p.add_argument("--report", required=True, help="folder for report.json, report.md and plots")
    add_model_args(p, model_help=MODEL_HELP + " (live: the model the node runs; with --no-start-node, name the "
                                              "running node's model, which sets the class table and the report's "
                                              "model entry)")
    p.add_argument("--mapping", help="YAML: label id in the bag -> model class id/name (for other datasets' ids)")
    p.add_argument("--samples", type=int, default=6,
                   help="frames in samples.png (default 6; with several bags, one frame of each of the worst bags)")
    p.add_argument("--bag-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a bag after this long (checked between frames; a Ray task that does not stop "
                        f"is cancelled {HARD_STOP_GRACE_S:g} s later); its row says so and the others go on")
    live = p.add_argument_group("live mode")
    live.add_argument("--live", action="store_true", help="evaluate the running node over DDS")
    live.add_argument("--no-start-node", action="store_true",
                      help="use a segmentation node that is already running (subscribed to the image topic)")
    live.add_argument("--output-topic", default="/segmentation/labels",
                      help="the node's label output (default /segmentation/labels)")
    live.add_argument("--rate", type=float, default=1.0, help="replay speed factor (default 1 = recorded rate)")
    live.add_argument("--startup-timeout", type=float, default=120.0,
                      help="seconds to wait for the node to come up (default 120)")
    live.add_argument("--drain-timeout", type=float, default=10.0,
                      help="seconds to wait for outputs after the last frame (default 10)")
    live.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                      help="extra parameter for the started node (repeatable)")
    fleet = p.add_argument_group("many bags")
    fleet.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local (default): the bags one after another in this process; ray: one Ray task per "
                            "bag, each worker loading the model once for all the bags it gets")
    fleet.add_argument("--address", default=None,
                       help="with --engine ray: an existing cluster (HOST:6379, ray://HOST:10001 or auto); default: "
                            "a new local Ray instance, shut down at the end")
    fleet.add_argument("--cpus-per-task", type=float, default=1.0,
                       help="with --engine ray: CPUs each bag's task reserves (default 1; also its inference "
                            "threads unless --threads)")
    fleet.add_argument("--gpus-per-task", type=float, default=0.0,
                       help="with --engine ray: GPUs each task reserves (default 0; a fraction such as 0.25 puts "
                            "four workers on one GPU)")
    fleet.add_argument("--retries", type=int, default=0,
                       help="with --engine ray: run a bag again when its worker or machine was lost (default 0)")
    p.add_argument("--no-progress", action="store_true")


def _check_evaluate_bag_args(args) -> None:
    from ..bags import BagError
    if not args.live and (args.no_start_node or args.node_param):
        raise BagError("--no-start-node and --node-param belong to --live")
    if args.engine != "ray":
        given = [f for f, v in (("--address", args.address), ("--cpus-per-task", args.cpus_per_task != 1.0),
                                ("--gpus-per-task", args.gpus_per_task != 0.0), ("--retries", args.retries))
                 if v]
        if given:
            raise BagError(f"{', '.join(given)} belong to --engine ray")
    elif args.live and args.no_start_node:
        raise BagError("--no-start-node cannot go with --engine ray: each Ray task starts its own node")
    if args.bag_timeout is not None and not args.bag_timeout > 0:
        raise BagError(f"--bag-timeout must be positive, got {args.bag_timeout}")
    if args.cpus_per_task <= 0 or args.gpus_per_task < 0 or args.retries < 0:
        raise BagError("--cpus-per-task must be positive, --gpus-per-task and --retries at least 0")


def _eval_job(args, n_bags: int):
    from ..evaluation.fleet import EvalJob
    params = list(args.node_param)
    if args.live:
        for name in ("device", "backend"):
            if getattr(args, name) != "auto":
                params.append(f"{name}:={getattr(args, name)}")
        if args.threads:
            params.append(f"threads:={args.threads}")
        if args.flip_tta:
            params.append("flip_tta:=true")
    threads = args.threads
    if threads is None and args.engine == "ray":
        threads = max(1, int(args.cpus_per_task))  # as many inference threads as the task reserves CPUs
    return EvalJob(label_topic=args.label_topic, image_topic=args.image_topic, mapping=args.mapping,
                   samples=args.samples if n_bags == 1 else min(args.samples, 1), model=args.model,
                   device=args.device, backend=args.backend, precision=args.precision, input_size=args.input_size,
                   threads=threads, flip_tta=args.flip_tta,
                   timeout=args.bag_timeout, live=args.live, start_node=not args.no_start_node,
                   node_params=tuple(params), output_topic=args.output_topic, rate=args.rate,
                   startup_timeout=args.startup_timeout, drain_timeout=args.drain_timeout)


def run_evaluate_bag(args) -> int:
    import time
    from pathlib import Path

    from ..bags import BagError
    from ..evaluation import fleet
    from ..evaluation.report import print_summary, write_report
    from ..inference.segmenter import model_info
    _check_evaluate_bag_args(args)
    paths = fleet.find_bags(args.bags)
    job = _eval_job(args, len(paths))
    classes = model_info(args.model).classes  # also: a bad --model fails here once, not in every bag
    if args.engine == "ray":
        from ..evaluation.ray_engine import ray_session, run_ray
        with ray_session(args.address) as engine:
            print(f"ray: {engine['address']}, {engine['nodes']} node(s), {engine['cpus']:g} CPUs, "
                  f"{engine['gpus']:g} GPUs; {len(paths)} bag(s)", file=sys.stderr)
            t0 = time.perf_counter()  # the run, from the first task on (workers' model loading included)
            runs, interrupted = run_ray(paths, job, cpus_per_task=args.cpus_per_task,
                                        gpus_per_task=args.gpus_per_task, retries=args.retries,
                                        progress=not args.no_progress)
            wall = time.perf_counter() - t0
        engine.update(cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task)
    else:
        if not args.live:
            seg, _ = fleet.segmenter_for(job)
            print(f"model: {seg.describe()}", file=sys.stderr)
        t0 = time.perf_counter()
        runs, interrupted = fleet.run_local(paths, job, progress=not args.no_progress, log_dir=args.report)
        wall = time.perf_counter() - t0
        engine = {"name": "local"}
    failed = [r for r in runs if not r.ok]
    if len(failed) == len(runs):
        if interrupted:
            raise KeyboardInterrupt
        if len(runs) == 1:
            raise failed[0].error or BagError(failed[0].reason)
        raise BagError(f"none of the {len(runs)} bags could be evaluated (each one's reason is above)")
    report, samples = fleet.combine(runs, engine=engine, wall_s=wall, samples=args.samples)
    write_report(report, args.report, classes, samples)
    logs = [r for r in runs if r.node_log]
    if logs:
        folder = Path(args.report) / "node_logs"
        folder.mkdir(exist_ok=True)
        for r in logs:
            (folder / f"{r.index:04d}_{Path(r.path).name}.log").write_text(r.node_log)
    if report.get("frames_skipped"):
        print(f"warning: {report['frames_skipped']} frames skipped; see report.md", file=sys.stderr)
    print_summary(report, args.report)
    if interrupted:
        print(f"interrupted: {len(failed)} of {len(runs)} bags not evaluated; the report holds the others",
              file=sys.stderr)
        return 130
    if failed:
        print(f"{len(failed)} of {len(runs)} bags failed (reasons in report.md; their paths in failed_bags.txt)",
              file=sys.stderr)
        return 1
    return 0


# -- harvest --------------------------------------------------------------------

def add_harvest(sub) -> None:
    p = sub.add_parser(
        "harvest", help="pick the frames of camera bags the model is least sure about, for labelling",
        description="Score every frame of the bags' camera topic by the model's uncertainty (low mean confidence, "
                    "high entropy, disagreement between the frame and its mirror image), pick the most uncertain "
                    "ones spread over time and without near-duplicates, and write them in the generic layout "
                    "(images/, labels/ with the model's predictions as pre-labels, classes.yaml) with harvest.csv "
                    "saying why each was picked.")
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 folders or single .mcap/.db3 files (drives)")
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--topic", help="camera topic, Image or CompressedImage, or a raw topic whose /compressed twin "
                                   "the bag holds (default: the bag's only image topic; a topic and its twin count "
                                   "as one)")
    p.add_argument("--count", type=int, default=50, help="frames to pick (default 50)")
    p.add_argument("--bins", type=int, default=None,
                   help="equal time bins over the drives, each giving its most uncertain frame before the rest are "
                        "filled by rank (default: --count; 1 = rank only)")
    p.add_argument("--min-gap", type=float, default=1.0, metavar="SECONDS",
                   help="picks of one bag at least this far apart (default 1; 0 = off)")
    p.add_argument("--dedup-threshold", type=float, default=3.0,
                   help="skip a frame whose 32x24 grey thumbnail differs from a pick's by less than this mean "
                        "absolute grey level (default 3; 0 = off)")
    p.add_argument("--rank-by", choices=RANK_BY, default="combined",
                   help="combined (default): mean percentile of the three measures; or one measure alone")
    p.add_argument("--stride", type=int, default=1, help="score every Nth frame only (long drives; default 1)")
    add_model_args(p, model_help=MODEL_HELP + " (its class table and predictions go into the output; --flip-tta "
                                              "applies to the pre-labels, the scores use single passes)")
    p.add_argument("--no-progress", action="store_true")


def run_harvest(args) -> int:
    from pathlib import Path

    from ..learning.harvest import HarvestOptions, check_output, harvest, open_sources
    options = HarvestOptions(count=args.count, bins=args.bins, min_gap_s=args.min_gap,
                             dedup_threshold=args.dedup_threshold, rank_by=args.rank_by, stride=args.stride)
    check_output(Path(args.out))
    sources = open_sources(args.bags, args.topic)
    result = harvest(sources, args.out, open_segmenter(args), options, progress=not args.no_progress)
    picked = len(result["picked"])
    print(f"picked {picked} of {result['scored']} frames from {len(sources)} bag(s) into {result['out']}: "
          "images/, labels/ (pre-labels), classes.yaml, harvest.csv")
    for what, counts in (("passed over", result["passed_over"]), ("skipped", result["skipped"])):
        if counts:
            print(f"{what}: " + ", ".join(f"{n} {why}" for why, n in counts.items()))
    if picked < args.count:
        print(f"warning: picked {picked} of the {args.count} frames asked; the others were passed over or the "
              "bags hold fewer frames (see --min-gap, --dedup-threshold)", file=sys.stderr)
    return 0


BAG_COMMANDS = {
    "make-bag": (add_make_bag, run_make_bag),
    "replay": (add_replay, run_replay),
    "evaluate-bag": (add_evaluate_bag, run_evaluate_bag),
    "harvest": (add_harvest, run_harvest),
}
