# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""What planners consume, derived from a label image: class-group masks and the colour overlay."""
from __future__ import annotations

import cv2
import numpy as np


def group_lut(class_ids) -> np.ndarray:
    """256-entry lookup table: 255 for class_ids, else 0 (build once, apply per frame)."""
    lut = np.zeros(256, np.uint8)
    lut[list(class_ids)] = 255
    return lut


def group_mask(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """mono8 mask: 255 where the label is in the group of `lut` (from group_lut), else 0.

    cv2.LUT, several times faster than numpy's fancy indexing at camera resolution.
    """
    return cv2.LUT(labels, lut)


def colourise(labels: np.ndarray, palette_lut: np.ndarray) -> np.ndarray:
    """HxWx3 RGB image of the class colours (palette_lut is 256x3 uint8).

    One cv2.LUT on the labels repeated in three channels with a 3-channel table: a tenth of the
    time of palette_lut[labels] at 1080p.
    """
    return cv2.LUT(cv2.merge((labels, labels, labels)), palette_lut.reshape(256, 1, 3))


def overlay(rgb: np.ndarray, labels: np.ndarray, palette_lut: np.ndarray, alpha: float) -> np.ndarray:
    """Blend the class colours over the frame: alpha=0 shows the frame, 1 the colours only."""
    if labels.shape != rgb.shape[:2]:
        labels = cv2.resize(labels, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    return cv2.addWeighted(colourise(labels, palette_lut), float(alpha), rgb, 1.0 - float(alpha), 0.0)
