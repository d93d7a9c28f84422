# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Where the camera is: the optical frame's pose in the planner's base frame.

REP-103 conventions. The camera's body frame is x forward, y left, z up; its roll, pitch
and yaw are fixed-axis rotations about base_frame's x, y, z (as URDF and tf2's setRPY),
so a positive pitch turns x towards -z: the camera looks down. The optical frame
(z forward, x right, y down), the frame images are stamped in, follows from the body.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Columns are the optical frame's axes in the camera body frame: x_opt = -y, y_opt = -z, z_opt = x.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class CameraPoseError(ValueError):
    """Extrinsics that cannot see the ground (camera at or under it, bad numbers)."""


def rotation_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) Ry(pitch) Rx(roll): fixed-axis roll, pitch, yaw as URDF and tf2 use them."""
    cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                              math.cos(yaw), math.sin(yaw))
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a (normalised here) quaternion, as geometry_msgs carries it."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 1e-9 or not math.isfinite(n):
        raise CameraPoseError(f"quaternion ({x}, {y}, {z}, {w}) is not a rotation")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass(frozen=True)
class CameraPose:
    """The optical frame in base_frame: p_base = R @ p_optical + t. The ground is base_frame's z = 0."""

    R: np.ndarray
    t: np.ndarray

    @classmethod
    def from_position_rpy(cls, position, rpy) -> "CameraPose":
        """From the camera_position (x, y, z metres) and camera_rpy (radians) parameters."""
        t = _vector(position, "camera_position")
        r = _vector(rpy, "camera_rpy")
        return cls(R=rotation_from_rpy(*r) @ BODY_FROM_OPTICAL, t=t).checked()

    @classmethod
    def from_transform(cls, translation, quaternion) -> "CameraPose":
        """From a TF transform base_frame <- optical frame (translation xyz, quaternion xyzw)."""
        t = _vector(translation, "translation")
        return cls(R=rotation_from_quaternion(*_vector(quaternion, "rotation", 4)), t=t).checked()

    def checked(self) -> "CameraPose":
        if not self.t[2] > 0:
            raise CameraPoseError(f"the camera is at z = {self.t[2]:g} m in the base frame: at or under the "
                                  "ground plane (z = 0), so no pixel can be projected onto the ground")
        return self

    def key(self) -> tuple:
        return (np.round(self.R, 9).tobytes(), np.round(self.t, 9).tobytes())


def _vector(values, name: str, n: int = 3) -> np.ndarray:
    try:
        v = np.asarray(list(values), np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CameraPoseError(f"{name} must be {n} numbers, got {values!r}") from None
    if v.size != n:
        raise CameraPoseError(f"{name} must be {n} numbers, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise CameraPoseError(f"{name} contains NaN or infinite values: {v.tolist()}")
    return v
