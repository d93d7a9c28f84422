# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""What each CPU speed-up of the node's hot path is worth, measured in one run.

On a 1280x720 frame (640x360 network input, the shipped `driving` model):

- the int8 model with its hard sigmoids requantized against ONNX Runtime's plain QDQ form (both
  quantized here on the bundled frames), one thread, labels only;
- labels only (the fused graph skips the confidence) against labels and confidence;
- two overlapping workers, each on a one-thread session, against one worker on every thread.

Prints a Markdown table. Not a test: figures depend on the machine; compare within one run.

    .venv/bin/python benchmarks/cpu_hot_path.py --threads 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg_perception.benchmark.measure import sample_frames, summary, time_each  # noqa: E402
from seg_perception.inference.quantize import quantize_int8  # noqa: E402
from seg_perception.inference.segmenter import Segmenter, shipped_model_path  # noqa: E402


def per_frame_ms(seg: Segmenter, rgb: np.ndarray, *, confidence: bool, runs: int) -> float:
    return summary(time_each(lambda f: seg.segment_batch([f], confidence=confidence), [rgb], runs))["p50"]


def frames_per_second(seg: Segmenter, rgb: np.ndarray, *, callers: int, seconds: float) -> float:
    """Labels-only frames per second with `callers` threads segmenting at once."""
    seg.segment_batch([rgb], confidence=False)
    done = [0] * callers
    stop = time.perf_counter() + seconds

    def call(i: int) -> None:
        while time.perf_counter() < stop:
            seg.segment_batch([rgb], confidence=False)
            done[i] += 1

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the node's session (default 2)")
    p.add_argument("--runs", type=int, default=40, help="timed frames per row (median)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per frames-per-second row")
    args = p.parse_args()
    frames = sample_frames((480, 360))  # the bundled CamVid frames, at their own size
    rgb = sample_frames((1280, 720), limit=1)[0]
    fp32 = shipped_model_path("driving").with_suffix(".onnx")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, requantize in (("plain QDQ", False), ("hard sigmoids requantized", True)):
            out = Path(tmp) / f"{'r' if requantize else 'p'}.int8.onnx"
            quantize_int8(fp32, frames, out, source="bundled frames", requantize_hard_sigmoids=requantize)
            models[name] = Segmenter(out, precision="int8", threads=1)
        for name, seg in models.items():
            rows.append((f"int8, {name}, 1 thread, labels only", "ms/frame",
                         per_frame_ms(seg, rgb, confidence=False, runs=args.runs)))
    node = Segmenter("driving", threads=args.threads, workers=2)
    for confidence in (True, False):
        rows.append((f"{node.provider}, {args.threads} threads, "
                     + ("labels and confidence" if confidence else "labels only (confidence skipped)"), "ms/frame",
                     per_frame_ms(node, rgb, confidence=confidence, runs=args.runs)))
    one = Segmenter("driving", threads=args.threads, workers=1)
    rows.append((f"one worker, {args.threads} threads", "frames/s",
                 frames_per_second(one, rgb, callers=1, seconds=args.seconds)))
    rows.append((f"two workers at once, {max(1, args.threads // 2)} thread(s) each", "frames/s",
                 frames_per_second(node, rgb, callers=2, seconds=args.seconds)))
    print("1280x720 frame, 640x360 network input, shipped driving model\n")
    print("| path | unit | median |\n|---|---|---|")
    for name, unit, value in rows:
        print(f"| {name} | {unit} | {value:.1f} |")


if __name__ == "__main__":
    main()
