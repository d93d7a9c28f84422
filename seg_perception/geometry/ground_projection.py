# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Flat-ground projection tables for one camera, pose, output size and grid: built once, then gathered.

Each pixel's ray through its centre is cut with the ground plane z = 0 of base_frame: the
pixel's ground point, its range and bearing from base_frame's origin. Pixels whose ray
meets no ground (at or above the horizon) or meets it beyond `max_range` get NaN. For the
occupancy grid the other direction is tabulated too: the pixel in which each cell's
centre is seen. A frame then costs only gathers (free_space.py).

Range error: a boundary found one row off moves the ground point by about
X^2 / (f * h) metres at range X for a camera at height h with focal length f pixels
(rows near the horizon are the coarsest), so `max_range` bounds the relative error
X / (f * h) per row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera_model import CameraModel
from .camera_pose import CameraPose


class GroundProjectionError(ValueError):
    """No ground pixel in view (camera pitched up, max_range too short for the camera's height...)."""


@dataclass(frozen=True)
class GridSpec:
    """An axis-aligned grid in base_frame: cells of `resolution` metres over x_range by y_range."""

    resolution: float = 0.1
    x_range: tuple[float, float] = (0.0, 40.0)
    y_range: tuple[float, float] = (-15.0, 15.0)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.resolution) and self.resolution > 0):
            raise ValueError(f"grid resolution {self.resolution} must be positive")
        for name, (lo, hi) in (("x", self.x_range), ("y", self.y_range)):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"grid {name} range [{lo}, {hi}] must be finite and increasing")
        if self.width * self.height > 25_000_000:
            raise ValueError(f"grid of {self.width}x{self.height} cells is too large (at most 25 M cells)")

    @property
    def width(self) -> int:
        """Cells along x (OccupancyGrid's width)."""
        return int(round((self.x_range[1] - self.x_range[0]) / self.resolution))

    @property
    def height(self) -> int:
        """Cells along y (OccupancyGrid's height)."""
        return int(round((self.y_range[1] - self.y_range[0]) / self.resolution))

    def cell_index(self, xy: np.ndarray) -> np.ndarray:
        """Row-major cell index (iy * width + ix) of each point (N, 2); -1 outside the grid or NaN."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            ix = np.floor((xy[:, 0] - self.x_range[0]) / self.resolution)
            iy = np.floor((xy[:, 1] - self.y_range[0]) / self.resolution)
            inside = (ix >= 0) & (ix < self.width) & (iy >= 0) & (iy < self.height)
        out = np.full(len(xy), -1, np.int64)
        out[inside] = iy[inside].astype(np.int64) * self.width + ix[inside].astype(np.int64)
        return out

    def cell_centres(self) -> np.ndarray:
        """(height * width, 2) centres of all cells in row-major order."""
        xs = self.x_range[0] + (np.arange(self.width) + 0.5) * self.resolution
        ys = self.y_range[0] + (np.arange(self.height) + 0.5) * self.resolution
        xx, yy = np.meshgrid(xs, ys)
        return np.stack([xx.ravel(), yy.ravel()], axis=1)


class GroundProjection:
    """Ground point of every output pixel and the pixel of every grid cell, for one geometry.

    Arrays (H x W is the output image):
      xy (H, W, 2) float32, range and bearing (H, W) float32: NaN where `valid` is False;
      top_row: the highest row with any valid pixel (rows above never reach the ground);
      column_far_bearing, column_far_range (W,): bearing and range of each column's farthest valid
        pixel (NaN: no ground); column_sees_max (W,): the column's ground stays in view out to
        max_range (the pixel above its farthest valid one sees ground beyond max_range or the sky),
        rather than ending at the image's top edge;
      blind_range: the largest, over the columns, of the nearest ground a column sees: the ground
        nearer than this on some bearing is never in view (what a costmap's raytrace_min_range needs);
      scan_angle_min / scan_increment / scan_beams: the LaserScan's beams;
      cell_index, cell_u, cell_v: grid cells seen within max_range and the pixel seeing each.
    """

    def __init__(self, camera: CameraModel, pose: CameraPose, *, max_range: float, grid: GridSpec,
                 scan_increment: float = 0.0, stride: int = 1) -> None:
        if not (math.isfinite(max_range) and max_range > 0):
            raise ValueError(f"max_range {max_range} must be positive")
        self.camera, self.pose, self.max_range, self.grid = camera, pose, float(max_range), grid
        H, W = camera.height, camera.width
        self.shape = (H, W)
        rays = camera.pixel_rays()
        xy, rng, valid = self._cut_ground(rays)
        if not valid.any():
            looks_up = bool(((rays @ pose.R.T)[..., 2] >= 0).all())
            raise GroundProjectionError(
                f"no pixel sees the ground within max_range {self.max_range:g} m: the camera at height "
                f"{pose.t[2]:.2f} m looks {'above' if looks_up else 'too far beyond'} the horizon "
                "(check camera_rpy: a positive pitch looks down)")
        self.valid = valid
        self.xy = xy.astype(np.float32)
        self.range = rng.astype(np.float32)
        # Bearings unwrapped around the view's mean direction: a camera looking back (yaw pi) sees
        # bearings on both sides of +-pi, and wrapping them would spread its beams over the full circle.
        raw = np.arctan2(xy[..., 1], xy[..., 0])
        centre = math.atan2(np.nanmean(np.sin(raw[valid])), np.nanmean(np.cos(raw[valid])))
        self.bearing = (centre + np.angle(np.exp(1j * (raw - centre)))).astype(np.float32)
        rows_valid = np.flatnonzero(valid.any(axis=1))
        self.top_row = int(rows_valid[0])
        # The farthest valid pixel of each column: its topmost valid row.
        band = valid[self.top_row:]
        first = band.argmax(axis=0)
        has = band.any(axis=0)
        far_rows = np.where(has, first + self.top_row, 0)
        self.column_far_bearing = np.where(has, self.bearing[far_rows, np.arange(W)], np.nan).astype(np.float32)
        self.column_far_range = np.where(has, self.range[far_rows, np.arange(W)], np.nan).astype(np.float32)
        above = np.maximum(far_rows - 1, 0)
        self.column_sees_max = has & (far_rows > 0) & np.isfinite(rays[above, np.arange(W)]).all(axis=-1)
        # The nearest valid pixel of each column: its lowest valid row.
        near_rows = H - 1 - valid[::-1].argmax(axis=0)
        near = np.where(has, self.range[near_rows, np.arange(W)], np.nan)
        self.blind_range = float(np.nanmax(near))
        # LaserScan beams: the bearings the image covers, one beam per column unless an increment is given.
        bearings = self.bearing[valid]
        self.scan_angle_min = float(bearings.min())
        self.scan_angle_max = float(bearings.max())
        span = self.scan_angle_max - self.scan_angle_min
        if scan_increment and scan_increment > 0:
            self.scan_increment = float(scan_increment)
        else:
            self.scan_increment = span / max(W - 1, 1) if span > 0 else 1e-3
        self.scan_beams = int(math.floor(span / self.scan_increment + 1e-9)) + 1
        self.range_min = float(np.nanmin(self.range))
        self._grid_lookup()
        self.points_xyz = self._cloud_xyz(stride)
        self.stride = stride

    def _cut_ground(self, rays: np.ndarray):
        """Ground points (H, W, 2), ranges and validity of optical-frame rays."""
        d = rays @ self.pose.R.T                       # directions in base_frame
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -self.pose.t[2] / d[..., 2]
            xy = self.pose.t[:2] + t[..., None] * d[..., :2]
            rng = np.hypot(xy[..., 0], xy[..., 1])
            valid = (d[..., 2] < -1e-12) & np.isfinite(rng) & (rng <= self.max_range)
        xy[~valid] = np.nan
        rng[~valid] = np.nan
        return xy, rng, valid

    def _grid_lookup(self) -> None:
        """For every cell within max_range and in view: the pixel that sees its centre."""
        centres = self.grid.cell_centres()
        near = np.hypot(centres[:, 0], centres[:, 1]) <= self.max_range
        idx = np.flatnonzero(near)
        pts = np.column_stack([centres[idx], np.zeros(len(idx))])
        optical = (pts - self.pose.t) @ self.pose.R    # R^T (p - t), row-wise
        px = self.camera.project(optical)
        H, W = self.shape
        with np.errstate(invalid="ignore"):
            u = np.rint(px[:, 0])
            v = np.rint(px[:, 1])
            inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        u, v, idx = u[inside].astype(np.intp), v[inside].astype(np.intp), idx[inside]
        seen = self.valid[v, u]
        self.cell_index, self.cell_u, self.cell_v = idx[seen], u[seen], v[seen]

    def _cloud_xyz(self, stride: int) -> np.ndarray:
        """x, y, z of the organized cloud (rows, cols, 3) float32; NaN where no ground is seen."""
        xy = self.xy[::stride, ::stride]
        z = np.where(np.isnan(xy[..., 0]), np.nan, 0.0).astype(np.float32)
        return np.concatenate([xy, z[..., None]], axis=2)

    def range_error_per_row(self, distance: float) -> float:
        """Metres one row of error moves a ground point at `distance` (straight ahead, small-angle)."""
        f = float(self.camera.K[1, 1])
        return distance * distance / (f * float(self.pose.t[2]))
