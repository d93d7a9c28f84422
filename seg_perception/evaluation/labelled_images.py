# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Scoring a segmenter on labelled frames, and writing the result as JSON, a table and plots.

`evaluate` (the learning loop) and the offline bag evaluation both go
through `evaluate_frames`, so they give the same figures on the same frames.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from ..classes import ClassTable
from ..inference.segmenter import Segmenter
from ..learning.datasets import DatasetError
from .metrics import confusion_matrix, format_table, scores
from .plots import plot_confusion, plot_per_class_iou


def evaluate_frames(segmenter: Segmenter, frames: Iterable[tuple[str, np.ndarray, np.ndarray]], *,
                    classes: ClassTable | None = None, total: int | None = None,
                    progress: bool = True) -> dict:
    """Score (name, rgb, label) frames; label ids follow `classes` (default: the model's table)."""
    classes = classes or segmenter.classes
    n = classes.num_classes
    cm = np.zeros((n, n), np.int64)
    count = 0
    latencies = []
    for name, rgb, label in tqdm(frames, total=total, desc="evaluate", file=sys.stderr, disable=not progress,
                                 leave=False):
        if label.shape != rgb.shape[:2]:
            raise DatasetError(f"{name}: label is {label.shape[1]}x{label.shape[0]}, "
                               f"image is {rgb.shape[1]}x{rgb.shape[0]}")
        seg = segmenter.segment(rgb)
        cm += confusion_matrix(label, seg.labels, n, classes.ignore_index)
        latencies.append(seg.inference_ms)
        count += 1
    if count == 0:
        raise DatasetError("no frames to evaluate")
    result = scores(cm, classes.names)
    result["confusion_matrix"] = cm.tolist()
    result["frames"] = count
    result["inference_ms_mean"] = float(np.mean(latencies))
    result["model"] = str(segmenter.model_path)
    result["backend"] = segmenter.provider
    return result


def dataset_frames(ds) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    for i, name in enumerate(ds.names()):
        img, lab = ds.read(i)
        yield name, img, lab


def write_evaluation(result: dict, out_dir: str | Path, classes: ClassTable, *, title: str = "") -> dict:
    """metrics.json, metrics.md (readable table), confusion_matrix.png, per_class_iou.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    table = format_table(result)
    (out / "metrics.md").write_text((f"# {title}\n\n" if title else "") + table + "\n")
    plot_confusion(result["confusion_matrix"], classes.names, out / "confusion_matrix.png")
    plot_per_class_iou(result["per_class_iou"], out / "per_class_iou.png", miou=result["miou"],
                       palette=classes.palette)
    return {"json": out / "metrics.json", "table": out / "metrics.md"}
