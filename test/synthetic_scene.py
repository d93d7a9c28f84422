# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""A known scene for the geometry tests: flat ground, upright boxes, a camera at a known pose.

The label image is rendered by forward projection only: a dense set of rays (normalised
coordinates, half a pixel apart) is cast into the scene, each hit is given a class,
and each ray is projected into the image through the lens model (cv2.projectPoints, or
cv2.fisheye for equidistant lenses). Each pixel takes the class of the ray that lands
nearest its centre. Nothing here inverts the lens, so the code under test (which
undistorts pixels) is checked against an independent path.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ROAD, SKY, CAR, WALL = 3, 0, 8, 1   # CamVid ids: drivable Road; obstacle Car; Building as a non-drivable wall


@dataclass(frozen=True)
class Box:
    """An upright box standing on the ground: footprint x0..x1, y0..y1 (base_frame metres), height."""

    x0: float
    x1: float
    y0: float
    y1: float
    height: float = 1.5
    label: int = CAR


def render(camera, pose, boxes, *, oversample: int = 2) -> np.ndarray:
    """Label image (camera.height, camera.width) uint8 of `boxes` on a road, sky above."""
    H, W = camera.height, camera.width
    K, D = camera.K, camera.D
    f = min(K[0, 0], K[1, 1])
    corners = camera.undistort(np.array([[-1, -1], [W, -1], [-1, H], [W, H], [W / 2, -1], [W / 2, H],
                                         [-1, H / 2], [W, H / 2]], np.float64)).reshape(-1, 2)
    lo, hi = corners.min(0), corners.max(0)
    pad = 0.15 * (hi - lo)
    step = 1.0 / (oversample * f * (1.5 if camera.distortion_model == "equidistant" and D.size else 1.0))
    xs = np.arange(lo[0] - pad[0], hi[0] + pad[0], step)
    ys = np.arange(lo[1] - pad[1], hi[1] + pad[1], step)
    xx, yy = np.meshgrid(xs, ys)
    rays = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)], axis=1)
    # Project forward through the lens.
    zero = np.zeros(3)
    pts = rays.reshape(-1, 1, 3)
    if camera.distortion_model == "equidistant" and D.size:
        px, _ = cv2.fisheye.projectPoints(pts, zero, zero, K, D)
    else:
        px, _ = cv2.projectPoints(pts, zero, zero, K, D if D.size else None)
    px = px.reshape(-1, 2)
    u, v = np.rint(px[:, 0]), np.rint(px[:, 1])
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    rays, px, u, v = rays[inside], px[inside], u[inside].astype(int), v[inside].astype(int)
    labels = _cast(rays @ pose.R.T, pose.t, boxes)
    # Nearest ray to each pixel centre wins: write far-to-near so the nearest lands last.
    dist = np.hypot(px[:, 0] - u, px[:, 1] - v)
    order = np.argsort(-dist)
    image = np.full((H, W), 255, np.uint8)
    image[v[order], u[order]] = labels[order]
    if (image == 255).any():
        raise AssertionError(f"{int((image == 255).sum())} pixels got no ray: oversample more")
    return image


def _cast(d: np.ndarray, origin: np.ndarray, boxes) -> np.ndarray:
    """Class of the first surface each ray (directions d from origin, base_frame) hits."""
    n = len(d)
    best = np.full(n, np.inf)
    label = np.full(n, SKY, np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = -origin[2] / d[:, 2]
    ground = (d[:, 2] < 0) & (t_ground > 0)
    best[ground] = t_ground[ground]
    label[ground] = ROAD
    for b in boxes:
        lo = np.array([b.x0, b.y0, 0.0])
        hi = np.array([b.x1, b.y1, b.height])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (lo - origin) / d
            t2 = (hi - origin) / d
        tmin = np.nanmax(np.minimum(t1, t2), axis=1)
        tmax = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (tmax >= tmin) & (tmax > 0) & (tmin < best)
        best[hit] = np.maximum(tmin[hit], 0)
        label[hit] = b.label
    return label


def first_hit_range(bearing: float, boxes, origin=(0.0, 0.0)) -> float:
    """Distance from `origin` (default base_frame's) along `bearing` to the first box footprint (inf if none)."""
    d = np.array([np.cos(bearing), np.sin(bearing)])
    best = np.inf
    for b in boxes:
        lo, hi = np.array([b.x0, b.y0]) - origin, np.array([b.x1, b.y1]) - origin
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = lo / d, hi / d
        tmin = np.nanmax(np.minimum(t1, t2))
        tmax = np.nanmin(np.maximum(t1, t2))
        if tmax >= tmin and tmax > 0:
            best = min(best, max(tmin, 0.0))
    return best
