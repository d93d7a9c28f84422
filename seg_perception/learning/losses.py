# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Segmentation losses: cross-entropy (plain or OHEM), Dice and their sums, and knowledge distillation, all
honouring the ignore id.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOSSES = ("ce", "dice", "ce+dice", "ohem", "ohem+dice")

#: OHEM keeps the pixels whose true class gets less than this probability ...
OHEM_THRESHOLD = 0.7
#: ... and never fewer than this share of a batch's labelled pixels (the hardest ones)
OHEM_MIN_SHARE = 1 / 16


class DiceLoss(nn.Module):
    """Soft multi-class Dice (1 - mean Dice over classes present in batch or prediction)."""

    def __init__(self, *, ignore_index: int = 255, smooth: float = 1.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n, c = logits.shape[:2]
        valid = (target != self.ignore_index)
        prob = logits.float().softmax(1) * valid.unsqueeze(1)
        onehot = F.one_hot(target.clamp(0, c - 1).long(), c).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        present = onehot.sum((0, 2, 3)) > 0
        return 1 - (dice[present].mean() if present.any() else dice.mean())


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, weight=None, ignore_index: int = 255,
                       threshold: float = OHEM_THRESHOLD, min_share: float = OHEM_MIN_SHARE) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (online hard example mining, as in BiSeNet and PSPNet's code).

    Sky and road are most of every frame and soon easy; averaged with them, the loss of a person's few
    pixels is a rounding error. Here a pixel counts only while its true class gets less than
    `threshold` probability, and at least the hardest `min_share` of the labelled pixels always count.
    """
    per_pixel = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=ignore_index,
                                reduction="none").flatten()
    valid = target.flatten() != ignore_index
    losses = per_pixel[valid]
    if losses.numel() == 0:
        return logits.sum() * 0.0
    hard = losses[losses > -math.log(threshold)]
    n_min = max(1, int(min_share * losses.numel()))
    if hard.numel() < n_min:
        hard = losses.topk(n_min).values
    return hard.mean()


class SegmentationLoss(nn.Module):
    """'ce', 'dice', 'ce+dice', 'ohem' or 'ohem+dice' (sums: Dice weighted by dice_weight)."""

    def __init__(self, kind: str = "ce", *, ignore_index: int = 255, class_weights=None,
                 dice_weight: float = 1.0):
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"unknown loss '{kind}'; choose one of {list(LOSSES)}")
        self.kind = kind
        w = torch.as_tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.ce = nn.CrossEntropyLoss(weight=w, ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        loss = logits.new_zeros(())
        if self.kind.startswith("ce"):
            loss = loss + self.ce(logits.float(), target)
        elif self.kind.startswith("ohem"):
            loss = loss + ohem_cross_entropy(logits, target, weight=self.ce.weight, ignore_index=self.ignore_index)
        if "dice" in self.kind:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, *,
                      temperature: float = 1.0, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel KL(teacher || student) at a temperature, averaged over labelled pixels.

    teacher_probs are the teacher's class probabilities at the same temperature;
    the T^2 factor keeps gradient sizes comparable across temperatures (Hinton et al.).
    """
    log_student = F.log_softmax(student_logits.float() / temperature, 1)
    teacher = teacher_probs.float()
    kl = (teacher * (teacher.clamp_min(1e-8).log() - log_student)).sum(1)
    valid = (target != ignore_index).float()
    return (kl * valid).sum() / valid.sum().clamp_min(1.0) * temperature ** 2


def class_weights_from_counts(counts: np.ndarray, *, method: str = "enet", c: float = 1.1) -> np.ndarray:
    """Class weights from pixel counts: ENet's 1/ln(c + p) or median-frequency balancing."""
    freq = counts / max(counts.sum(), 1)
    if method == "enet":
        return (1.0 / np.log(c + freq)).astype(np.float32)
    if method == "median":
        med = np.median(freq[freq > 0])
        return np.where(freq > 0, med / np.maximum(freq, 1e-12), 0).astype(np.float32)
    raise ValueError(f"unknown class weight method '{method}'; choose enet or median")
