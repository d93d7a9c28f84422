# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Timing, percentiles, the benchmark's frames and the machine they ran on: shared by every part of the bench."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

#: The resolutions issue #12 asks for: the model's own, HD and full HD.
DEFAULT_RESOLUTIONS = ((480, 360), (1280, 720), (1920, 1080))
DEFAULT_CAMERAS = (1, 2, 4)


class BenchError(RuntimeError):
    """Something that stops the benchmark, said in one line."""


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    """'480x360,1280x720' -> [(480, 360), (1280, 720)]."""
    out = []
    for item in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", item)
        if not m or not (16 <= int(m.group(1)) <= 8192 and 16 <= int(m.group(2)) <= 8192):
            raise BenchError(f"resolution '{item}' is not WIDTHxHEIGHT (16..8192 each), e.g. 1280x720")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def parse_counts(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (camera counts, 1..16)."""
    try:
        out = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise BenchError(f"camera counts '{text}' are not integers like 1,2,4") from None
    if not out or any(not 1 <= v <= 16 for v in out):
        raise BenchError(f"camera counts '{text}': each must be 1..16")
    return out


def summary(samples_ms, per_sample: int = 1) -> dict:
    """evaluate-bag's latency summary (p50/p95/p99/max/mean) of millisecond samples, with their count as
    `n` and the frames/s they mean (`per_sample` frames per sample).
    """
    from ..evaluation.bag_evaluation import latency_summary
    s = latency_summary(samples_ms)
    mean = s["mean"]
    return dict(s, n=s["count"], fps=per_sample * 1000.0 / mean if mean else None)


def time_each(fn, items, repeats: int) -> list[float]:
    """Milliseconds of fn(item) for every item, `repeats` times over; one untimed pass first (caches, sessions)."""
    items = list(items)
    for item in items[:2]:
        fn(item)
    out = []
    for _ in range(max(1, repeats)):
        for item in items:
            t0 = time.perf_counter()
            fn(item)
            out.append((time.perf_counter() - t0) * 1000.0)
    return out


def sample_frames(size: tuple[int, int], limit: int | None = None) -> list[np.ndarray]:
    """The bundled real CamVid frames (480x360 street scenes) resized to `size`: real content, so class
    mixes and overlay costs are a street's, not a test pattern's (upscaled frames are smoother than a
    real HD camera's, so their JPEGs are smaller).
    """
    import cv2

    from ..cli.demo import _repo_root
    from ..learning.datasets import read_rgb
    roots = [base / "sample_data" / "camvid_val" / "images" for base in (_repo_root(), Path.cwd())]
    files = next((sorted(r.glob("*.png")) for r in roots if r.is_dir()), [])[:limit]
    if not files:
        raise BenchError("the bundled frames (sample_data/camvid_val/images) are not next to the package or in "
                         "the current folder; run from the repository")
    w, h = size
    out = []
    for f in files:
        rgb = read_rgb(f)
        interp = cv2.INTER_AREA if w < rgb.shape[1] else cv2.INTER_CUBIC
        out.append(np.ascontiguousarray(cv2.resize(rgb, (w, h), interpolation=interp)))
    return out


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", "unknown")
    except Exception:
        return None


def machine() -> dict:
    """What the figures depend on: CPU, cores, GPU, memory, library versions, load when the run started."""
    from ..inference import providers as eps
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "int8_dot_product": eps.cpu_int8_dot_product() or None,
        "gpu": None,
        "memory_gb": None,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "opencv": _version("cv2"),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_providers": eps.available(),
        "torch": _version("torch"),
        "ros_distro": os.environ.get("ROS_DISTRO") or "kilted",
        "rmw": os.environ.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp",
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        info["memory_gb"] = round(kb / 1024 ** 2, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return info
