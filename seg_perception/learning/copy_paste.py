# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Copy-paste of people and vehicles between training frames, standing on the ground at the right size.

Living things are under 2 % of a street's pixels; pasting more of them into other frames gives the
network more of what it misses (Ghiasi et al., "Simple Copy-Paste", CVPR 2021). A pasted person
floating in the sky or as tall as a bus teaches the wrong thing, so each object is pasted with its
lowest pixel on a ground pixel of the target frame and scaled by the ground-plane rule: for a camera
at the same height, a thing standing on the ground at image row y is (y - horizon) / (y0 - horizon0)
times the size it was at row y0 in its own frame (pinhole camera, level ground; the focal length
cancels). The horizon of a frame is estimated from its labels: the top of its ground region.

Labels and pixels move together: every pixel the pasted object covers takes its class, and nothing
else of the frame changes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: objects smaller than this many pixels are not worth cutting (at the frame size training loads)
MIN_OBJECT_PIXELS = 48
#: the pasted object's size against its source size is kept within this range
SCALE_RANGE = (0.4, 2.5)


@dataclass
class PasteObject:
    """One object cut from a labelled frame: its pixels, its mask and where it stood."""

    image: np.ndarray      # h x w x 3 uint8, the object's bounding box
    mask: np.ndarray       # h x w bool, the object's pixels
    class_id: int
    ground_depth: float    # rows between the frame's horizon and the object's lowest pixel (> 0)


def horizon_row(label: np.ndarray, ground_ids) -> int | None:
    """The top of the ground region (a robust estimate of the horizon row), or None without ground."""
    counts = np.isin(label, ground_ids).sum(1)
    if counts.max() == 0:
        return None
    # the first row whose ground reaches 1 % of the ground's widest row: a few stray pixels do not count
    return int(np.argmax(counts >= max(1, 0.01 * counts.max())))


def cut_objects(image: np.ndarray, label: np.ndarray, class_ids, ground_ids, *,
                min_pixels: int = MIN_OBJECT_PIXELS) -> list[PasteObject]:
    """The whole objects of these classes that stand below the horizon and do not touch the frame's border."""
    horizon = horizon_row(label, ground_ids)
    if horizon is None:
        return []
    h, w = label.shape
    out = []
    for c in class_ids:
        n, comp, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            bottom = y + bh - 1
            if area < min_pixels or x == 0 or y == 0 or x + bw == w or y + bh == h or bottom <= horizon + 2:
                continue
            mask = comp[y:y + bh, x:x + bw] == k
            out.append(PasteObject(image[y:y + bh, x:x + bw].copy(), mask, int(c), float(bottom - horizon)))
    return out


def object_bank(images, labels, class_ids, ground_ids, *, min_pixels: int = MIN_OBJECT_PIXELS) -> list[PasteObject]:
    """Every object of these classes in a set of labelled frames."""
    bank = []
    for img, lab in zip(images, labels):
        bank += cut_objects(img, lab, class_ids, ground_ids, min_pixels=min_pixels)
    return bank


class CopyPaste:
    """Paste up to `max_objects` objects from the bank into a frame, with probability `probability`."""

    def __init__(self, bank: list[PasteObject], ground_ids, *, probability: float = 0.5, max_objects: int = 3):
        self.bank, self.ground_ids = bank, np.asarray(ground_ids)
        self.probability, self.max_objects = probability, max_objects

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        """A new (image, label) pair; the inputs are not changed."""
        if not self.bank or rng.random() >= self.probability:
            return image, label
        horizon = horizon_row(label, self.ground_ids)
        if horizon is None:
            return image, label
        ys, xs = np.nonzero(np.isin(label, self.ground_ids))
        below = ys > horizon + 2
        ys, xs = ys[below], xs[below]
        if ys.size == 0:
            return image, label
        image, label = image.copy(), label.copy()
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            obj = self.bank[int(rng.integers(len(self.bank)))]
            # ground rows where the object's size stays within the scale range
            lo, hi = horizon + SCALE_RANGE[0] * obj.ground_depth, horizon + SCALE_RANGE[1] * obj.ground_depth
            fits = np.nonzero((ys >= lo) & (ys <= hi))[0]
            if fits.size == 0:
                continue
            at = fits[int(rng.integers(fits.size))]
            self.paste(image, label, obj, int(ys[at]), int(xs[at]), horizon, flip=bool(rng.random() < 0.5))
        return image, label

    @staticmethod
    def paste(image: np.ndarray, label: np.ndarray, obj: PasteObject, bottom: int, centre: int, horizon: int, *,
              flip: bool = False) -> bool:
        """Paste one object in place with its lowest row at `bottom`, centred on column `centre`."""
        scale = (bottom - horizon) / obj.ground_depth
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            return False
        oh, ow = obj.mask.shape
        nh, nw = max(1, round(oh * scale)), max(1, round(ow * scale))
        h, w = label.shape
        if nh < 4 or nh > h or nw > w:
            return False
        patch = cv2.resize(obj.image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(obj.mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        if flip:
            patch, mask = patch[:, ::-1], mask[:, ::-1]
        top, left = bottom - nh + 1, centre - nw // 2
        # clip the patch to the frame
        t0, l0 = max(0, -top), max(0, -left)
        t1, l1 = min(nh, h - top), min(nw, w - left)
        if t1 <= t0 or l1 <= l0:
            return False
        region = (slice(top + t0, top + t1), slice(left + l0, left + l1))
        m = mask[t0:t1, l0:l1]
        image[region][m] = patch[t0:t1, l0:l1][m]
        label[region][m] = obj.class_id
        return True
