# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Confusion matrix and the scores derived from it (mIoU, per-class IoU, pixel accuracy)."""
from __future__ import annotations

import numpy as np


def confusion_matrix(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int) -> np.ndarray:
    """num_classes x num_classes counts, rows = ground truth, columns = prediction; ignore pixels dropped."""
    target = np.asarray(target).ravel()
    pred = np.asarray(pred).ravel()
    if target.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size: {target.size} vs {pred.size}")
    keep = (target != ignore_index) & (target < num_classes)
    t = target[keep].astype(np.int64)
    p = np.clip(pred[keep].astype(np.int64), 0, num_classes)  # out-of-range predictions count as wrong
    cm = np.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    return cm.reshape(num_classes, num_classes + 1)[:, :num_classes].astype(np.int64)


def scores(cm: np.ndarray, class_names=None) -> dict:
    """MIoU over classes that occur in ground truth or prediction, per-class IoU, accuracy."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt = cm.sum(1)
    pr = cm.sum(0)
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        class_acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_class_accuracy": float(np.nanmean(class_acc)) if np.isfinite(class_acc).any() else float("nan"),
        "pixels": int(total),
    }


def format_table(result: dict) -> str:
    """A readable per-class table for terminals and Markdown."""
    lines = ["| class | IoU |", "|---|---|"]
    for name, v in result["per_class_iou"].items():
        lines.append(f"| {name} | {'n/a' if v is None else f'{100 * v:.1f}'} |")
    lines.append(f"| **mIoU** | **{100 * result['miou']:.1f}** |")
    lines.append(f"| pixel accuracy | {100 * result['pixel_accuracy']:.1f} |")
    return "\n".join(lines)
