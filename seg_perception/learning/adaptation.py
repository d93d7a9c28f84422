# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Label-free adaptation of a model to a user's own recordings (`seg-perception adapt`).

A team that moves to a new city or camera has hours of frames and no labels. Adaptation here is
self-training within a wall-clock budget, in rounds: the best model so far labels the adaptation
frames (flip-averaged, class-balanced thresholds: pseudo_labels.py), the student learns those labels
on strongly augmented crops (scale, crop, colour, blur, noise) with its batch-norm statistics kept
as trained, and a round's result replaces the best model only when the unlabelled criteria on frames
held out of the adaptation say it got better. Re-estimating
the batch-norm statistics on the new frames outright is one more candidate judged the same way: for
a small network trained from scratch those statistics are fragile, and a re-estimate that the
criteria call worse is never kept.

The criteria need no labels (`check_figures`): how consistently the model labels a frame under
mirroring, rescaling and colour changes (the selection score), and how often it keeps the labels the
original model was sure of (a guard: an adaptation that drifts from them is refused). What the
adaptation cannot promise, and docs/learning.md measures, is that a gain in these figures is a gain in
accuracy on every domain.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..inference.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from ..inference.input_size import network_size
from ..inference.segmenter import INT8_SUFFIX, SHIPPED_MODELS, resolve_model, shipped_model_path, sibling_model
from .datasets import DatasetError
from .losses import SegmentationLoss, class_weights_from_counts
from .pseudo_labels import ThresholdPolicy, pseudo_label, top_class
from .training import AugmentedPairs
from .transforms import normalise, train_transform
from .unlabelled import UnlabelledFrames, read_unlabelled


class AdaptError(DatasetError):
    """Adapt options, inputs or an output folder that cannot be used."""


#: a pixel the original model labels with at least this confidence counts for the agreement guard
SURE = 0.9
#: an adapted model must keep at least this share of the original model's sure labels on the check frames
MIN_SURE_AGREEMENT = 0.99
#: an adapted model may not lose more than this share of any class's pixels on the check frames ...
MAX_CLASS_LOSS = 0.3
#: ... of the classes that hold at least this share of them (self-training tends to erase rare classes)
CLASS_SHARE_FLOOR = 0.002
#: the share of frames (whole drives where there are several) kept out of training to judge the rounds
CHECK_SHARE = 0.2
#: the budget kept for writing model.pt, its ONNX export and the int8 model: this share of it, within these bounds
WRITE_RESERVE = (0.3, 25.0, 90.0)
#: the int8 model is calibrated on at most this many of the frames, spread over them
CALIBRATION_FRAMES = 32


@dataclass
class AdaptOptions:
    """How long and how hard to adapt; the defaults are the ones docs/learning.md measured."""

    minutes: float = 20.0
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    round_steps: int = 60               # training steps between two pseudo-labellings and checks
    crop: tuple[int, int] | None = None  # default: the model's input size
    scale: tuple[float, float] = (0.75, 1.5)
    jitter: float = 0.4
    blur: float = 0.3
    noise: float = 0.03
    policy: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    try_bn_reestimate: bool = True
    bn_momentum: float | None = None    # batch-norm statistics follow the new frames this fast in training; None: kept
    class_weights: str = "none"         # none | enet: weights from the pseudo-labels' class counts
    threads: int | None = None
    seed: int = 0
    int8: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.minutes, (int, float)) and math.isfinite(self.minutes) and self.minutes > 0):
            raise AdaptError(f"--minutes must be a positive number of minutes, got {self.minutes}")
        if self.batch_size < 1 or self.round_steps < 1:
            raise AdaptError("batch size and round steps must be at least 1")


# -- inputs and outputs -------------------------------------------------------

def check_output(out: Path) -> None:
    """Refuse a folder that holds a shipped model or an earlier model.pt: adapt never writes over a model."""
    out = out.expanduser()
    shipped = {shipped_model_path(n).resolve() for n in SHIPPED_MODELS}
    shipped_dir = next(iter(shipped)).parent
    if out.exists() and not out.is_dir():
        raise AdaptError(f"output {out} is a file; give a folder")
    if out.resolve() == shipped_dir or shipped_dir in out.resolve().parents:
        raise AdaptError(f"output {out} is the shipped models' folder; adapt never writes over a shipped model: "
                         "choose another folder")
    if out.is_dir():
        names = {p.name for p in shipped}
        held = sorted(p.name for p in out.iterdir() if p.name in names or p.resolve() in shipped)
        if held:
            raise AdaptError(f"output {out} holds shipped model files ({', '.join(held)}); adapt never writes over "
                             "a shipped model: choose another folder")
        if (out / "model.pt").exists():
            raise AdaptError(f"output {out} already holds model.pt; remove it or choose another folder "
                             "(adapt does not write over a model)")


def open_source_model(name_or_path) -> tuple[torch.nn.Module, ModelInfo, Path]:
    path = resolve_model(name_or_path)
    if path.suffix.lower() == ".onnx":
        raise AdaptError(f"adapt trains the model: give its .pt checkpoint, not {path.name} (an ONNX export)")
    model, info = load_checkpoint(path)
    return model, info, path


def frames_of_one_size(frames: UnlabelledFrames) -> tuple[int, int]:
    """The frames' (width, height); frames of several sizes come from several cameras: adapt one at a time."""
    sizes = frames.sizes()
    if len(sizes) > 1:
        examples = []
        for size in sizes:
            i = next(k for k, img in enumerate(frames.images) if (img.shape[1], img.shape[0]) == size)
            examples.append(f"{size[0]}x{size[1]} ({sizes[size]} frames, e.g. {frames.names[i]})")
        raise AdaptError("the frames have several sizes: " + "; ".join(examples) + ". Several sizes mean several "
                         "cameras: adapt to one camera at a time (one --input set per run)")
    return next(iter(sizes))


def split_check(frames: UnlabelledFrames, share: float = CHECK_SHARE, seed: int = 0) -> tuple[list[int], list[int]]:
    """(adaptation, check) frame indices: whole drives held out where there are several, else the last frames.

    Neighbouring frames of one drive look alike; judging on them would flatter the adaptation.
    """
    n = len(frames)
    drives = sorted(set(frames.drives))
    if len(drives) >= 3:
        rng = np.random.default_rng(seed)
        held = set(rng.choice(drives, max(1, round(share * len(drives))), replace=False).tolist())
        check = [i for i, d in enumerate(frames.drives) if d in held]
    else:
        check = list(range(n - max(1, round(share * n)), n))
    chosen = set(check)
    adapt = [i for i in range(n) if i not in chosen]
    if not adapt or not check:
        raise AdaptError(f"{n} frames are too few to adapt and judge the adaptation; give at least 5")
    return adapt, check


# -- the unlabelled criteria ----------------------------------------------------

def _views(img: np.ndarray) -> list[tuple[np.ndarray, callable]]:
    """Fixed perturbed views of a frame and how to bring each view's labels back to the frame's pixels."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (w * 3 // 4 // 8 * 8, h * 3 // 4 // 8 * 8), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] *= 0.6
    hsv[..., 2] = np.clip(hsv[..., 2] * 0.8 + 10, 0, 255)
    dull = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return [(img[:, ::-1].copy(), lambda lab: lab[:, ::-1]),
            (small, lambda lab: cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)),
            (dull, lambda lab: lab)]


def predict(model, img: np.ndarray, info: ModelInfo, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """(top-class confidence, labels) of one frame, normalised as the model was trained."""
    return top_class(model, img, info.mean, info.std, device=device)


@torch.no_grad()
def check_figures(model, images: list[np.ndarray], info: ModelInfo, *, sure_labels=None, views: bool = True,
                  device="cpu") -> dict:
    """Label-free figures of a model on frames: mean confidence, class shares, view consistency, sure agreement.

    consistency: the share of pixels whose label stays the same when the frame is mirrored, shrunk to
    3/4 or dulled (less saturation and contrast), averaged over the three. sure_agreement: the share of
    the original model's sure pixels (confidence >= SURE) that keep their label.
    """
    model.eval()
    n = info.classes.num_classes
    counts = np.zeros(n, np.int64)
    conf_sum = agree = total = sure_same = sure_total = 0.0
    labels = []
    for k, img in enumerate(images):
        conf, lab = predict(model, img, info, device)
        labels.append((conf, lab))
        counts += np.bincount(lab.ravel(), minlength=n)
        conf_sum += float(conf.sum())
        for view, back in _views(img) if views else []:
            agree += float((back(predict(model, view, info, device)[1]) == lab).mean())
            total += 1
        if sure_labels is not None:
            sure_conf, sure_lab = sure_labels[k]
            sure = sure_conf >= SURE
            sure_same += float((lab[sure] == sure_lab[sure]).sum())
            sure_total += float(sure.sum())
    pixels = max(1, counts.sum())
    return {"mean_confidence": conf_sum / pixels, "consistency": agree / total if total else None,
            "sure_agreement": sure_same / sure_total if sure_total else 1.0,
            "class_share": {name: float(c / pixels) for name, c in zip(info.classes.names, counts)},
            "labels": labels}


def _public(figures: dict) -> dict:
    return {k: v for k, v in figures.items() if k != "labels"}


def lost_classes(candidate: dict, original: dict) -> list[str]:
    """The classes of which the candidate labels far fewer pixels than the original model did."""
    return [name for name, share in original["class_share"].items()
            if share >= CLASS_SHARE_FLOOR and candidate["class_share"][name] < (1 - MAX_CLASS_LOSS) * share]


def _losses(candidate: dict, original: dict) -> str:
    lost = lost_classes(candidate, original)
    return f", loses {', '.join(lost)}" if lost else ""


def better(candidate: dict, best: dict, original: dict) -> bool:
    """A candidate replaces the best model when it is more consistent, keeps the original model's sure labels
    and loses no class.
    """
    return (candidate["consistency"] > best["consistency"] and candidate["sure_agreement"] >= MIN_SURE_AGREEMENT
            and not lost_classes(candidate, original))


# -- the adaptation -----------------------------------------------------------

def _batch_norms(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_bn(model, images: list[np.ndarray], info: ModelInfo, device="cpu", batch: int = 8) -> None:
    """Batch-norm running statistics replaced by their average over the frames (precise BN)."""
    bns = _batch_norms(model)
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[start:start + batch])).permute(0, 3, 1, 2).to(device)
        model(normalise(x, info.mean, info.std))
    model.eval()


@dataclass
class AdaptResult:
    out: Path
    frames: int
    drives: int
    adapt_frames: int
    check_frames: int
    rounds: int
    steps: int
    kept_rounds: list
    seconds: float
    before: dict          # figures of the original model on every frame seen (mean confidence, class shares)
    after: dict
    check_before: dict    # the criteria on the check frames
    check_after: dict
    bn_reestimate: str
    outputs: dict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def adapt(inputs, model_name, out, *, topic: str | None = None, options: AdaptOptions = AdaptOptions(),
          progress: bool = True, log=print, on_round=None) -> AdaptResult:
    """Adapt `model_name` to the frames of `inputs` and write OUT/model.pt with its ONNX siblings.

    on_round(round, model, figures, kept), when given, sees every candidate (round 0: the batch-norm
    re-estimate): for studies that score candidates against labels the adaptation never sees.
    """
    from tqdm import tqdm
    t_start = time.monotonic()
    budget_s = 60.0 * options.minutes
    out = Path(out).expanduser()
    check_output(out)
    source, info, source_path = open_source_model(model_name)
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    frames = read_unlabelled(inputs, topic=topic, progress=progress)
    size = frames_of_one_size(frames)
    # the frames as the node's network sees them: the model's height at the camera's aspect ratio
    net_w, net_h = network_size(size, info.input_size)
    images = [cv2.resize(img, (net_w, net_h), interpolation=cv2.INTER_AREA if net_w < size[0] else cv2.INTER_LINEAR)
              for img in frames.images]
    adapt_idx, check_idx = split_check(frames, seed=options.seed)
    train_images = [images[i] for i in adapt_idx]
    check_images = [images[i] for i in check_idx]
    log(f"adapt: {len(frames)} frames ({size[0]}x{size[1]}, {len(set(frames.drives))} drives"
        + (f", {sum(frames.skipped.values())} unreadable skipped" if frames.skipped else "")
        + f"), {len(adapt_idx)} to adapt on and {len(check_idx)} held out to judge it; network input "
          f"{net_w}x{net_h}; budget {options.minutes:g} min")

    source.eval()
    predict(source, images[0], info)  # the first call sets up kernels: not a forward's time
    t0 = time.monotonic()
    before_all = check_figures(source, images, info, views=False)
    forward_s = (time.monotonic() - t0) / len(images)  # one frame through the network: the unit of the estimates
    check_before = check_figures(source, check_images, info)
    sure = check_before["labels"]
    best, best_fig, kept = source, check_before, []
    log(f"original model on the check frames: consistency {100 * check_before['consistency']:.1f} %, "
        f"mean confidence {100 * check_before['mean_confidence']:.1f} %")

    # The rounds end early enough for the figures after (as long as those before) and the writing.
    share, low, high = WRITE_RESERVE
    deadline = t_start + budget_s - min(max(low, share * budget_s), high) - forward_s * len(images)
    timing = {"label": 2 * forward_s * len(train_images), "check": 4 * forward_s * len(check_images),
              "step": 3 * forward_s * options.batch_size}

    def timed(key, fn, *args, **kwargs):
        t = time.monotonic()
        out = fn(*args, **kwargs)
        timing[key] = time.monotonic() - t
        return out

    bn_note = "not tried"
    if options.try_bn_reestimate and time.monotonic() + timing["label"] + timing["check"] < deadline:
        candidate = copy.deepcopy(source)
        reestimate_bn(candidate, train_images, info)
        fig = timed("check", check_figures, candidate, check_images, info, sure_labels=sure)
        verdict = better(fig, best_fig, check_before)
        bn_note = (f"{'kept' if verdict else 'refused'}: consistency {100 * fig['consistency']:.1f} % "
                   f"(was {100 * best_fig['consistency']:.1f}), sure agreement {100 * fig['sure_agreement']:.1f} %"
                   + _losses(fig, check_before))
        log(f"batch-norm statistics re-estimated on the new frames: {bn_note}")
        if on_round:
            on_round(0, candidate, _public(fig), verdict)
        if verdict:
            best, best_fig = candidate, fig
            kept.append({"round": 0, "what": "batch-norm statistics re-estimated", **_public_short(fig)})

    crop = options.crop or tuple(info.input_size)
    transform = train_transform(crop=crop, scale=options.scale, jitter=options.jitter, blur=options.blur,
                                noise=options.noise, ignore_index=info.classes.ignore_index)
    # Each round starts from the best model (what the criteria kept), which also labels the frames.
    student = copy.deepcopy(best)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=options.lr,
                                  weight_decay=options.weight_decay)
    rounds = steps = 0
    bar = tqdm(total=round(budget_s), desc="adapt (seconds of the budget)", unit="s", file=sys.stderr,
               disable=not progress, leave=False)

    def time_left_for(n_steps: int) -> bool:
        return time.monotonic() + n_steps * timing["step"] + timing["check"] < deadline

    while time.monotonic() + timing["label"] + timing["step"] + timing["check"] < deadline:
        labelled = timed("label", pseudo_label, best, train_images, info.classes, info.mean, info.std,
                         policy=options.policy, progress=False)
        student.load_state_dict(best.state_dict())
        pairs = AugmentedPairs(train_images, labelled.labels, transform, info.mean, info.std)
        loader = torch.utils.data.DataLoader(pairs, batch_size=options.batch_size, shuffle=True, drop_last=False)
        weights = None
        if options.class_weights != "none":  # against the frequent classes of the pseudo-labels
            counts = np.bincount(np.concatenate([lab.ravel() for lab in labelled.labels]), minlength=256)
            weights = class_weights_from_counts(counts[:info.classes.num_classes], method=options.class_weights)
        criterion = SegmentationLoss("ce", ignore_index=info.classes.ignore_index, class_weights=weights)
        done = 0
        while done < options.round_steps and time_left_for(1):
            for img, mask in loader:
                if done >= options.round_steps or not time_left_for(1):
                    break
                t0 = time.monotonic()
                student.train()
                for m in _batch_norms(student):
                    if options.bn_momentum is None:
                        m.eval()  # the statistics stay as trained
                    else:
                        m.momentum = options.bn_momentum  # they drift slowly towards the new frames
                loss = criterion(student(normalise(img, info.mean, info.std)), mask.long())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss = float(loss.detach())
                done += 1
                steps += 1
                timing["step"] = 0.8 * timing["step"] + 0.2 * (time.monotonic() - t0) if steps > 1 \
                    else time.monotonic() - t0
                bar.n = min(round(time.monotonic() - t_start), bar.total)
                bar.set_postfix(round=rounds + 1, loss=f"{loss:.3f}",
                                consistency=f"{100 * best_fig['consistency']:.1f}%")
        if done == 0:
            break
        rounds += 1
        fig = timed("check", check_figures, student, check_images, info, sure_labels=sure)
        verdict = better(fig, best_fig, check_before)
        log(f"round {rounds}: {done} steps, pseudo-labels {100 * labelled.kept_pixels:.0f} % of pixels; check "
            f"frames: consistency {100 * fig['consistency']:.1f} % (best {100 * best_fig['consistency']:.1f}), "
            f"sure agreement {100 * fig['sure_agreement']:.1f} %{_losses(fig, check_before)}, mean confidence "
            f"{100 * fig['mean_confidence']:.1f} %: {'kept' if verdict else 'not kept'}")
        if on_round:
            on_round(rounds, student, _public(fig), verdict)
        if verdict:
            best, best_fig = copy.deepcopy(student), fig
            kept.append({"round": rounds, "steps": steps, **_public_short(fig)})
    bar.close()

    after_all = check_figures(best, images, info, views=False)
    record = {"adapted_from": {"model": source_path.name, "training": info.training},
              "adaptation": {"inputs": [str(p) for p in inputs], "topic": topic, "frames": len(frames),
                             "rounds": rounds, "steps": steps, "kept_rounds": kept, "bn_reestimate": bn_note,
                             "options": {**asdict(options), "policy": asdict(options.policy)},
                             "check_before": _public(check_before), "check_after": _public(best_fig)}}
    record = json.loads(json.dumps(record, default=float))  # plain Python values: a weights-only load reads them
    outputs = write_model(best, ModelInfo(info.arch, info.arch_kwargs, info.classes, info.mean, info.std,
                                          info.input_size, record), out,
                          _spread(train_images, CALIBRATION_FRAMES) if options.int8 else None)
    result = AdaptResult(out=out, frames=len(frames), drives=len(set(frames.drives)), adapt_frames=len(adapt_idx),
                         check_frames=len(check_idx), rounds=rounds, steps=steps, kept_rounds=kept,
                         seconds=round(time.monotonic() - t_start, 1), before=_public(before_all),
                         after=_public(after_all), check_before=_public(check_before),
                         check_after=_public(best_fig), bn_reestimate=bn_note, outputs=outputs)
    (out / "adapt.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


def _spread(items: list, n: int) -> list:
    """At most n items, evenly spaced."""
    return items if len(items) <= n else [items[int(i * len(items) / n)] for i in range(n)]


def _public_short(fig: dict) -> dict:
    return {k: round(fig[k], 4) for k in ("consistency", "sure_agreement", "mean_confidence")}


def write_model(model, info: ModelInfo, out: Path, calibration: list[np.ndarray] | None) -> dict:
    """OUT/model.pt (fp16 weights), model.onnx and model.int8.onnx, written into a partial folder first."""
    from ..inference.export import export_onnx
    from ..inference.quantize import quantize_int8
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".adapt.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        save_checkpoint(partial / "model.pt", model, info, half=True)
        export_onnx(partial / "model.pt", partial / "model.onnx")
        files = ["model.pt", "model.onnx"]
        if calibration:
            quantize_int8(partial / "model.onnx", iter(calibration), sibling_model(partial / "model.pt", INT8_SUFFIX),
                          source=f"{len(calibration)} frames adapted on")
            files.append("model" + INT8_SUFFIX)
        for name in files:
            (partial / name).replace(out / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {name: str(out / name) for name in files}
