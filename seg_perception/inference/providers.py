# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Which ONNX Runtime execution providers a session gets, and what the CPU can do.

TensorRT (fp16) engines are cached on disk, one folder per (model file, network size, batch,
TensorRT version), so a node restart skips the minutes of engine building; a stale or corrupt
cache is wiped and rebuilt (`TensorRTCache.reset`).
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: CPU features that make int8 convolutions pay (x86 VNNI / AMX, Arm dot product).
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512vnni", "asimddp")


class ProviderError(RuntimeError):
    """An execution provider that was asked for but is not installed or has no device."""


def available() -> list[str]:
    import onnxruntime as ort
    return list(ort.get_available_providers())


def cpu_int8_dot_product(cpuinfo: str | None = None) -> str | None:
    """The CPU's int8 dot-product feature (avx512_vnni, amx_int8, ...), or None where it has none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "arm64" if platform.machine() == "arm64" else None  # Apple silicon has the dot product
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return next((f for f in INT8_DOT_FLAGS if f in flags), None)


def default_cache_dir() -> Path:
    """$ROS_HOME/seg_perception/tensorrt (ROS_HOME defaults to ~/.ros), as ROS tools keep their files."""
    ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return Path(ros_home) / "seg_perception" / "tensorrt"


class TensorRTCache:
    """The engine cache folder of one model file at one network size and batch."""

    def __init__(self, root: str | Path | None, model_sha256: str, size: tuple[int, int], max_batch: int):
        try:
            import tensorrt
            version = tensorrt.__version__
        except ImportError:  # ONNX Runtime may bring its own TensorRT libraries
            version = "unknown"
        w, h = size
        self.path = Path(root or default_cache_dir()) / f"{model_sha256[:16]}-{w}x{h}-b{max_batch}-trt{version}"

    def reset(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def provider_options(self, input_name: str, size: tuple[int, int], max_batch: int, *, fp16: bool = True) -> dict:
        """TensorRT EP options: fp16, engine and timing cache in this folder, a profile for batches 1..max."""
        self.path.mkdir(parents=True, exist_ok=True)
        w, h = size
        return {
            "trt_fp16_enable": bool(fp16),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.path),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.path),
            "trt_profile_min_shapes": f"{input_name}:1x{h}x{w}x3",
            "trt_profile_opt_shapes": f"{input_name}:{max_batch}x{h}x{w}x3",
            "trt_profile_max_shapes": f"{input_name}:{max_batch}x{h}x{w}x3",
        }


def gpu_providers(kind: str) -> list[str]:
    """Check that `kind` (tensorrt or cuda) is usable; ProviderError says what to install otherwise."""
    have = available()
    need = TENSORRT if kind == "tensorrt" else CUDA
    if need not in have:
        raise ProviderError(
            f"{kind} requested but ONNX Runtime has no {need} (available: {', '.join(have)}); on a machine "
            "with an NVIDIA GPU install onnxruntime-gpu" + (" and tensorrt" if kind == "tensorrt" else "")
            + " in place of onnxruntime")
    return [need]
