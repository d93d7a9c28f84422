# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""PNG plots shared by `evaluate` and the bag report (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(cm, names, path: str | Path, *, title: str = "Confusion matrix (row-normalised)") -> None:
    cm = np.asarray(cm, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.01:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_class_iou(per_class: dict, path: str | Path, *, miou: float | None = None,
                       palette=None, title: str = "Per-class IoU") -> None:
    names = list(per_class)
    vals = [100 * (v if v is not None else 0) for v in per_class.values()]
    colours = [np.asarray(c) / 255 for c in palette] if palette is not None else None
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(names), 4))
    bars = ax.bar(range(len(names)), vals, color=colours, edgecolor="black")
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    if miou is not None:
        ax.axhline(100 * miou, color="red", ls="--", label=f"mIoU {100 * miou:.1f}")
        ax.legend(loc="lower right")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 105)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_bag_miou(rows: list[dict], path: str | Path, *, miou: float | None = None, limit: int = 40) -> None:
    """The worst bags' mIoU (rows come worst first; failed bags show as empty bars marked 'failed')."""
    rows = rows[:limit]
    names = [Path(r["bag"]).name for r in rows]
    vals = [100 * (r.get("miou") or 0) if r["status"] == "ok" else 0 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.28 * len(rows)))
    ax.barh(range(len(rows)), vals, color="#4878a8", edgecolor="black")
    for k, r in enumerate(rows):
        if r["status"] != "ok":
            ax.text(1, k, "failed", va="center", fontsize=8, color="red")
    if miou is not None:
        ax.axvline(100 * miou, color="red", ls="--", label=f"pooled mIoU {100 * miou:.1f}")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("mIoU (%)")
    ax.set_title(f"Per-bag mIoU, worst first ({len(rows)} shown)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
