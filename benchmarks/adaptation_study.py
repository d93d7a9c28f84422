# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
r"""How much `seg-perception adapt` gains on a camera domain the model never saw, scored with labels it never sees.

Two domains, both from IDD-Lite's Indian streets:
- `damaged`: a camera with damaged colours (a fixed colour cross-talk matrix, a cast, crushed blacks
  and sensor noise, applied alike to every frame), for the `driving` model;
- `idd`: the streets as they are, for a model trained without them (`--model camvid`, scored in the
  7 driving classes through `--mapping config/mappings/camvid_to_driving.yaml`).
The model adapts on the frames of the unlabelled IDD drives (`idd_lite_unlabelled`, 99 drives no
labelled frame shares), and is scored on the frames of the 30 labelled drives held out of the driving
model's training (drawn with seed 1, as the model card's held-out figures): different drives for
adapting and scoring. Every round's candidate is scored too, so the label-free criteria can be held
against the real gain.

    python benchmarks/adaptation_study.py --idd PATH/TO/idd_lite --unlabelled PATH/TO/idd_lite_unlabelled \
        --domain damaged --minutes 20 --out runs/adaptation_study
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from seg_perception.class_mapping import load_mapping
from seg_perception.evaluation.metrics import confusion_matrix, scores
from seg_perception.inference.checkpoint import load_checkpoint
from seg_perception.inference.input_size import network_size
from seg_perception.inference.segmenter import resolve_model
from seg_perception.learning.adaptation import AdaptOptions, adapt, predict
from seg_perception.learning.datasets import idd_lite, split_by_drive

#: the damaged camera: channel cross-talk and cast (rows: output R, G, B from input R, G, B)
COLOUR_MATRIX = np.array([[0.75, 0.35, 0.0], [0.05, 0.80, 0.25], [0.20, 0.15, 0.55]], np.float32)


def damaged(rgb: np.ndarray, seed: int) -> np.ndarray:
    """The frame as the damaged camera would record it."""
    x = rgb.astype(np.float32) / 255.0
    x = np.clip(x @ COLOUR_MATRIX.T, 0, 1) ** 1.35          # cross-talk, cast, crushed blacks
    x = x + np.random.default_rng(seed).normal(0, 0.02, x.shape)  # sensor noise
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_domain(idd: Path, unlabelled: Path, out: Path, domain: str) -> tuple[Path, list, list]:
    """The unlabelled frames on disk (what a user would hand to adapt) and the scoring frames with labels."""
    _, held = split_by_drive(idd_lite(idd), 30, seed=1)
    if domain == "idd":
        return unlabelled / "images", *map(list, zip(*(held.read(i) for i in range(len(held)))))
    target = out / "target_frames"
    files = sorted((unlabelled / "images").rglob("*.jpg"))
    if not target.is_dir():
        for i, f in enumerate(files):
            dst = target / f.parent.name / (f.stem + ".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            cv2.imwrite(str(dst), cv2.cvtColor(damaged(rgb, i), cv2.COLOR_RGB2BGR))
    images, labels = [], []
    for i in range(len(held)):
        rgb, lab = held.read(i)
        images.append(damaged(rgb, 100000 + i))
        labels.append(lab)
    return target, images, labels


def score(model, info, images, labels, mapping=None) -> dict:
    """Pooled IoU of a torch model on frames at the node's network input, labels back at the frame's size.

    mapping: predictions mapped into the labels' classes (a model of another class table).
    """
    classes = mapping.target if mapping else info.classes
    n = classes.num_classes
    cm = np.zeros((n, n), np.int64)
    for rgb, lab in zip(images, labels):
        w, h = network_size((rgb.shape[1], rgb.shape[0]), info.input_size)
        net = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
        pred = cv2.resize(predict(model, net, info)[1], (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        if mapping:
            pred = mapping.apply(pred)
        cm += confusion_matrix(lab, pred, n, classes.ignore_index)
    s = scores(cm, classes.names)
    return {"miou": s["miou"], **{k: s["per_class_iou"][k] for k in ("drivable", "living things", "vehicles")}}


def row(name: str, s: dict, extra: str = "") -> str:
    return (f"| {name} | {100 * s['miou']:.1f} | {100 * s['drivable']:.1f} | {100 * s['living things']:.1f} | "
            f"{100 * s['vehicles']:.1f} | {extra} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idd", required=True, help="IDD-Lite root (labelled drives)")
    ap.add_argument("--unlabelled", required=True, help="idd_lite_unlabelled root")
    ap.add_argument("--model", default="driving")
    ap.add_argument("--domain", choices=("damaged", "idd"), default="damaged")
    ap.add_argument("--mapping", help="class mapping from the model's classes into the driving table")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/adaptation_study")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    target, images, labels = make_domain(Path(args.idd), Path(args.unlabelled), out, args.domain)
    model, info = load_checkpoint(resolve_model(args.model))
    mapping = load_mapping(args.mapping) if args.mapping else None
    base = score(model, info, images, labels, mapping)
    lines = ["| model | mIoU | drivable | living things | vehicles | label-free figures on the check frames |",
             "|---|---|---|---|---|---|", row(f"`{args.model}` as shipped", base)]
    print(lines[-1], flush=True)

    def on_round(k, candidate, fig, kept):
        s = score(candidate, info, images, labels, mapping)
        lines.append(row(f"round {k}" + (" (batch-norm re-estimate)" if k == 0 else ""), s,
                         f"consistency {100 * fig['consistency']:.1f} %, sure agreement "
                         f"{100 * fig['sure_agreement']:.1f} %, {'kept' if kept else 'not kept'}"))
        print(lines[-1], flush=True)

    adapted_dir = out / f"adapted_{args.domain}_{time.strftime('%Y%m%d_%H%M%S')}"
    res = adapt([target], args.model, adapted_dir, options=AdaptOptions(minutes=args.minutes, threads=args.threads),
                log=lambda t: print(t, file=sys.stderr, flush=True), on_round=on_round, progress=False)
    final, finfo = load_checkpoint(adapted_dir / "model.pt")
    s = score(final, finfo, images, labels, mapping)
    lines.append(row(f"**adapted** ({res.rounds} rounds, {res.steps} steps, {res.seconds:.0f} s)", s))
    print("\n".join(lines))
    (out / "study.json").write_text(json.dumps({"lines": lines, "adapt": res.to_dict()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
