# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""A camera calibration file: intrinsics as ROS's camera_calibration writes them, plus the mount.

The format is camera_calibration_parsers' YAML (what `ros2 run camera_calibration cameracalibrator`
saves and camera drivers load: image_width, image_height, camera_matrix, distortion_model,
distortion_coefficients, projection_matrix), with two more keys for the camera's pose in
base_frame: camera_position [x, y, z] m and camera_rpy [roll, pitch, yaw] rad, as the node's
parameters of the same names. The demo and `seg-perception predict --bev` read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .camera_model import CameraModel, CameraModelError
from .camera_pose import CameraPose, CameraPoseError


class CalibrationError(ValueError):
    """A calibration file that cannot be read; the message names the file and the key."""


@dataclass(frozen=True)
class Calibration:
    camera: CameraModel
    pose: CameraPose
    position: tuple[float, float, float]
    rpy: tuple[float, float, float]
    source: str

    def for_image(self, width: int, height: int) -> CameraModel:
        """The intrinsics for frames of this size (a calibration made at another resolution is scaled)."""
        return self.camera.scaled(width, height)


def _matrix(data: dict, key: str, n: int, path: Path) -> list[float]:
    value = data.get(key)
    if isinstance(value, dict):
        value = value.get("data")
    if value is None:
        return []
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: {key} must be a list of numbers") from None
    if n and len(values) != n:
        raise CalibrationError(f"{path}: {key} has {len(values)} values, expected {n}")
    return values


def load_calibration(path, *, position=None, rpy=None) -> Calibration:
    """Read a calibration file; `position` / `rpy` override the file's camera_position / camera_rpy."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationError(f"{path}: cannot read it as YAML ({exc})") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a mapping of calibration keys")
    for key in ("image_width", "image_height", "camera_matrix"):
        if key not in data:
            raise CalibrationError(f"{path}: missing '{key}'")
    k = _matrix(data, "camera_matrix", 9, path)
    d = _matrix(data, "distortion_coefficients", 0, path)
    p = _matrix(data, "projection_matrix", 12, path) or None
    try:
        camera = CameraModel.from_camera_info(width=int(data["image_width"]), height=int(data["image_height"]), k=k,
                                              d=d, p=p, distortion_model=str(data.get("distortion_model", "")))
    except (CameraModelError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: {exc}") from None
    position = list(position) if position is not None else _matrix(data, "camera_position", 3, path)
    rpy = list(rpy) if rpy is not None else _matrix(data, "camera_rpy", 3, path)
    if not position or not rpy:
        raise CalibrationError(f"{path}: camera_position and camera_rpy are needed for ground projection")
    try:
        pose = CameraPose.from_position_rpy(position, rpy)
    except CameraPoseError as exc:
        raise CalibrationError(f"{path}: {exc}") from None
    return Calibration(camera=camera, pose=pose, position=tuple(map(float, position)), rpy=tuple(map(float, rpy)),
                       source=str(path))
