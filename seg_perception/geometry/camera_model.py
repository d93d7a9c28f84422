# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The camera's intrinsics as a CameraInfo states them, for the image actually segmented.

ROS-free: built from CameraInfo's fields (plain numbers), so the node, the CLI and the
tests share one validated model. Conventions follow sensor_msgs/CameraInfo and
image_geometry: `width`/`height`, K, D and P describe the full-resolution calibration;
the ROI (in full-resolution pixels) and then binning make the published image, and
binning is folded in by pixel centres: a super-pixel of bx sensor pixels lies at their mean
centre, so u_binned = (u_full - x_offset + 0.5) / bx - 0.5 (image_geometry's fx/bx,
(cx - x_offset)/bx puts it at their first pixel's corner, a quarter pixel off at binning 2).
Resizing to another output size maps pixel centres onto pixel centres too (as cv2.resize
does): one convention everywhere. Distortion coefficients act on normalised coordinates, so
one D serves every such affinely mapped K.

The lens models are written here from their formulas (OpenCV's and CameraInfo's
conventions), both ways, so that projecting and undistorting agree: K's skew K[0,1] is
honoured by both (OpenCV's undistortPoints and projectPoints ignore it), undistortion is
solved by Newton's method to 1e-3 px or the pixel gets no ray (NaN: beyond the lens model's
fold, where no ray maps to it), and an equidistant pixel 90 degrees or more off the optical
axis gets no ray (a unit-depth ray cannot point sideways or back; OpenCV's fisheye
undistortion clips theta at pi/2 and returns a reversed ray).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: CameraInfo distortion_model -> the number of coefficients in D (an empty D means none).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
#: Undistortion: Newton iterations at most, and the reprojection error (pixels) a ray must reach.
_NEWTON_ITERATIONS = 60
_UNDISTORT_TOLERANCE_PX = 1e-3


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
        if D.size and not np.any(D) and model != "equidistant":
            D = D[:0]  # all-zero coefficients: a pinhole (an equidistant lens with zero D is still a fisheye)
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
        # Pixel centres: a super-pixel of bx sensor pixels is seen at their mean centre (module docstring).
        fold = np.array([[1 / bx, 0, (0.5 - x0) / bx - 0.5], [0, 1 / by, (0.5 - y0) / by - 0.5], [0, 0, 1]])
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
        """Normalised image coordinates (x/z, y/z) of pixel positions, shape (N, 1, 2); NaN where no ray
        in front of the camera maps to the pixel (beyond the lens model's fold, or 90 deg off axis).
        """
        pts = np.ascontiguousarray(pixels, np.float64).reshape(-1, 2)
        (fx, skew, cx), (_, fy, cy) = self.K[0], self.K[1]
        yd = (pts[:, 1] - cy) / fy
        xd = (pts[:, 0] - cx - skew * yd) / fx
        if not self.D.size:
            out = np.stack([xd, yd], axis=1)
        elif self.distortion_model == "equidistant":
            out = self._undistort_equidistant(xd, yd)
        else:
            out = self._undistort_polynomial(xd, yd)
        return out.reshape(-1, 1, 2)

    def _undistort_equidistant(self, xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
        """theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8), solved for theta in
        [0, pi/2) by Newton's method; theta must be where theta_d still grows with it.
        """
        k1, k2, k3, k4 = self.D
        rd = np.hypot(xd, yd)
        f = lambda t: t * (1 + t**2 * (k1 + t**2 * (k2 + t**2 * (k3 + t**2 * k4))))          # noqa: E731
        df = lambda t: 1 + t**2 * (3 * k1 + t**2 * (5 * k2 + t**2 * (7 * k3 + t**2 * 9 * k4)))  # noqa: E731
        theta = np.minimum(rd, 1.5)
        for _ in range(_NEWTON_ITERATIONS):
            slope = df(theta)
            step = np.where(slope > 1e-6, (f(theta) - rd) / np.where(slope > 1e-6, slope, 1.0), 0.0)
            theta = np.clip(theta - np.clip(step, -0.2, 0.2), 0.0, math.pi / 2)
        scale = max(abs(self.K[0, 0]), abs(self.K[1, 1]))
        ok = ((np.abs(f(theta) - rd) * scale <= _UNDISTORT_TOLERANCE_PX) & (df(theta) > 0)
              & (theta < math.pi / 2 - 1e-9))
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(rd > 1e-12, np.tan(theta) / rd, 1.0)
        out = np.stack([xd * gain, yd * gain], axis=1)
        out[~ok] = np.nan
        return out

    def _undistort_polynomial(self, xd: np.ndarray, yd: np.ndarray) -> np.ndarray:
        """plumb_bob / rational_polynomial inverted by Newton's method on the forward model (2x2 Jacobian
        per point), from the distorted coordinates; points whose Jacobian folds over get no ray.
        """
        target = np.stack([xd, yd], axis=1)
        # OpenCV's fixed-point iteration (without the skew, taken out above) is a fast first guess that
        # is exact for ordinary lenses; Newton's method then finishes the points it left short.
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        K0 = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        guess = cv2.undistortPoints(np.stack([fx * xd + cx, fy * yd + cy], axis=1).reshape(-1, 1, 2), K0, self.D,
                                    criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-12))
        x = guess.reshape(-1, 2).copy()
        bad = ~np.isfinite(x).all(axis=1)
        x[bad] = target[bad]
        scale = max(abs(fx), abs(fy))
        active = np.arange(len(x))
        for _ in range(_NEWTON_ITERATIONS):
            if not active.size:
                break
            p = x[active]
            err = self._distort(p) - target[active]
            done = np.abs(err).max(axis=1) * scale <= _UNDISTORT_TOLERANCE_PX * 0.1
            J = self._jacobian(p)
            det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
            safe = np.abs(det) > 1e-12
            det = np.where(safe, det, 1.0)
            dx = (J[:, 1, 1] * err[:, 0] - J[:, 0, 1] * err[:, 1]) / det
            dy = (-J[:, 1, 0] * err[:, 0] + J[:, 0, 0] * err[:, 1]) / det
            step = np.stack([dx, dy], axis=1)
            norm = np.hypot(dx, dy)
            step *= np.minimum(1.0, 0.5 * (1.0 + np.hypot(p[:, 0], p[:, 1])) / np.maximum(norm, 1e-300))[:, None]
            x[active] = np.where((safe & ~done)[:, None], p - step, p)
            active = active[~done & safe]
        err = np.abs(self._distort(x) - target).max(axis=1) * scale
        J = self._jacobian(x)
        det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
        x[~((err <= _UNDISTORT_TOLERANCE_PX) & (det > 0))] = np.nan
        return x

    def _distort(self, p: np.ndarray) -> np.ndarray:
        """Distorted normalised coordinates of undistorted ones (N, 2), plumb_bob or rational_polynomial."""
        x, y = p[:, 0], p[:, 1]
        D = self.D
        k1, k2, p1, p2, k3 = D[:5]
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        if self.distortion_model == "rational_polynomial":
            k4, k5, k6 = D[5:8]
            radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                         y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], axis=1)

    def _jacobian(self, p: np.ndarray, h: float = 1e-7) -> np.ndarray:
        """D distorted / d undistorted (N, 2, 2) by central differences."""
        J = np.empty((len(p), 2, 2))
        for k in range(2):
            e = np.zeros(2)
            e[k] = h
            J[:, :, k] = (self._distort(p + e) - self._distort(p - e)) / (2 * h)
        return J

    def project(self, points_optical: np.ndarray) -> np.ndarray:
        """Pixel positions of 3-D points in the optical frame (N, 3) -> (N, 2); NaN behind the camera
        (and, for an equidistant lens, 90 deg or more off its axis, as undistort).
        """
        pts = np.asarray(points_optical, np.float64).reshape(-1, 3)
        out = np.full((pts.shape[0], 2), np.nan)
        front = pts[:, 2] > 1e-9
        if not front.any():
            return out
        x, y = pts[front, 0] / pts[front, 2], pts[front, 1] / pts[front, 2]
        if self.D.size and self.distortion_model == "equidistant":
            r = np.hypot(x, y)
            theta = np.arctan(r)
            k1, k2, k3, k4 = self.D
            theta_d = theta * (1 + theta**2 * (k1 + theta**2 * (k2 + theta**2 * (k3 + theta**2 * k4))))
            gain = np.where(r > 1e-12, theta_d / np.where(r > 1e-12, r, 1.0), 1.0)
            xd, yd = x * gain, y * gain
        elif self.D.size:
            xd, yd = self._distort(np.stack([x, y], axis=1)).T
        else:
            xd, yd = x, y
        (fx, skew, cx), (_, fy, cy) = self.K[0], self.K[1]
        out[front] = np.stack([fx * xd + skew * yd + cx, fy * yd + cy], axis=1)
        return out

    def key(self) -> tuple:
        """Hashable identity for caches keyed by the camera model."""
        return (self.width, self.height, self.K.tobytes(), self.D.tobytes(), self.distortion_model)
