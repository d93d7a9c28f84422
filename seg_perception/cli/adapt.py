# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception adapt`: label-free adaptation of a model to a user's own recordings (learning/adaptation.py)."""
from __future__ import annotations

import sys


def add_adapt(sub) -> None:
    p = sub.add_parser(
        "adapt", help="adapt a model to your own recordings without labels (self-training within a time budget)",
        description="Adapt a model to the frames of folders of images and/or rosbag2 bags without labels: rounds "
                    "of self-training on confident pseudo-labels, each kept only when label-free criteria on "
                    "frames held out of the adaptation improve. Writes DIR/model.pt with model.onnx and "
                    "model.int8.onnx beside it (the node's model parameter and --model accept DIR/model.pt) and "
                    "DIR/adapt.json with the figures before and after. See docs/learning.md.")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="folders of images (searched recursively; a sub-folder is one drive) and/or rosbag2 bags "
                        "(mcap or sqlite3) with an Image or CompressedImage topic, all from one camera")
    p.add_argument("--topic", help="the bags' camera topic (default: each bag's only camera topic)")
    p.add_argument("--model", default="driving",
                   help="the model to adapt: a shipped model's name (driving, camvid) or a .pt checkpoint "
                        "(default: driving)")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for model.pt, model.onnx, model.int8.onnx and adapt.json; must not hold a model")
    p.add_argument("--minutes", type=float, default=20.0,
                   help="wall-clock budget of the whole run, writing included (default: 20); it stops at the "
                        "budget with the best model so far")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--no-int8", action="store_true", help="do not write model.int8.onnx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_adapt(args) -> int:
    from ..learning.adaptation import AdaptOptions, adapt
    options = AdaptOptions(minutes=args.minutes, threads=args.threads, seed=args.seed, int8=not args.no_int8)
    res = adapt(args.input, args.model, args.output, topic=args.topic, options=options,
                progress=not args.no_progress, log=lambda text: print(text, file=sys.stderr))
    names = list(res.before["class_share"])
    print(f"adapted {args.model} on {res.adapt_frames} frames, judged on {res.check_frames} held-out frames: "
          f"{res.rounds} rounds, {res.steps} steps, {len(res.kept_rounds)} kept, {res.seconds:.0f} s")
    print(f"check frames: consistency {100 * res.check_before['consistency']:.1f} % -> "
          f"{100 * res.check_after['consistency']:.1f} %, mean confidence "
          f"{100 * res.check_before['mean_confidence']:.1f} % -> {100 * res.check_after['mean_confidence']:.1f} %")
    print(f"every frame seen ({res.frames}): mean confidence {100 * res.before['mean_confidence']:.1f} % -> "
          f"{100 * res.after['mean_confidence']:.1f} %; share of pixels per class, before -> after:")
    for name in names:
        print(f"  {name:<20} {100 * res.before['class_share'][name]:5.1f} % -> "
              f"{100 * res.after['class_share'][name]:5.1f} %")
    for name, path in res.outputs.items():
        print(f"wrote {path}")
    print(f"wrote {res.out / 'adapt.json'}")
    return 0


ADAPT_COMMANDS = {"adapt": (add_adapt, run_adapt)}
