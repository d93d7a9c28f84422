# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""CPU latency, parameters and FLOPs of segmentation models at 480x360 (batch 1).

Prints a Markdown table. Not a test: figures depend on the machine.

    .venv/bin/python benchmarks/model_latency.py                       # the shipped models
    .venv/bin/python benchmarks/model_latency.py --checkpoints a.pt b.pt --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg_perception.inference.checkpoint import load_checkpoint  # noqa: E402
from seg_perception.inference.export import export_onnx  # noqa: E402
from seg_perception.inference.segmenter import SHIPPED_MODELS, shipped_model_path  # noqa: E402
from seg_perception.learning.models import count_parameters  # noqa: E402


def time_it(fn, *, warmup: int, runs: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def measure(path: Path, *, threads: int, runs: int, width: int, height: int) -> dict:
    import onnxruntime as ort

    torch.set_num_threads(threads)
    model, info = load_checkpoint(path)
    x = torch.randn(1, 3, height, width)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    row = {"model": path.name, "arch": info.arch, "params_m": count_parameters(model) / 1e6,
           "gflops": counter.get_total_flops() / 2e9,  # multiply-adds, as papers report them
           "val_miou": info.training.get("val_miou")}
    with torch.inference_mode():
        row["torch_ms"], row["torch_p95"] = time_it(lambda: model(x), warmup=3, runs=runs)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "m.onnx"
        export_onnx(path, onnx_path, check=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        row["ort_ms"], row["ort_p95"] = time_it(lambda: sess.run(None, {"image": xn}), warmup=5, runs=runs)
        pair = np.concatenate([xn, xn[..., ::-1]])  # flip TTA: the frame and its mirror image as one batch
        row["tta_ms"], row["tta_p95"] = time_it(lambda: sess.run(None, {"image": pair}), warmup=3, runs=runs)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", nargs="*", type=Path, default=[shipped_model_path(n) for n in SHIPPED_MODELS])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--size", default="480x360")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    print(f"batch 1, {w}x{h}, {args.threads} threads, torch {torch.__version__}; median (p95) ms\n")
    print("| model | arch | params (M) | GMACs | val mIoU | PyTorch eager ms | ONNX Runtime ms "
          "| ONNX Runtime, flip TTA ms |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.checkpoints:
        r = measure(path, threads=args.threads, runs=args.runs, width=w, height=h)
        miou = f"{100 * r['val_miou']:.1f}" if r["val_miou"] is not None else "n/a"
        print(f"| {r['model']} | {r['arch']} | {r['params_m']:.2f} | {r['gflops']:.2f} | {miou} | "
              f"{r['torch_ms']:.1f} ({r['torch_p95']:.1f}) | {r['ort_ms']:.1f} ({r['ort_p95']:.1f}) | "
              f"{r['tta_ms']:.1f} ({r['tta_p95']:.1f}) |", flush=True)


if __name__ == "__main__":
    main()
