# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The camera's intrinsics as a CameraInfo states them, for the image actually segmented.

ROS-free: built from CameraInfo's fields (plain numbers), so the node, the CLI and the
tests share one validated model. Conventions follow sensor_msgs/CameraInfo and
image_geometry: `width`/`height`, K, D and P describe the full-resolution calibration;
the ROI (in full-resolution pixels) and then binning make the published image, and
image_geometry folds them into K and P as fx/bx, (cx - x_offset)/bx. Resizing that image
to another output size maps pixel centres onto pixel centres (as cv2.resize does).
Distortion coefficients act on normalised coordinates, so one D serves every such
affinely mapped K.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: CameraInfo distortion_model -> the number of coefficients in D (an empty D means none).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
#: Undistortion iterations: exact to well under a thousandth of a pixel for lenses ROS drivers ship.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-9)


class CameraModelError(ValueError):
    """A CameraInfo that cannot describe the image (bad K, unknown model, size mismatch...)."""


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of an image of `width` x `height` pixels: K (3x3), P (3x4), D and its model."""

    width: int
    height: int
    K: np.ndarray
    P: np.ndarray
    D: np.ndarray
    distortion_model: str

    @classmethod
    def from_camera_info(cls, *, width: int, height: int, k, d=(), distortion_model: str = "", p=None,
                         binning_x: int = 0, binning_y: int = 0,
                         roi: tuple[int, int, int, int] = (0, 0, 0, 0)) -> "CameraModel":
        """The model of the published image: the calibration with ROI and binning folded in.

        `roi` is (x_offset, y_offset, width, height) in full-resolution pixels, all zeros for
        the full frame. Raises CameraModelError naming the field at fault.
        """
        K = np.asarray(k, np.float64).reshape(-1)
        if K.size != 9:
            raise CameraModelError(f"K has {K.size} values, expected 9")
        K = K.reshape(3, 3)
        if not np.all(np.isfinite(K)):
            raise CameraModelError("K contains NaN or infinite values")
        fx, fy = K[0, 0], K[1, 1]
        if not (fx > 0 and fy > 0):
            raise CameraModelError(f"K has focal lengths fx={fx:g}, fy={fy:g}; both must be positive "
                                   "(an all-zero K means the camera is uncalibrated)")
        if K[2, 2] != 1.0 or K[1, 0] != 0.0 or K[2, 0] != 0.0 or K[2, 1] != 0.0:
            raise CameraModelError(f"K is not an intrinsic matrix (bottom rows {K[1:].tolist()})")
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise CameraModelError(f"calibrated size {width}x{height} is not positive")
        model = str(distortion_model or "")
        D = np.asarray(d if d is not None else (), np.float64).reshape(-1)
        if not np.all(np.isfinite(D)):
            raise CameraModelError("D contains NaN or infinite values")
        if D.size and not np.any(D):
            D = D[:0]  # all-zero coefficients: no distortion, whatever the model says
        if D.size:
            if model not in DISTORTION_MODELS:
                raise CameraModelError(f"distortion model '{model}' is not supported; supported: "
                                       f"{sorted(DISTORTION_MODELS)}")
            if D.size != DISTORTION_MODELS[model]:
                raise CameraModelError(f"distortion model '{model}' takes {DISTORTION_MODELS[model]} "
                                       f"coefficients, D has {D.size}")
        elif model and model not in DISTORTION_MODELS and model != "none":
            raise CameraModelError(f"distortion model '{model}' is not supported; supported: "
                                   f"{sorted(DISTORTION_MODELS)}")
        P = np.asarray(p, np.float64).reshape(-1) if p is not None else np.zeros(12)
        if P.size != 12 or not np.all(np.isfinite(P)) or not (P[0] > 0 and P[5] > 0):
            P = np.hstack([K, np.zeros((3, 1))]).reshape(-1)  # no projection matrix: the camera's own
        P = P.reshape(3, 4)

        bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
        x0, y0, rw, rh = (int(v) for v in roi)
        if rw == 0 and rh == 0 and x0 == 0 and y0 == 0:
            rw, rh = width, height
        if rw <= 0 or rh <= 0 or x0 < 0 or y0 < 0 or x0 + rw > width or y0 + rh > height:
            raise CameraModelError(f"ROI (x {x0}, y {y0}, {rw}x{rh}) does not lie inside the calibrated "
                                   f"{width}x{height} frame")
        fold = np.array([[1 / bx, 0, -x0 / bx], [0, 1 / by, -y0 / by], [0, 0, 1]])
        return cls(width=rw // bx, height=rh // by, K=fold @ K, P=fold @ P, D=D,
                   distortion_model=model if D.size else "plumb_bob")

    # -- derived models ------------------------------------------------------------
    def scaled(self, width: int, height: int) -> "CameraModel":
        """The same camera for the image resized to width x height (pixel centres onto centres)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        A = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        return CameraModel(width=int(width), height=int(height), K=A @ self.K, P=A @ self.P, D=self.D,
                           distortion_model=self.distortion_model)

    def check_image_size(self, width: int, height: int) -> None:
        """Raise CameraModelError unless the CameraInfo describes images of this size."""
        if (int(width), int(height)) != (self.width, self.height):
            raise CameraModelError(f"CameraInfo describes {self.width}x{self.height} images (after ROI and "
                                   f"binning) but the image is {width}x{height}")

    # -- projection -------------------------------------------------------------------
    def pixel_rays(self) -> np.ndarray:
        """Unit-depth rays (x, y, 1) in the optical frame through every pixel's centre, shape (H, W, 3)."""
        us = np.arange(self.width, dtype=np.float64)
        vs = np.arange(self.height, dtype=np.float64)
        uu, vv = np.meshgrid(us, vs)
        pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
        norm = self.undistort(pts).reshape(len(vs), len(us), 2)
        return np.concatenate([norm, np.ones(norm.shape[:2] + (1,))], axis=2)

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised image coordinates (x/z, y/z) of pixel positions, shape (N, 1, 2)."""
        pts = np.ascontiguousarray(pixels, np.float64).reshape(-1, 1, 2)
        if not self.D.size:  # pinhole: invert K (with its skew) directly
            (fx, s, cx), (_, fy, cy) = self.K[0], self.K[1]
            out = np.empty_like(pts)
            out[..., 1] = (pts[..., 1] - cy) / fy
            out[..., 0] = (pts[..., 0] - cx - s * out[..., 1]) / fx
            return out
        if self.distortion_model == "equidistant":
            return cv2.fisheye.undistortPoints(pts, self.K, self.D, criteria=_UNDISTORT_CRITERIA)
        return cv2.undistortPoints(pts, self.K, self.D, R=None, P=None, criteria=_UNDISTORT_CRITERIA)

    def project(self, points_optical: np.ndarray) -> np.ndarray:
        """Pixel positions of 3-D points in the optical frame (N, 3) -> (N, 2); NaN behind the camera."""
        pts = np.asarray(points_optical, np.float64).reshape(-1, 1, 3)
        front = pts[:, 0, 2] > 1e-9
        out = np.full((pts.shape[0], 2), np.nan)
        if not front.any():
            return out
        zero = np.zeros(3)
        if self.distortion_model == "equidistant" and self.D.size:
            px, _ = cv2.fisheye.projectPoints(pts[front], zero, zero, self.K, self.D)
        else:
            px, _ = cv2.projectPoints(pts[front], zero, zero, self.K, self.D if self.D.size else None)
        out[front] = px.reshape(-1, 2)
        return out

    def key(self) -> tuple:
        """Hashable identity for caches keyed by the camera model."""
        return (self.width, self.height, self.K.tobytes(), self.D.tobytes(), self.distortion_model)
