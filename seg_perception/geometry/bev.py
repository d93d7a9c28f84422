# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""A bird's-eye picture of one frame's occupancy grid, for the demo and for checking a calibration.

Forward (+x) is up and left (+y) is left, as a driver sees the road from above; the vehicle's
corridor straight ahead and its free distance are drawn over the cells.
"""
from __future__ import annotations

import cv2
import numpy as np

from .free_space import FREE, LETHAL, UNKNOWN
from .ground_projection import GridSpec

COLOURS = {"unknown": (60, 60, 60), "free": (90, 200, 90), "lethal": (230, 40, 40), "boundary": (240, 160, 40),
           "corridor": (80, 160, 255), "text": (255, 255, 255)}


def draw_bev(grid_values: np.ndarray, grid: GridSpec, *, height: int = 360, free_distance: float | None = None,
             corridor_width: float | None = None, corridor_start: float = 0.0) -> np.ndarray:
    """RGB image (height rows) of an OccupancyGrid's values (row-major, rows along y)."""
    cells = np.asarray(grid_values, np.int16).reshape(grid.height, grid.width)     # [iy, ix]
    img = np.empty(cells.shape + (3,), np.uint8)
    img[:] = COLOURS["unknown"]
    img[cells == FREE] = COLOURS["free"]
    img[(cells > FREE) & (cells < LETHAL)] = COLOURS["boundary"]
    img[cells >= LETHAL] = COLOURS["lethal"]
    img[cells == UNKNOWN] = COLOURS["unknown"]
    # rows of the picture: x from far (top) to near; columns: y from left (+y) to right (-y)
    img = np.ascontiguousarray(img.transpose(1, 0, 2)[::-1, ::-1])
    scale = height / img.shape[0]
    width = max(int(round(img.shape[1] * scale)), 1)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_NEAREST)

    def to_px(x: float, y: float) -> tuple[int, int]:
        col = (grid.y_range[1] - y) / grid.resolution * scale
        row = (grid.x_range[1] - x) / grid.resolution * scale
        return int(round(col)), int(round(row))

    for metres in range(10, int(grid.x_range[1]) + 1, 10):  # range rings every 10 m
        if metres > grid.x_range[0]:
            cv2.line(img, to_px(metres, grid.y_range[1]), to_px(metres, grid.y_range[0]), (120, 120, 120), 1)
            cv2.putText(img, f"{metres} m", (4, to_px(metres, 0)[1] - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        COLOURS["text"], 1, cv2.LINE_AA)
    if corridor_width:
        half = corridor_width / 2
        far = corridor_start + (free_distance if free_distance is not None else 0.0)
        cv2.rectangle(img, to_px(far, half), to_px(corridor_start, -half), COLOURS["corridor"], 2)
        if free_distance is not None:
            cv2.putText(img, f"free {free_distance:.1f} m", (4, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        COLOURS["text"], 1, cv2.LINE_AA)
    cv2.drawMarker(img, to_px(0.0, 0.0), (255, 255, 255), cv2.MARKER_TRIANGLE_UP, 12, 2)
    return img
