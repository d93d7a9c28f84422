# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The planner-facing outputs over real DDS: real CamVid frames with a CameraInfo, the node as a process.

The geometry itself is checked against a known scene in test_geometry.py; here the node must
pair CameraInfo by stamp, stamp and frame every output, keep the cloud organized like the labels,
publish what the ROS-free core computes from its own labels, skip only the geometric outputs on
bad geometry input, and feed free_space_monitor end to end.
"""
from __future__ import annotations

import math
import signal
import time

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import SAMPLES, NodeProcess, RosProbe, node_args, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2, Range
from std_msgs.msg import Bool, Header

from seg_perception.classes import CAMVID
from seg_perception.geometry import free_space as fs
from seg_perception.geometry.camera_model import CameraModel
from seg_perception.geometry.camera_pose import CameraPose
from seg_perception.geometry.free_space import OrganizedCloud, grid_free_distance
from seg_perception.geometry.ground_projection import GridSpec, GroundProjection
from seg_perception.inference.masks import group_lut
from seg_perception.learning.datasets import read_rgb
from seg_perception.ros.ros_image import rgb_to_image

CAMERA = "/pc_cam/image_raw"
INFO = "/pc_cam/camera_info"
BASE = "base_footprint"
POSITION = [1.2, 0.0, 1.3]
RPY = [0.0, 0.1, 0.0]
F, CX, CY = 400.0, 239.5, 179.5
MAX_RANGE = 30.0
STOP_DISTANCE = 8.0
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
START_TIMEOUT = 180.0
TIMEOUT = 60.0
GEOMETRIC = {"camera_info": CameraInfo, "points": PointCloud2, "scan": LaserScan, "free_scan": LaserScan,
             "obstacles": PointCloud2, "grid": OccupancyGrid}
IMAGES = ("labels", "confidence")


def camera_info(header: Header, *, width=480, height=360, f=F, cx=CX, cy=CY, d=(), model="plumb_bob",
                binning=0, roi=(0, 0, 0, 0)) -> CameraInfo:
    msg = CameraInfo(header=header, width=width, height=height, distortion_model=model, d=list(d),
                     k=[f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                     p=[f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0], binning_x=binning, binning_y=binning)
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = roi
    return msg


class GeoProbe(RosProbe):
    """Publishes frames and CameraInfo; records every output by stamp."""

    def __init__(self, tag: str, namespace: str = "/segmentation") -> None:
        super().__init__(f"geo_probe_{tag}")
        self.pub_image = self.node.create_publisher(Image, CAMERA, RELIABLE)
        self.pub_info = self.node.create_publisher(CameraInfo, INFO, RELIABLE)
        self.received: dict[str, dict] = {}
        self.subs = {}
        for name, mtype in [(t, Image) for t in IMAGES] + list(GEOMETRIC.items()):
            self.subs[name] = self._subscribe(f"{namespace}/{name}", name, mtype)
        self._subscribe("/free_space/distance", "distance", Range)
        self._subscribe("/free_space/stop", "stop", Bool, by_stamp=False)
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.param_client = self.node.create_client(SetParameters, f"{namespace}/set_parameters")
        self.stamp_sec = 2000
        self.proc: NodeProcess | None = None

    def _subscribe(self, topic, name, mtype, by_stamp=True):
        self.received[name] = {} if by_stamp else []

        def store(msg, name=name):
            if by_stamp:
                self.received[name][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            else:
                self.received[name].append(msg)
        return self.node.create_subscription(mtype, topic, store, RELIABLE)

    def header(self) -> Header:
        self.stamp_sec += 1
        return Header(stamp=Time(sec=self.stamp_sec, nanosec=5), frame_id="pc_cam_optical_frame")

    def send(self, rgb: np.ndarray, info: CameraInfo | None, header: Header) -> tuple:
        if info is not None:
            self.pub_info.publish(info)
        self.pub_image.publish(rgb_to_image(rgb, "rgb8", header))
        return (header.stamp.sec, header.stamp.nanosec)

    def wait(self, key, names, timeout: float = TIMEOUT) -> dict:
        ok = wait_for(lambda: all(key in self.received[n] for n in names), timeout, self.spin)
        log = self.proc.output()[-3000:] if self.proc is not None else ""
        assert ok, f"no {[n for n in names if key not in self.received[n]]} for frame {key}\n{log}"
        return {n: self.received[n][key] for n in names}

    def ground_status(self, after: float, timeout: float = 30.0) -> DiagnosticStatus:
        """The ground projection status of the first /diagnostics message made after `after`."""
        marker = len(self.diagnostics)
        assert wait_for(lambda: len(self.diagnostics) > marker + 1 and time.monotonic() > after, timeout, self.spin)
        return next(s for s in self.diagnostics[-1].status if s.name.endswith("ground projection"))

    def set_parameters(self, **values) -> list:
        assert self.param_client.wait_for_service(timeout_sec=30.0)
        req = SetParameters.Request()
        for name, value in values.items():
            pv = ParameterValue()
            if isinstance(value, str):
                pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
            elif isinstance(value, float):
                pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
            else:
                pv.type, pv.double_array_value = ParameterType.PARAMETER_DOUBLE_ARRAY, [float(v) for v in value]
            req.parameters.append(ParameterMsg(name=name, value=pv))
        future = self.param_client.call_async(req)
        assert wait_for(future.done, 30.0, self.spin)
        return future.result().results


def to_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


@pytest.fixture(scope="module")
def frames():
    return [read_rgb(p) for p in sorted((SAMPLES / "images").glob("*.png"))[:4]]


@pytest.fixture(scope="module")
def geo_node(module_ros_env, tmp_path_factory):
    """The node with parameter extrinsics, and free_space_monitor on its grid."""
    logs = tmp_path_factory.mktemp("geo")
    params = {"model": "camvid", "qos_reliability": "reliable", "qos_depth": 5, "diagnostics_period": 0.5,
              "base_frame": BASE, "camera_position": str(POSITION), "camera_rpy": str(RPY), "max_range": MAX_RANGE,
              "camera_info_wait": 0.2}
    proc = NodeProcess(node_args(params=params, remaps={"image": CAMERA, "camera_info": INFO}), logs / "node.log")
    monitor = NodeProcess(["-p", f"stop_distance:={STOP_DISTANCE}", "-p", "corridor_width:=2.0"], logs / "monitor.log",
                          module="seg_perception.ros.free_space_monitor")
    probe = GeoProbe("main")
    probe.proc = proc
    try:
        ok = wait_for(lambda: not proc.alive() or (probe.pub_image.get_subscription_count() > 0
                                                    and probe.pub_info.get_subscription_count() > 0
                                                    and probe.subs["grid"].get_publisher_count() > 0),
                      START_TIMEOUT, probe.spin)
        assert ok and proc.alive(), proc.output()
        assert wait_for(lambda: probe.node.count_subscribers("/segmentation/grid") >= 2, 60.0, probe.spin), \
            monitor.output()
        yield proc, probe, monitor
    finally:
        probe.close()
        code = proc.stop(signal.SIGINT)
        monitor.stop(signal.SIGINT)
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output() + monitor.output(), proc.output() + monitor.output()


def _ground_truth_xy(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Closed-form ground point of pixel centres for the test's pinhole camera pitched by RPY[1]."""
    xn, yn = (u - CX) / F, (v - CY) / F
    c, s = math.cos(RPY[1]), math.sin(RPY[1])
    down = s + c * yn
    with np.errstate(divide="ignore", invalid="ignore"):
        t = POSITION[2] / down
        x = POSITION[0] + t * (c - s * yn)
        y = POSITION[1] - t * xn
    ok = (down > 0) & (np.hypot(x, y) <= MAX_RANGE)
    return np.where(ok[..., None], np.stack([x, y], axis=-1), np.nan)


def test_every_output_arrives_stamped_and_consistent_with_the_labels(geo_node, frames):
    proc, probe, _ = geo_node
    for rgb in frames[:2]:
        header = probe.header()
        key = probe.send(rgb, camera_info(header), header)
        out = probe.wait(key, IMAGES + tuple(GEOMETRIC) + ("distance",))
        labels, confidence = to_array(out["labels"]), to_array(out["confidence"])
        h, w = labels.shape
        for name, msg in out.items():
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == key, name
            expected_frame = header.frame_id if name in IMAGES + ("camera_info",) else BASE
            assert msg.header.frame_id == expected_frame, name
        # segmentation/camera_info describes the label images.
        info = out["camera_info"]
        assert (info.width, info.height) == (w, h)
        np.testing.assert_allclose(info.k, [F, 0, CX, 0, F, CY, 0, 0, 1])
        # The organized cloud: the labels' width and height, their labels and confidences, and the
        # ground point of each pixel (closed form for this camera) or NaN.
        cloud = out["points"]
        assert (cloud.height, cloud.width) == (h, w) and cloud.point_step == 16
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "label", "confidence"]
        pts = np.frombuffer(cloud.data, OrganizedCloud.DTYPE).reshape(h, w)
        np.testing.assert_array_equal(pts["label"], labels)
        np.testing.assert_array_equal(pts["confidence"], confidence)
        vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
        truth = _ground_truth_xy(uu, vv)
        np.testing.assert_array_equal(np.isnan(pts["x"]), np.isnan(truth[..., 0]))
        ok = ~np.isnan(truth[..., 0])
        assert ok.mean() > 0.3
        np.testing.assert_allclose(pts["x"][ok], truth[..., 0][ok], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(pts["y"][ok], truth[..., 1][ok], rtol=1e-4, atol=1e-4)
        assert (pts["z"][ok] == 0).all()
        # Scan, obstacles and grid are what the ROS-free core makes of the node's own labels.
        camera = CameraModel.from_camera_info(width=w, height=h, k=info.k)
        proj = GroundProjection(camera, CameraPose.from_position_rpy(POSITION, RPY), max_range=MAX_RANGE,
                                grid=GridSpec())
        drivable = group_lut(CAMVID.ids(CAMVID.drivable))[labels]
        obstacle_lut = group_lut(CAMVID.ids(CAMVID.obstacle))
        boundary = fs.find_boundary(proj, labels, drivable)
        scan = out["scan"]
        np.testing.assert_array_equal(np.array(scan.ranges, np.float32), fs.scan_ranges(proj, boundary))
        assert scan.angle_min == pytest.approx(proj.scan_angle_min) and scan.range_max == pytest.approx(MAX_RANGE)
        assert np.isfinite(np.array(scan.ranges)).any()
        # free_scan: how far each beam's ground was seen, never +inf; range_min the blind range.
        free = out["free_scan"]
        np.testing.assert_array_equal(np.array(free.ranges, np.float32), fs.free_ranges(proj, boundary))
        assert not np.isinf(np.array(free.ranges)).any() and np.isfinite(np.array(free.ranges)).mean() > 0.5
        assert free.range_min == pytest.approx(proj.blind_range - 1e-3, abs=1e-4) and free.range_max > MAX_RANGE
        grid = out["grid"]
        assert (grid.info.width, grid.info.height, grid.info.resolution) == (400, 300, pytest.approx(0.1))
        assert (grid.info.origin.position.x, grid.info.origin.position.y) == (0.0, -15.0)
        expected = fs.occupancy(proj, boundary, obstacle_lut, 70)
        np.testing.assert_array_equal(np.array(grid.data, np.int8), expected)
        assert (expected == 0).sum() > 1000
        obstacles = np.frombuffer(out["obstacles"].data, OrganizedCloud.DTYPE)
        xy, classes = fs.obstacle_points(boundary, obstacle_lut)
        np.testing.assert_allclose(np.column_stack([obstacles["x"], obstacles["y"]]), xy, rtol=1e-6)
        assert (obstacles["z"] == 0.5).all() and set(obstacles["label"]) <= set(CAMVID.ids(CAMVID.obstacle))
        # free_space_monitor: the free distance along the corridor of this grid, and the stop flag.
        distance = out["distance"]
        want = grid_free_distance(expected, width=400, height=300, resolution=0.1, origin_x=0.0, origin_y=-15.0,
                                  corridor_width=2.0, corridor_start=0.0, occupied_threshold=65)
        assert distance.range == pytest.approx(want, abs=1e-4)
        assert wait_for(lambda: len(probe.received["stop"]) > 0, 10.0, probe.spin)


def test_camera_info_is_paired_by_stamp(geo_node, frames):
    proc, probe, _ = geo_node
    h1, h2 = probe.header(), probe.header()
    # Both CameraInfos first: "the latest" would be the second for both frames.
    probe.pub_info.publish(camera_info(h1, f=380.0))
    probe.pub_info.publish(camera_info(h2, f=420.0))
    probe.spin(0.2)
    k1 = probe.send(frames[0], None, h1)
    first = probe.wait(k1, ("camera_info",))["camera_info"]
    k2 = probe.send(frames[1], None, h2)
    second = probe.wait(k2, ("camera_info",))["camera_info"]
    assert first.k[0] == pytest.approx(380.0) and second.k[0] == pytest.approx(420.0)
    # A frame without its own CameraInfo uses the latest one, and /diagnostics says so.
    h3 = probe.header()
    k3 = probe.send(frames[2], None, h3)
    third = probe.wait(k3, ("camera_info", "scan"))["camera_info"]
    assert third.k[0] == pytest.approx(420.0)
    status = probe.ground_status(after=time.monotonic())
    assert status.level == DiagnosticStatus.WARN and "latest" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["frames_without_paired_camera_info_total"]) >= 1
    # Paired again: OK.
    h4 = probe.header()
    probe.wait(probe.send(frames[3], camera_info(h4), h4), ("scan",))
    assert probe.ground_status(after=time.monotonic()).level == DiagnosticStatus.OK


def test_camera_info_follows_both_output_resolutions_with_binning_and_roi(geo_node, frames):
    proc, probe, _ = geo_node
    # A 960x720 calibration, ROI of its middle 960x600 rows, binned 3x: 320x200 images.
    rgb = cv2.resize(frames[0], (320, 200), interpolation=cv2.INTER_AREA)
    full_f, full_cx, full_cy = 600.0, 479.5, 359.5
    roi = (0, 60, 960, 600)

    def send() -> dict:
        header = probe.header()
        info = camera_info(header, width=960, height=720, f=full_f, cx=full_cx, cy=full_cy, binning=3, roi=roi)
        return probe.wait(probe.send(rgb, info, header), ("labels", "camera_info", "points"))

    out = send()
    info = out["camera_info"]
    assert (info.width, info.height) == (320, 200) == (out["labels"].width, out["labels"].height)
    assert (out["points"].width, out["points"].height) == (320, 200)
    # binned by pixel centres (camera_model.py): a super-pixel lies at its sensor pixels' mean centre
    bin_cx, bin_cy = (full_cx + 0.5) / 3 - 0.5, (full_cy - 60 + 0.5) / 3 - 0.5
    np.testing.assert_allclose([info.k[0], info.k[2], info.k[4], info.k[5]],
                               [full_f / 3, bin_cx, full_f / 3, bin_cy])
    assert (info.binning_x, info.binning_y, info.roi.width) == (0, 0, 0)
    try:
        assert all(r.successful for r in probe.set_parameters(output_resolution="network"))
        out = send()
        info = out["camera_info"]
        w, h = out["labels"].width, out["labels"].height
        assert (w, h) != (320, 200) and (info.width, info.height) == (w, h)
        assert (out["points"].width, out["points"].height) == (w, h)
        sx, sy = w / 320, h / 200
        np.testing.assert_allclose([info.k[0], info.k[2], info.k[4], info.k[5]],
                                   [full_f / 3 * sx, (bin_cx + 0.5) * sx - 0.5,
                                    full_f / 3 * sy, (bin_cy + 0.5) * sy - 0.5])
        np.testing.assert_allclose(info.p[0], info.k[0])
    finally:
        assert all(r.successful for r in probe.set_parameters(output_resolution="input"))


BAD_INFOS = [
    ("zero K", dict(f=0.0), "focal lengths"),
    ("NaN K", dict(cx=float("nan")), "NaN"),
    ("size differs from the image", dict(width=640, height=480), "640x480"),
    ("unknown distortion model", dict(d=[0.1, 0.0, 0.0, 0.0], model="fisheye_xyz"), "not supported"),
]


def test_bad_geometry_input_skips_only_the_geometric_outputs(geo_node, frames):
    proc, probe, _ = geo_node

    def expect_skipped(info_kwargs: dict | None, phrase: str) -> None:
        header = probe.header()
        info = camera_info(header, **info_kwargs) if info_kwargs is not None else camera_info(header)
        key = probe.send(frames[0], info, header)
        probe.wait(key, IMAGES)                              # the image outputs are unaffected
        probe.spin(0.5)
        assert key not in probe.received["scan"] and key not in probe.received["points"]
        status = probe.ground_status(after=time.monotonic())
        assert status.level == DiagnosticStatus.WARN and phrase in status.message, status.message

    def expect_published() -> None:
        header = probe.header()
        probe.wait(probe.send(frames[1], camera_info(header), header), ("scan", "grid", "points"))

    for _, kwargs, phrase in BAD_INFOS:
        expect_skipped(kwargs, phrase)
        expect_published()
    # Extrinsics that cannot see the ground, set at runtime.
    for position, rpy, phrase in [(POSITION, [0.0, -0.9, 0.0], "above the horizon"),
                                  ([1.2, 0.0, -0.4], RPY, "under the ground")]:
        assert all(r.successful for r in probe.set_parameters(camera_position=position, camera_rpy=rpy))
        expect_skipped(None, phrase)
    assert all(r.successful for r in probe.set_parameters(camera_position=POSITION, camera_rpy=RPY))
    expect_published()
    # Malformed extrinsics are refused with a reason.
    result = probe.set_parameters(camera_position=[1.0, 2.0])
    assert not result[0].successful and "3 numbers" in result[0].reason
    # A burst of the same problem is logged once per few seconds, not once per frame.
    before = proc.output().count("focal lengths")
    for _ in range(4):
        header = probe.header()
        probe.wait(probe.send(frames[0], camera_info(header, f=0.0), header), IMAGES)
    assert proc.output().count("focal lengths") - before <= 1
    expect_published()
    assert proc.alive()


def test_without_camera_info_or_extrinsics_the_image_outputs_go_on(ros_env, tmp_path, frames):
    """No CameraInfo at all, then no camera pose (no parameters; TF where tf2_ros exists)."""
    proc = NodeProcess(node_args(params={"model": "camvid", "qos_reliability": "reliable", "diagnostics_period": 0.5},
                                 remaps={"image": CAMERA, "camera_info": INFO, "__ns": "/nopose"}),
                       tmp_path / "node.log")
    probe = GeoProbe("nopose", namespace="/nopose/segmentation")
    probe.proc = proc
    try:
        assert wait_for(lambda: not proc.alive() or probe.pub_image.get_subscription_count() > 0
                        and probe.subs["scan"].get_publisher_count() > 0, START_TIMEOUT, probe.spin), proc.output()
        header = probe.header()
        key = probe.send(frames[0], None, header)
        probe.wait(key, IMAGES)
        status = probe.ground_status(after=time.monotonic())
        assert status.level == DiagnosticStatus.WARN and "no CameraInfo received" in status.message
        header = probe.header()
        key = probe.send(frames[1], camera_info(header), header)
        out = probe.wait(key, IMAGES + ("camera_info",))   # intrinsics alone give segmentation/camera_info
        assert out["camera_info"].header.stamp == header.stamp
        probe.spin(0.5)
        assert key not in probe.received["scan"]
        status = probe.ground_status(after=time.monotonic())
        try:
            import tf2_ros  # noqa: F401
            assert "TF lookup" in status.message
        except ImportError:
            assert "tf2_ros is not installed" in status.message and "camera_position" in status.message
        assert proc.alive()
    finally:
        probe.close()
        assert proc.stop(signal.SIGINT) == 0, proc.output()


def test_under_sim_time_every_output_keeps_the_frame_stamp(ros_env, tmp_path, frames):
    """use_sim_time (launch files' use_sim_time:=true) with /clock far from the frames' stamps: the outputs
    carry their frame's stamp, /diagnostics the sim clock's time.
    """
    from rosgraph_msgs.msg import Clock
    params = {"model": "camvid", "qos_reliability": "reliable", "diagnostics_period": 0.5, "use_sim_time": True,
              "base_frame": BASE, "camera_position": str(POSITION), "camera_rpy": str(RPY), "camera_info_wait": 0.2}
    proc = NodeProcess(node_args(params=params, remaps={"image": CAMERA, "camera_info": INFO, "__ns": "/sim"}),
                       tmp_path / "node.log")
    probe = GeoProbe("sim", namespace="/sim/segmentation")
    probe.proc = proc
    clock = probe.node.create_publisher(Clock, "/clock", 10)
    try:
        assert wait_for(lambda: not proc.alive() or probe.pub_image.get_subscription_count() > 0
                        and probe.subs["scan"].get_publisher_count() > 0, START_TIMEOUT, probe.spin), proc.output()
        for _ in range(5):
            clock.publish(Clock(clock=Time(sec=5000, nanosec=0)))
            probe.spin(0.1)
        header = probe.header()
        key = probe.send(frames[0], camera_info(header), header)
        out = probe.wait(key, IMAGES + ("scan", "free_scan", "obstacles", "grid", "points", "camera_info"))
        for name, msg in out.items():
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == key, name
        assert out["grid"].info.map_load_time == header.stamp
        clock.publish(Clock(clock=Time(sec=5001, nanosec=0)))
        marker = len(probe.diagnostics)
        assert wait_for(lambda: any(5000 <= d.header.stamp.sec <= 5002 for d in probe.diagnostics[marker:]), 20.0,
                        lambda t: (clock.publish(Clock(clock=Time(sec=5001, nanosec=0))), probe.spin(t)))
    finally:
        probe.close()
        assert proc.stop(signal.SIGINT) == 0, proc.output()
