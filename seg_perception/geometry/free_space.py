# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Per-frame planner outputs from a label image and a GroundProjection: only gathers and one scan per column.

The free-space boundary of a column is the first pixel, scanning up from the bottom row
through the pixels that see ground within max_range, whose class is not drivable. Its
ground point is where that object stands on the road: projecting it (and only it) puts
an obstacle where it is; projecting every obstacle pixel would smear a car far down the
road, since its upper pixels are not on the ground.

A boundary point is its pixel's ground point, the same point `segmentation/points` holds for
that pixel. The pixel's centre lies up to a row above the object's contact with the road, so
the point lies on average half a row beyond it: X^2 / (2 f h) metres at range X.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np

from .ground_projection import GroundProjection

#: OccupancyGrid values.
FREE, LETHAL, UNKNOWN = 0, 100, -1
#: Boundary row of a column that stays drivable out to max_range.
NO_BOUNDARY = -1


@dataclass
class Boundary:
    """The free-space boundary of one frame, one entry per image column."""

    rows: np.ndarray       # (W,) boundary row, NO_BOUNDARY where the column is drivable out to max_range
    hit: np.ndarray        # (W,) bool: the column has a boundary
    labels: np.ndarray     # (W,) class id at the boundary (0 where no hit)
    xy: np.ndarray         # (W, 2) ground point of the boundary (NaN where no hit)
    range: np.ndarray      # (W,) its distance from base_frame's origin (inf where no hit, NaN: no ground)


def find_boundary(proj: GroundProjection, labels: np.ndarray, drivable: np.ndarray) -> Boundary:
    """The boundary of `labels` (H, W uint8) given `drivable` (H, W: nonzero on drivable classes)."""
    top = proj.top_row
    H, W = proj.shape
    blocked = (drivable[top:] == 0) & proj.valid[top:]
    rev = blocked[::-1]
    first = rev.argmax(axis=0)
    cols = np.arange(W)
    hit = rev[first, cols]
    rows = np.where(hit, H - 1 - first, NO_BOUNDARY)
    r = np.where(hit, rows, 0)
    xy = np.where(hit[:, None], proj.xy[r, cols], np.nan)
    has_ground = ~np.isnan(proj.column_far_bearing)
    rng = np.where(hit, proj.range[r, cols], np.where(has_ground, np.inf, np.nan))
    return Boundary(rows=rows, hit=hit, labels=np.where(hit, labels[r, cols], 0), xy=xy, range=rng)


def scan_ranges(proj: GroundProjection, boundary: Boundary) -> np.ndarray:
    """LaserScan ranges (float32, proj.scan_beams) of `segmentation/scan`: the nearest boundary in each beam.

    A finite range is an obstacle boundary seen at that distance, and nothing else. +inf only where
    every column of the beam is drivable and sees ground out to max_range ("free to range_max", as
    REP-117 and Nav2's inf_is_valid read it); NaN where a beam's ground view ends short of
    max_range with no boundary (a camera pitched down, the image's top edge): no information, so
    nothing is marked or cleared on it. A lone beam or two that no column falls in (columns spread
    wider than beams at the edges of a wide-angle lens) take the nearer of their neighbours; other
    beams without a column stay NaN (outside the view, or hidden by the camera's offset).
    """
    seen = boundary.hit | proj.column_sees_max
    ranges = _per_beam(proj, boundary, np.where(seen, boundary.range, np.nan))
    short = ~seen & ~np.isnan(proj.column_far_bearing)       # drivable, but the view ends before max_range
    if short.any():
        beams = np.zeros(proj.scan_beams, bool)
        beams[_beam_of(proj, proj.column_far_bearing[short])] = True
        ranges[beams & np.isposinf(ranges)] = np.nan
    return ranges


def free_ranges(proj: GroundProjection, boundary: Boundary) -> np.ndarray:
    """Ranges (float32, proj.scan_beams) of `segmentation/free_scan`: how far each beam's ground was seen free.

    The boundary's distance where the beam has one, else the farthest ground its columns see (max_range
    where that ground stays in view out to max_range); the nearest over the columns in a beam, so a
    beam never claims more than all its columns saw. NaN where no column sees ground. Always finite
    otherwise: a costmap's clearing source raytraces exactly as far as the ground was seen.
    """
    far = np.where(proj.column_sees_max, np.float32(proj.max_range), proj.column_far_range)
    rng = np.where(boundary.hit, boundary.range, far)
    return _per_beam(proj, boundary, rng)


def _per_beam(proj: GroundProjection, boundary: Boundary, column_range: np.ndarray) -> np.ndarray:
    """The smallest `column_range` of the columns whose bearing falls in each beam (fmin: NaN loses)."""
    cols = np.arange(proj.shape[1])
    bearing = np.where(boundary.hit, proj.bearing[np.where(boundary.hit, boundary.rows, 0), cols],
                       proj.column_far_bearing)
    ok = ~np.isnan(bearing) & ~np.isnan(column_range)
    ranges = np.full(proj.scan_beams, np.nan, np.float32)
    np.fmin.at(ranges, _beam_of(proj, bearing[ok]), column_range[ok].astype(np.float32))
    return _fill_gaps(ranges)


def _beam_of(proj: GroundProjection, bearing: np.ndarray) -> np.ndarray:
    beam = np.rint((bearing - proj.scan_angle_min) / proj.scan_increment).astype(np.intp)
    return np.clip(beam, 0, proj.scan_beams - 1, out=beam)


def _fill_gaps(ranges: np.ndarray, longest: int = 2) -> np.ndarray:
    """Runs of at most `longest` NaN beams between measured ones take the smaller neighbour."""
    known = ~np.isnan(ranges)
    if known.all() or not known.any():
        return ranges
    idx = np.arange(len(ranges))
    left = np.maximum.accumulate(np.where(known, idx, -1))
    right = np.minimum.accumulate(np.where(known, idx, len(ranges))[::-1])[::-1]
    gap = ~known & (left >= 0) & (right < len(ranges)) & (right - left - 1 <= longest)
    ranges[gap] = np.minimum(ranges[left[gap]], ranges[right[gap]])
    return ranges


def obstacle_columns(boundary: Boundary, obstacle_lut: np.ndarray) -> np.ndarray:
    """The columns whose boundary class is an obstacle."""
    return np.flatnonzero(boundary.hit & (obstacle_lut[boundary.labels] > 0))


def obstacle_points(boundary: Boundary, obstacle_lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground points (N, 2) and classes (N,) of the boundary columns whose class is an obstacle."""
    cols = obstacle_columns(boundary, obstacle_lut)
    return boundary.xy[cols], boundary.labels[cols]


def occupancy(proj: GroundProjection, boundary: Boundary, obstacle_lut: np.ndarray,
              boundary_cost: int) -> np.ndarray:
    """OccupancyGrid data (int8, row-major): FREE below the boundary, LETHAL at obstacle contact
    points, `boundary_cost` at other boundary points (kerb, wall...), UNKNOWN elsewhere.
    """
    grid = np.full(proj.grid.width * proj.grid.height, UNKNOWN, np.int8)
    free = proj.cell_v > boundary.rows[proj.cell_u]
    grid[proj.cell_index[free]] = FREE
    cells = proj.grid.cell_index(boundary.xy[boundary.hit])
    obstacle = obstacle_lut[boundary.labels[boundary.hit]] > 0
    inside = cells >= 0
    if boundary_cost >= 0:
        grid[cells[inside & ~obstacle]] = boundary_cost
    grid[cells[inside & obstacle]] = LETHAL
    return grid


class OrganizedCloud:
    """The organized ground cloud's buffer (x, y, z float32, label, confidence uint8; 16 bytes a point).

    x, y, z are written once per geometry; a frame writes only label and confidence, in place.
    The buffer is an array.array('B') (`data`), which a PointCloud2 takes without a copy: at
    1280x720 a fresh 15 MB copy per frame would cost more than all the rest together. Whoever
    sends it must be done with it (rclpy's publish() serialises before it returns) before the
    next fill.
    """

    DTYPE = np.dtype({"names": ["x", "y", "z", "label", "confidence"],
                      "formats": ["<f4", "<f4", "<f4", "u1", "u1"],
                      "offsets": [0, 4, 8, 12, 13], "itemsize": 16})

    def __init__(self, proj: GroundProjection) -> None:
        xyz = proj.points_xyz
        self.stride = proj.stride
        self.height, self.width = xyz.shape[:2]
        self.data = array.array("B", bytes(self.height * self.width * self.DTYPE.itemsize))
        self.buffer = np.frombuffer(self.data, self.DTYPE).reshape(self.height, self.width)
        self.buffer["x"], self.buffer["y"], self.buffer["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]

    def fill(self, labels: np.ndarray, confidence: np.ndarray | None) -> np.ndarray:
        s = self.stride
        self.buffer["label"] = labels[::s, ::s]
        self.buffer["confidence"] = confidence[::s, ::s] if confidence is not None else 0
        return self.buffer


# -- what a planner makes of it: the free distance straight ahead (free_space_monitor, demo) --

def grid_free_distance(data: np.ndarray, *, width: int, height: int, resolution: float, origin_x: float,
                       origin_y: float, corridor_width: float, corridor_start: float,
                       occupied_threshold: int) -> float:
    """Free metres ahead of x = corridor_start in the corridor |y| <= corridor_width / 2 (0 if none seen)."""
    cells = np.asarray(data, np.int16).reshape(height, width)          # rows along y, columns along x
    ys = origin_y + (np.arange(height) + 0.5) * resolution
    xs = origin_x + (np.arange(width) + 0.5) * resolution
    rows = np.abs(ys) <= corridor_width / 2
    cols = xs >= corridor_start
    if not rows.any() or not cols.any():
        return 0.0
    corridor = cells[np.ix_(rows, cols)]                                # (corridor cells across, x ahead)
    x_edges = xs[cols] - resolution / 2                                 # near edge of each column of cells
    blocked = (corridor >= occupied_threshold).any(axis=0)
    if blocked.any():
        return max(float(x_edges[np.argmax(blocked)]) - corridor_start, 0.0)
    seen_free = (corridor == 0).any(axis=0)
    if not seen_free.any():
        return 0.0
    return float(x_edges[np.flatnonzero(seen_free)[-1]] + resolution) - corridor_start


def scan_free_distance(ranges: np.ndarray, angle_min: float, angle_increment: float, range_max: float, *,
                       corridor_width: float, corridor_start: float) -> float:
    """Free metres ahead from the beams' end points inside the corridor (segmentation/scan's meaning).

    Without a boundary in the corridor: range_max if a beam down the corridor is +inf (free to
    range_max), else 0: NaN beams saw nothing (the view ends short of range_max), as the grid's
    unknown cells, so they clear nothing.
    """
    r = np.asarray(ranges, np.float64)
    angles = angle_min + angle_increment * np.arange(len(r))
    hits = np.isfinite(r)
    with np.errstate(invalid="ignore"):
        x, y = r * np.cos(angles), r * np.sin(angles)
    inside = hits & (np.abs(y) <= corridor_width / 2) & (x >= corridor_start)
    if inside.any():
        return max(float(x[inside].min()) - corridor_start, 0.0)
    down_corridor = np.abs(range_max * np.sin(angles)) <= corridor_width / 2
    if (np.isposinf(r) & down_corridor & (np.cos(angles) > 0)).any():
        return max(float(range_max) - corridor_start, 0.0)
    return 0.0
