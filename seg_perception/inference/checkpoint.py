# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""One-file model checkpoints: weights plus everything needed to use them.

A checkpoint holds the architecture and its arguments, the class table
(names, palette, ignore id, drivable/obstacle groups), input normalisation,
training resolution and the training record. Files are written atomically so
a crash never leaves a half-written checkpoint in place of a good one.
"""
from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..classes import ClassTable, ClassTableError
from ..learning.models import UnknownModelError, build_model

FORMAT = "seg_perception.checkpoint/1"
REQUIRED = ("format", "arch", "arch_kwargs", "classes", "normalisation", "input_size", "state_dict")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt or incomplete."""


@dataclass
class ModelInfo:
    """The metadata a checkpoint carries next to its weights."""

    arch: str
    arch_kwargs: dict
    classes: ClassTable
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]  # (width, height) the model was trained at
    training: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "classes": self.classes.to_dict(),
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "input_size": list(self.input_size),
            "training": self.training,
        }


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo, *, half: bool = False,
                    extra: dict | None = None) -> None:
    """Write a model checkpoint; half=True stores weights as fp16 (halves the file, loads as fp32)."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    obj = info.to_dict()
    obj["state_dict"] = state
    if extra:
        obj.update(extra)
    atomic_save(obj, path)


def read_checkpoint(path: str | Path) -> dict:
    """Load the raw checkpoint dict with errors that name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"model path {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read model file {path}: {exc.strerror}") from None
    if not data:
        raise CheckpointError(f"model file {path} is empty")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for corrupt zips/pickles
        raise CheckpointError(f"model file {path} is corrupt or not a seg_perception checkpoint "
                              f"({load_failure(exc)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"model file {path} holds a {type(obj).__name__}, not a checkpoint dict")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise CheckpointError(f"model file {path} lacks checkpoint fields {missing}")
    if obj["format"] != FORMAT:
        raise CheckpointError(f"model file {path} has format '{obj['format']}', expected '{FORMAT}'")
    return obj


def load_failure(exc: BaseException) -> str:
    """Why torch.load refused a file, in one line, without torch's advice to retry with
    weights_only=False (which would let the file run code).
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "Unsupported global" in line or "but got <class" in line
                   or line.startswith("Unsupported operand")), None)
    if detail is None:
        detail = next((line for line in lines if "weights_only" not in line and "Weights only" not in line
                       and "WeightsUnpickler" not in line), "")
    if "Weights only load failed" in str(exc):
        return f"content a weights-only load refuses: {detail}" if detail else "content a weights-only load refuses"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def info_from_dict(obj: dict, *, source: str) -> ModelInfo:
    try:
        classes = ClassTable.from_dict(obj["classes"], source=f"{source} classes")
    except ClassTableError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        norm = obj["normalisation"]
        mean, std = tuple(float(v) for v in norm["mean"]), tuple(float(v) for v in norm["std"])
        w, h = (int(v) for v in obj["input_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: bad normalisation or input_size ({exc})") from None
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise CheckpointError(f"{source}: normalisation needs 3 means and 3 positive stds")
    if w <= 0 or h <= 0:
        raise CheckpointError(f"{source}: input_size {w}x{h} is not positive")
    return ModelInfo(arch=str(obj["arch"]), arch_kwargs=dict(obj["arch_kwargs"]), classes=classes,
                     mean=mean, std=std, input_size=(w, h), training=dict(obj.get("training") or {}))


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Build the model a checkpoint describes and load its weights (fp32, eval mode)."""
    obj = read_checkpoint(path)
    info = info_from_dict(obj, source=str(path))
    try:
        model = build_model(info.arch, num_classes=info.classes.num_classes, **info.arch_kwargs)
    except UnknownModelError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in obj["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][1:3]
        raise CheckpointError(
            f"{path}: weights do not fit a {info.arch} with {info.classes.num_classes} classes "
            f"(wrong class count or architecture): {' '.join(first)}") from None
    model.eval()
    return model, info
