# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The node's planner-facing outputs: CameraInfo pairing, extrinsics (parameters or TF) and publishing.

The maths lives in seg_perception.geometry (ROS-free); this module decides what a frame
needs (only outputs with subscribers are computed), finds the frame's CameraInfo and
camera pose, keeps the projection tables cached per geometry and reports problems
(rate-limited in the log, current state in /diagnostics) without touching the image outputs.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import ParameterType
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, LaserScan, PointCloud2
from std_msgs.msg import Header

from ..geometry import free_space
from ..geometry.camera_model import CameraModel, CameraModelError
from ..geometry.camera_pose import CameraPose, CameraPoseError
from ..geometry.free_space import OrganizedCloud
from ..geometry.ground_projection import (
    GridSpec,
    GroundProjection,
    GroundProjectionError,
)
from . import planner_messages as messages
from .throttled_log import ThrottledWarnings

try:  # on a ROS install; optional, so the package runs (with parameter extrinsics) without it
    import tf2_ros
    from rclpy.duration import Duration
    from rclpy.time import Time
except ImportError:  # pragma: no cover - depends on the installation
    tf2_ros = None

_S, _I, _D = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE
_DA = ParameterType.PARAMETER_DOUBLE_ARRAY
#: name: (type, default (None = no value: empty array), descriptor kwargs), as node.PARAMETERS.
GEOMETRY_PARAMETERS: dict[str, tuple[int, object, dict]] = {
    "base_frame": (_S, "base_footprint", dict(description=(
        "Frame of the geometric outputs (REP-105); its z = 0 plane is the ground"))),
    "camera_position": (_DA, None, dict(description=(
        "Camera position in base_frame [x, y, z] metres (x forward, y left, z up). With camera_rpy it "
        "wins over TF; empty = look the camera up in TF (base_frame <- the image's frame_id)"))),
    "camera_rpy": (_DA, None, dict(description=(
        "Camera body roll, pitch, yaw [rad] relative to base_frame (body x forward, y left, z up, "
        "fixed-axis as URDF); positive pitch looks down. The optical frame follows from it"))),
    "camera_info_wait": (_D, 0.05, dict(float_range=(0.0, 1.0), description=(
        "Seconds a frame waits for the CameraInfo with its stamp; then the latest CameraInfo is used "
        "(and /diagnostics says so)"))),
    "tf_timeout": (_D, 0.05, dict(float_range=(0.0, 5.0), description=(
        "Seconds a frame waits for its TF transform (when the camera pose comes from TF)"))),
    "max_range": (_D, 30.0, dict(float_range=(0.5, 1000.0), description=(
        "Metres from base_frame's origin beyond which ground points are not used: NaN in points, +inf "
        "in scan (where the ground stays in view out to it), where free_scan ends, unknown in grid. "
        "Range error grows as X^2/(f h) per row: see docs/planners.md"))),
    "points_stride": (_I, 1, dict(int_range=(1, 64), description=(
        "segmentation/points keeps every n-th row and column (1 = the labels' width and height, as "
        "Nav2's semantic segmentation layer needs)"))),
    "scan_angle_increment": (_D, 0.0, dict(float_range=(0.0, 1.0), description=(
        "Angle between scan beams [rad]; 0 = the field of view divided by the label image's width"))),
    "obstacle_point_height": (_D, 0.5, dict(float_range=(-10.0, 10.0), description=(
        "z [m] of the points in segmentation/obstacles (inside the costmap's min/max obstacle height)"))),
    "grid_resolution": (_D, 0.1, dict(float_range=(0.01, 10.0), description="Grid cell size [m]")),
    "grid_x_min": (_D, 0.0, dict(float_range=(-1000.0, 1000.0), description="Grid's back edge in base_frame [m]")),
    "grid_x_max": (_D, 40.0, dict(float_range=(-1000.0, 1000.0), description="Grid's front edge [m]")),
    "grid_y_min": (_D, -15.0, dict(float_range=(-1000.0, 1000.0), description="Grid's right edge [m]")),
    "grid_y_max": (_D, 15.0, dict(float_range=(-1000.0, 1000.0), description="Grid's left edge [m]")),
    "grid_boundary_cost": (_I, 70, dict(int_range=(0, 100), description=(
        "Grid value at boundary points of non-drivable classes that are not obstacles (kerb, wall, "
        "building); obstacle contact points are 100, seen drivable ground 0, the rest -1"))),
}
#: Seconds between two log lines about the same geometry problem.
PROBLEM_LOG_PERIOD = 5.0
#: The outputs made from the free-space boundary, which needs the drivable mask.
BOUNDARY_OUTPUTS = ("scan", "free_scan", "obstacles", "grid")
#: The outputs that need the ground projection.
GROUND_OUTPUTS = ("points", *BOUNDARY_OUTPUTS)
#: CameraInfo messages kept for pairing by stamp.
CAMERA_INFO_HISTORY = 60


@dataclass(frozen=True)
class GeometrySettings:
    """The geometry parameters, validated."""

    base_frame: str
    pose: CameraPose | None        # from camera_position/camera_rpy; None: from TF
    pose_error: str | None         # the parameters' pose cannot see the ground
    camera_info_wait: float
    tf_timeout: float
    max_range: float
    points_stride: int
    scan_angle_increment: float
    obstacle_point_height: float
    grid: GridSpec
    grid_boundary_cost: int


def build_geometry_settings(values: dict) -> GeometrySettings:
    """Raise ValueError naming the parameter for values no frame could use."""
    base_frame = str(values["base_frame"] or "").strip()
    if not base_frame:
        raise ValueError("base_frame is empty")
    position = list(values.get("camera_position") or [])
    rpy = list(values.get("camera_rpy") or [])
    pose, pose_error = None, None
    if position or rpy:
        if not (position and rpy):
            raise ValueError("camera_position and camera_rpy go together: set both (or neither, to use TF)")
        for name, v in (("camera_position", position), ("camera_rpy", rpy)):
            if len(v) != 3:
                raise ValueError(f"{name} needs 3 numbers, got {len(v)}")
        try:
            pose = CameraPose.from_position_rpy(position, rpy)
        except CameraPoseError as exc:
            pose_error = f"camera_position/camera_rpy: {exc}"
    try:
        grid = GridSpec(resolution=float(values["grid_resolution"]),
                        x_range=(float(values["grid_x_min"]), float(values["grid_x_max"])),
                        y_range=(float(values["grid_y_min"]), float(values["grid_y_max"])))
    except ValueError as exc:
        raise ValueError(f"grid_*: {exc}") from None
    for name in ("max_range", "camera_info_wait", "tf_timeout", "scan_angle_increment", "obstacle_point_height"):
        if not math.isfinite(float(values[name])):
            raise ValueError(f"{name} is not a finite number")
    return GeometrySettings(
        base_frame=base_frame, pose=pose, pose_error=pose_error,
        camera_info_wait=float(values["camera_info_wait"]), tf_timeout=float(values["tf_timeout"]),
        max_range=float(values["max_range"]), points_stride=int(values["points_stride"]),
        scan_angle_increment=float(values["scan_angle_increment"]),
        obstacle_point_height=float(values["obstacle_point_height"]), grid=grid,
        grid_boundary_cost=int(values["grid_boundary_cost"]))


_TF_LOCK = threading.Lock()


def shared_tf_buffer(node):
    """The node's tf2 Buffer, with one TransformListener: shared by its cameras, made on first use.

    The listener's subscriptions are spun by the node's own executor (spin_thread=False):
    tf2_ros_py's TransformListener(spin_thread=True) would add the whole node to a second executor
    (transform_listener.py, TransformListener.__init__), and its image callbacks with it.
    """
    with _TF_LOCK:
        tf = getattr(node, "_seg_tf", None)
        if tf is None:
            buffer = tf2_ros.Buffer()
            tf = node._seg_tf = (buffer, tf2_ros.TransformListener(buffer, node, spin_thread=False))
        return tf[0]


def release_tf(node) -> None:
    """Drop the node's TF listener (its subscriptions), if it has one."""
    with _TF_LOCK:
        tf = getattr(node, "_seg_tf", None)
        if tf is not None:
            tf[1].unregister()
            node._seg_tf = None


class GeometryProblem(Exception):
    """Why this frame has no geometric outputs; `key` groups it for the rate-limited log."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class GeometryOutputs:
    """Publishers, CameraInfo pairing, pose lookup and the cached projection of one camera.

    `prefix` is where the outputs go ('~/' for the single-camera node), `info_topic` the camera's
    CameraInfo, `label` the camera's name in /diagnostics when a node has several.
    """

    def __init__(self, node, *, out_qos, make_publisher=None, prefix: str = "~/", info_topic: str = "camera_info",
                 label: str = "") -> None:
        self.node = node
        make = make_publisher or node.create_publisher
        self.pub_info = make(CameraInfo, prefix + "camera_info", out_qos)
        self.pub_points = make(PointCloud2, prefix + "points", out_qos)
        self.pub_scan = make(LaserScan, prefix + "scan", out_qos)
        self.pub_free_scan = make(LaserScan, prefix + "free_scan", out_qos)
        self.pub_obstacles = make(PointCloud2, prefix + "obstacles", out_qos)
        self.pub_grid = make(OccupancyGrid, prefix + "grid", out_qos)
        self.label = label
        self.sub_info = None
        self._info_name = info_topic
        self.info_topic = node.resolve_topic_name(info_topic)
        self._infos: OrderedDict[tuple, CameraInfo] = OrderedDict()
        self._info_cond = threading.Condition()
        self._models: dict[tuple, CameraModel | CameraModelError] = {}
        self._projection_key = None
        self._projection: GroundProjection | None = None
        self._cloud: OrganizedCloud | None = None
        self._log = ThrottledWarnings(lambda text: node.get_logger().warning(text), period=PROBLEM_LOG_PERIOD,
                                      repeats="more frames since the last report")
        self.lock = threading.Lock()
        self.state = (DiagnosticStatus.OK, "no subscribers to the geometric outputs")
        self.counts = dict(published=0, unpaired=0, problems=0)
        self.recent_ms: list[float] = []
        self.blind_range = float("nan")

    # -- inputs ---------------------------------------------------------------------
    def open_input(self, info_qos) -> None:
        self.sub_info = self.node.create_subscription(CameraInfo, self._info_name, self._on_camera_info, info_qos,
                                                      qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self.info_topic = self.sub_info.topic_name

    def close_input(self) -> None:
        if self.sub_info is not None:
            self.node.destroy_subscription(self.sub_info)
            self.sub_info = None
        with self._info_cond:
            self._infos.clear()

    def close_outputs(self) -> None:
        for pub in (self.pub_info, self.pub_points, self.pub_scan, self.pub_free_scan, self.pub_obstacles,
                    self.pub_grid):
            self.node.destroy_publisher(pub)
        release_tf(self.node)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_cond:
            self._infos[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            while len(self._infos) > CAMERA_INFO_HISTORY:
                self._infos.popitem(last=False)
            self._info_cond.notify_all()

    def _camera_info_for(self, header: Header, wait: float) -> tuple[CameraInfo, bool]:
        """The CameraInfo stamped like the frame (waiting up to `wait` s), else the latest one."""
        key = (header.stamp.sec, header.stamp.nanosec)
        with self._info_cond:
            if self._infos:  # a camera that never sent one does not make every frame wait
                self._info_cond.wait_for(lambda: key in self._infos, timeout=wait)
            if key in self._infos:
                return self._infos[key], True
            if self._infos:
                return next(reversed(self._infos.values())), False
        raise GeometryProblem("no_camera_info", f"no CameraInfo received on {self.info_topic}")

    def _camera_model(self, info: CameraInfo) -> CameraModel:
        key = (info.width, info.height, tuple(info.k), tuple(info.d), info.distortion_model, tuple(info.p),
               info.binning_x, info.binning_y, info.roi.x_offset, info.roi.y_offset, info.roi.width,
               info.roi.height)
        model = self._models.get(key)
        if model is None:
            try:
                model = CameraModel.from_camera_info(
                    width=info.width, height=info.height, k=info.k, d=info.d, p=info.p,
                    distortion_model=info.distortion_model, binning_x=info.binning_x, binning_y=info.binning_y,
                    roi=(info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height))
            except CameraModelError as exc:
                model = exc
            if len(self._models) > 16:
                self._models.clear()
            self._models[key] = model
        if isinstance(model, CameraModelError):
            raise GeometryProblem("camera_info", f"CameraInfo on {self.info_topic}: {model}")
        return model

    def _pose(self, header: Header, settings: GeometrySettings) -> CameraPose:
        if settings.pose_error:
            raise GeometryProblem("extrinsics", settings.pose_error)
        if settings.pose is not None:
            return settings.pose
        if tf2_ros is None:
            raise GeometryProblem("extrinsics", "no camera pose: set camera_position and camera_rpy "
                                  "(tf2_ros is not installed, so TF cannot give it)")
        buffer = shared_tf_buffer(self.node)
        try:
            # Buffer.can_transform (tf2_ros_py buffer.py) polls with sleeps on the system clock: this runs on
            # a worker thread, so the node's executor keeps feeding /tf meanwhile.
            tf = buffer.lookup_transform(settings.base_frame, header.frame_id, Time.from_msg(header.stamp),
                                         timeout=Duration(seconds=settings.tf_timeout))
        except tf2_ros.TransformException as exc:
            raise GeometryProblem("tf", f"TF lookup {settings.base_frame} <- '{header.frame_id}' failed: "
                                  f"{exc}") from None
        t, q = tf.transform.translation, tf.transform.rotation
        try:
            # Rounded, so that a static or slowly moving mount reuses the cached projection tables.
            return CameraPose.from_transform(np.round([t.x, t.y, t.z], 3), np.round([q.x, q.y, q.z, q.w], 4))
        except CameraPoseError as exc:
            raise GeometryProblem("extrinsics", f"TF {settings.base_frame} <- '{header.frame_id}': {exc}") from None

    def _tables(self, camera: CameraModel, pose: CameraPose, settings: GeometrySettings) -> GroundProjection:
        key = (camera.key(), pose.key(), settings.max_range, settings.grid, settings.scan_angle_increment,
               settings.points_stride)
        if key != self._projection_key:
            self._projection_key, self._projection, self._cloud = key, None, None
            try:
                self._projection = GroundProjection(camera, pose, max_range=settings.max_range, grid=settings.grid,
                                                    scan_increment=settings.scan_angle_increment,
                                                    stride=settings.points_stride)
            except GroundProjectionError as exc:
                self._projection = exc
        if isinstance(self._projection, GroundProjectionError):
            raise GeometryProblem("no_ground", str(self._projection))
        return self._projection

    # -- per frame ---------------------------------------------------------------------
    def wanted(self) -> dict[str, bool]:
        return {name: pub.get_subscription_count() > 0 for name, pub in (
            ("camera_info", self.pub_info), ("points", self.pub_points), ("scan", self.pub_scan),
            ("free_scan", self.pub_free_scan), ("obstacles", self.pub_obstacles), ("grid", self.pub_grid))}

    def process(self, header: Header, labels: np.ndarray, confidence: np.ndarray | None, drivable: np.ndarray | None,
                obstacle_lut: np.ndarray, image_size: tuple[int, int], settings: GeometrySettings,
                wanted: dict[str, bool] | None = None) -> None:
        """Publish the geometric outputs somebody subscribes to; never raises for bad geometry.

        `drivable` (the drivable mask) is needed when scan, obstacles or grid are wanted.
        """
        wanted = wanted if wanted is not None else self.wanted()
        if not any(wanted.values()):
            self._set_state(DiagnosticStatus.OK, "no subscribers to the geometric outputs")
            return
        t0 = time.perf_counter()
        try:
            info, paired = self._camera_info_for(header, settings.camera_info_wait)
            camera = self._camera_model(info)
            try:
                camera.check_image_size(*image_size)
            except CameraModelError as exc:
                raise GeometryProblem("camera_info_size", f"CameraInfo on {self.info_topic}: {exc}") from None
            height, width = labels.shape
            out_camera = camera.scaled(width, height)
            if wanted["camera_info"]:
                self.pub_info.publish(messages.camera_info(out_camera, header))
            if any(wanted[k] for k in GROUND_OUTPUTS):
                self._publish_ground(header, labels, confidence, drivable, obstacle_lut, out_camera, settings, wanted)
        except GeometryProblem as problem:
            self._problem(problem)
            return
        except Exception as exc:  # a defect here must not cost the frame its image outputs
            self._problem(GeometryProblem("internal", f"{type(exc).__name__}: {exc}"))
            return
        elapsed = (time.perf_counter() - t0) * 1000.0
        with self.lock:
            self.counts["published"] += 1
            self.counts["unpaired"] += not paired
            self.recent_ms = (self.recent_ms + [elapsed])[-200:]
        if paired:
            self._set_state(DiagnosticStatus.OK, "geometric outputs published")
        else:
            self._set_state(DiagnosticStatus.WARN, f"no CameraInfo stamped like the frame on "
                            f"{self.info_topic}: using the latest one")

    def _publish_ground(self, header, labels, confidence, drivable, obstacle_lut, camera, settings, wanted) -> None:
        pose = self._pose(header, settings)
        proj = self._tables(camera, pose, settings)
        geo_header = Header(stamp=header.stamp, frame_id=settings.base_frame)
        if wanted["points"]:
            if self._cloud is None:
                self._cloud = OrganizedCloud(proj)
            self.pub_points.publish(messages.organized_cloud(self._cloud, labels, confidence, geo_header))
        self.blind_range = proj.blind_range
        if not any(wanted[k] for k in BOUNDARY_OUTPUTS):
            return
        boundary = free_space.find_boundary(proj, labels, drivable)
        if wanted["scan"]:
            self.pub_scan.publish(messages.scan(free_space.scan_ranges(proj, boundary), proj, geo_header))
        if wanted["free_scan"]:
            self.pub_free_scan.publish(messages.free_scan(free_space.free_ranges(proj, boundary), proj, geo_header))
        if wanted["obstacles"]:
            cols = free_space.obstacle_columns(boundary, obstacle_lut)
            conf = confidence[boundary.rows[cols], cols] if confidence is not None else np.zeros(len(cols), np.uint8)
            self.pub_obstacles.publish(messages.obstacle_cloud(boundary.xy[cols], boundary.labels[cols], conf,
                                                               settings.obstacle_point_height, geo_header))
        if wanted["grid"]:
            data = free_space.occupancy(proj, boundary, obstacle_lut, settings.grid_boundary_cost)
            self.pub_grid.publish(messages.occupancy_grid(data, settings.grid, geo_header))

    # -- reporting ------------------------------------------------------------------------
    def _set_state(self, level, message: str) -> None:
        with self.lock:
            self.state = (level, message)

    def _problem(self, problem: GeometryProblem) -> None:
        """WARN in /diagnostics; in the log at most once per PROBLEM_LOG_PERIOD per kind of problem."""
        message = f"geometric outputs skipped: {problem}"
        with self.lock:
            self.counts["problems"] += 1
            self.state = (DiagnosticStatus.WARN, message)
        self._log(problem.key, message)

    def diagnostic_status(self, settings: GeometrySettings | None) -> DiagnosticStatus:
        with self.lock:
            (level, message), counts, ms = self.state, dict(self.counts), list(self.recent_ms)
        status = DiagnosticStatus(name=f"{self.node.get_fully_qualified_name()}: ground projection"
                                  + (f" {self.label}" if self.label else ""),
                                  level=level, message=message, hardware_id="")
        pose_source = ("parameters" if settings and settings.pose is not None else "tf")
        status.values = [KeyValue(key=k, value=v) for k, v in (
            ("camera_info_topic", self.info_topic),
            ("base_frame", settings.base_frame if settings else ""),
            ("camera_pose_source", pose_source),
            ("frames_published_total", str(counts["published"])),
            ("frames_without_paired_camera_info_total", str(counts["unpaired"])),
            ("frames_skipped_total", str(counts["problems"])),
            ("geometry_mean_ms", f"{np.mean(ms):.2f}" if ms else "nan"),
            ("blind_range_m", f"{self.blind_range:.2f}"),
        )]
        return status
