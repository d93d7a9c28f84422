# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Every inference path the node can take, on the bundled real frames: latency
per frame (Segmenter.segment, pre- and post-processing included) and label
agreement with the CPU ONNX Runtime reference, with and without flip TTA.

Prints a Markdown table. Not a test: figures depend on the machine. CUDA rows
appear only where PyTorch sees a GPU (ONNX Runtime on CUDA only where its CUDA
provider is installed, TensorRT fp16 where its provider is). The agreement
column is the fp16 check of docs/performance.md: at least 99.9 % of the pixels.

    .venv/bin/python benchmarks/inference_backends.py --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg_perception.evaluation.metrics import confusion_matrix, scores  # noqa: E402
from seg_perception.inference.segmenter import Segmenter, shipped_model_path  # noqa: E402
from seg_perception.learning.datasets import read_label, read_rgb  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "camvid_val"


def paths() -> list[dict]:
    import onnxruntime as ort
    import torch

    rows = [dict(device="cpu", backend="onnxruntime", precision="fp32"),
            dict(device="cpu", backend="onnxruntime", precision="int8"), dict(device="cpu", backend="torch")]
    if torch.cuda.is_available():
        rows += [dict(device="cuda", backend="torch"), dict(device="cuda", backend="torch", precision="fp32")]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            rows.append(dict(device="cuda", backend="onnxruntime"))
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            rows.append(dict(device="cuda", backend="tensorrt"))  # fp16: the node's default on a GPU
    return rows


def run(seg: Segmenter, frames, repeats: int, flip: bool) -> tuple[list[np.ndarray], float]:
    labels = [seg.segment(rgb, flip_tta=flip).labels for rgb in frames]  # also the warm-up
    times = [seg.segment(rgb, flip_tta=flip).inference_ms for _ in range(repeats) for rgb in frames]
    return labels, statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=shipped_model_path("camvid"),
                   help="a model of CamVid's 11 classes, as the bundled frames' labels (default: the camvid model)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    images = sorted((SAMPLES / "images").glob("*.png"))
    frames = [read_rgb(f) for f in images]
    truth = [read_label(SAMPLES / "labels" / f.name) for f in images]
    print(f"{len(frames)} bundled CamVid val frames, {args.model.name}; median ms per frame\n")
    print("| device | backend | precision | flip TTA | ms/frame | labels equal to CPU ONNX fp32 | pixel accuracy |")
    print("|---|---|---|---|---|---|---|")
    segmenters = [Segmenter(args.model, threads=args.threads, **kw) for kw in paths()]
    for flip in (False, True):
        reference = None
        for seg in segmenters:
            labels, ms = run(seg, frames, args.repeats, flip)
            reference = reference or labels
            agree = np.mean([np.mean(a == b) for a, b in zip(labels, reference)])
            n = seg.classes.num_classes
            cm = sum(confusion_matrix(gt, lab, n, seg.classes.ignore_index) for lab, gt in zip(labels, truth))
            print(f"| {seg.device} | {seg.backend} | {seg.precision} | {'yes' if flip else 'no'} | "
                  f"{ms:.1f} | {100 * agree:.3f} % | {100 * scores(cm)['pixel_accuracy']:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
