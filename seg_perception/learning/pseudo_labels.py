# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Pseudo-labels for frames without labels: a teacher's confident pixels, with a threshold per class.

One global threshold lets the frequent, easy classes (road, sky) fill the pseudo-labels while the rare
ones (people) rarely reach it, and self-training then forgets them. Class-balanced thresholds (Zou et
al., CBST, ECCV 2018) keep, for every class, the same share of the pixels the teacher gives it: the
threshold of class c is the confidence that `class_share` of c's pixels reach, capped at `cap` (a
pixel at or above the cap is always kept) and never below `floor`. Pixels under their class's
threshold get the ignore id and teach nothing.

The teacher sees the frame as it is (the weak view), mirrored and averaged; the student is trained
on strongly augmented crops of it (scale, crop, colour, blur, noise) against these labels, which is
the weak/strong consistency of FixMatch computed once per run instead of per step.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..classes import ClassTable


@dataclass(frozen=True)
class ThresholdPolicy:
    """How confident the teacher must be for a pixel to become a pseudo-label (see the module doc)."""

    cap: float = 0.9                   # a pixel this confident is always kept
    class_share: float | None = 0.5    # per class: keep the most confident share of its pixels (None: cap only)
    floor: float = 0.5                 # never keep a pixel under this confidence
    per_class: dict | None = None      # class name -> fixed threshold, overriding the policy for that class

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.cap <= 1:
            raise ValueError(f"pseudo-label thresholds need 0 < floor <= cap <= 1 (floor {self.floor}, cap {self.cap})")
        if self.class_share is not None and not 0 < self.class_share <= 1:
            raise ValueError(f"pseudo_class_share must be within (0, 1], got {self.class_share}")
        for name, value in (self.per_class or {}).items():
            if not 0 <= float(value) <= 1:
                raise ValueError(f"pseudo-label threshold of '{name}' must be within 0..1, got {value}")

    def thresholds(self, confidence: np.ndarray, labels: np.ndarray, classes: ClassTable) -> np.ndarray:
        """One threshold per class from the teacher's top-class confidence and labels over all frames."""
        n = classes.num_classes
        out = np.full(n, self.cap, np.float32)
        if self.class_share is not None:
            for c in range(n):
                conf = confidence[labels == c]
                if conf.size:
                    out[c] = np.quantile(conf, 1 - self.class_share)
            out = np.clip(out, self.floor, self.cap)
        for name, value in (self.per_class or {}).items():
            out[classes.ids([name])[0]] = float(value)
        return out


def apply_thresholds(confidence: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                     ignore_index: int = 255) -> np.ndarray:
    """The labels where the confidence reaches its class's threshold, the ignore id elsewhere."""
    keep = confidence >= thresholds[labels]
    return np.where(keep, labels, ignore_index).astype(np.uint8)


@torch.no_grad()
def top_class(model: torch.nn.Module, img: np.ndarray, mean, std, *, flip: bool = False,
              device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """(top-class confidence float32, labels uint8) of one HxWx3 uint8 RGB frame at its own size."""
    from .models import class_probabilities
    from .transforms import normalise
    x = normalise(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device), mean, std)
    conf, lab = class_probabilities(model, x, flip=flip)[0].max(0)
    return conf.cpu().numpy().astype(np.float32), lab.to(torch.uint8).cpu().numpy()


def teacher_predictions(model: torch.nn.Module, images: list[np.ndarray], mean, std, *, flip: bool = True,
                        device="cpu", progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(top-class confidence float32, labels uint8) of each frame at its own size."""
    from tqdm import tqdm
    model.eval()
    out = [top_class(model, img, mean, std, flip=flip, device=device)
           for img in tqdm(images, desc="pseudo-labels", leave=False, file=sys.stderr, disable=not progress)]
    return [c for c, _ in out], [lab for _, lab in out]


@dataclass
class PseudoLabels:
    """Pseudo-labels of a set of frames and what they hold, for the training record and the log."""

    labels: list[np.ndarray]
    thresholds: dict           # class name -> threshold
    kept_share: dict           # class name -> share of the teacher's pixels of that class that were kept
    kept_pixels: float         # share of all pixels that carry a label

    def summary(self) -> str:
        per = ", ".join(f"{n} {t:.2f} ({100 * self.kept_share[n]:.0f} %)" for n, t in self.thresholds.items())
        return f"{100 * self.kept_pixels:.0f} % of pixels labelled; thresholds (kept share): {per}"


def pseudo_label(model: torch.nn.Module, images: list[np.ndarray], classes: ClassTable, mean, std, *,
                 policy: ThresholdPolicy = ThresholdPolicy(), flip: bool = True, device="cpu",
                 progress: bool = True) -> PseudoLabels:
    """The teacher's pseudo-labels of every frame under one set of thresholds computed over all of them."""
    confs, labs = teacher_predictions(model, images, mean, std, flip=flip, device=device, progress=progress)
    all_conf = np.concatenate([c.ravel() for c in confs])
    all_lab = np.concatenate([lab.ravel() for lab in labs])
    thresholds = policy.thresholds(all_conf, all_lab, classes)
    labels = [apply_thresholds(c, lab, thresholds, classes.ignore_index) for c, lab in zip(confs, labs)]
    kept = np.concatenate([lab.ravel() for lab in labels])
    predicted = np.bincount(all_lab, minlength=classes.num_classes)
    kept_counts = np.bincount(kept[kept != classes.ignore_index], minlength=classes.num_classes)
    return PseudoLabels(
        labels=labels,
        thresholds={n: round(float(t), 4) for n, t in zip(classes.names, thresholds)},
        kept_share={n: float(k / p) if p else 0.0 for n, k, p in zip(classes.names, kept_counts, predicted)},
        kept_pixels=float((kept != classes.ignore_index).mean()) if kept.size else 0.0)
