# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Several cameras in one segmentation_node over real DDS: each camera's frames answered on its own
namespace's topics with their own header, frames of several cameras segmented together, a camera
that never publishes reported without affecting the others, and a bad camera list refused.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import SAMPLES, NodeProcess, RosProbe, node_args, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.inference.segmenter import Segmenter
from seg_perception.learning.datasets import read_rgb
from seg_perception.ros.camera_topics import CameraListError, camera_info_topic, output_prefix, parse_cameras
from seg_perception.ros.ros_image import rgb_to_image

CAMERAS = ["/cam_a/image_raw", "/cam_b/image_raw", "/silent/image_raw"]  # the last one never publishes
LIVE = CAMERAS[:2]
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
START_TIMEOUT = 180.0
FRAME_TIMEOUT = 60.0


def to_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


class Cameras(RosProbe):
    """An in-process node publishing on each live camera and recording each camera's labels."""

    def __init__(self) -> None:
        super().__init__("multi_camera_probe")
        self.pubs = {cam: self.node.create_publisher(Image, cam, RELIABLE) for cam in LIVE}
        self.labels: dict[str, dict[tuple, Image]] = {cam: {} for cam in LIVE}
        self.subs = {cam: self.node.create_subscription(
            Image, output_prefix(cam, "segmentation") + "labels",
            lambda msg, cam=cam: self.labels[cam].__setitem__((msg.header.stamp.sec, msg.header.stamp.nanosec), msg),
            RELIABLE) for cam in LIVE}
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.stamp = 2000

    def header(self, cam: str) -> Header:
        self.stamp += 1
        return Header(stamp=Time(sec=self.stamp, nanosec=7), frame_id=cam.split("/")[1] + "_optical_frame")

    def statuses(self, after: float) -> dict[str, DiagnosticStatus]:
        marker = len(self.diagnostics)
        assert wait_for(lambda: len(self.diagnostics) > marker + 1 and time.monotonic() > after, 30.0, self.spin)
        return {s.name: s for s in self.diagnostics[-1].status}


@pytest.fixture(scope="module")
def frames():
    rgb = [read_rgb(p) for p in sorted((SAMPLES / "images").glob("*.png"))[:4]]
    # cam_a: the 4:3 CamVid frames; cam_b: 16:9 frames of another size (a wider camera)
    return {LIVE[0]: rgb, LIVE[1]: [cv2.resize(f[45:315], (640, 360), interpolation=cv2.INTER_AREA) for f in rgb]}


@pytest.fixture(scope="module")
def node(module_ros_env, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "multi.log"
    cams = "[" + ", ".join(f"'{c}'" for c in CAMERAS) + "]"
    proc = NodeProcess(node_args(params={"model": "camvid", "cameras": cams, "qos_reliability": "reliable",
                                         "qos_depth": 1, "diagnostics_period": 0.5, "stats_period": 2.0}), log)
    probe = Cameras()
    try:
        ok = wait_for(lambda: not proc.alive() or (
            all(p.get_subscription_count() > 0 for p in probe.pubs.values())
            and all(s.get_publisher_count() > 0 for s in probe.subs.values())), START_TIMEOUT, probe.spin)
        assert proc.alive() and ok, proc.output()
        yield proc, probe
    finally:
        probe.close()
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def test_each_camera_answered_on_its_own_topics_with_its_own_header(node, frames):
    proc, probe = node
    library = Segmenter("camvid", device="cpu")
    sent = []
    for i in range(len(frames[LIVE[0]])):
        for cam in LIVE:  # both cameras' frames at once: the node segments them together
            header = probe.header(cam)
            probe.pubs[cam].publish(rgb_to_image(frames[cam][i], "rgb8", header))
            sent.append((cam, i, header))
        probe.spin(0.0)
    keys = [(cam, (h.stamp.sec, h.stamp.nanosec)) for cam, _, h in sent]
    wait_for(lambda: all(k in probe.labels[cam] for cam, k in keys), FRAME_TIMEOUT, probe.spin)
    answered = [(cam, i, h) for cam, i, h in sent if (h.stamp.sec, h.stamp.nanosec) in probe.labels[cam]]
    # newest frame per camera wins, so a busy node may drop some; every camera is answered
    assert {cam for cam, _, _ in answered} == set(LIVE), proc.output()
    for cam, i, header in answered:
        msg = probe.labels[cam][(header.stamp.sec, header.stamp.nanosec)]
        assert msg.header.frame_id == header.frame_id
        other = [c for c in LIVE if c != cam][0]
        assert (header.stamp.sec, header.stamp.nanosec) not in probe.labels[other], "frame answered on both cameras"
        rgb = frames[cam][i]
        assert (msg.width, msg.height) == (rgb.shape[1], rgb.shape[0])
        agree = (to_array(msg) == library.segment(rgb).labels).mean()
        assert agree > 0.999, f"{cam} frame {i}: {agree:.4f} of the labels as the library gives them"


def test_frames_of_several_cameras_are_segmented_together(node, frames):
    proc, probe = node
    for _ in range(6):  # pairs sent while the worker is busy wait for it together
        for cam in LIVE:
            probe.pubs[cam].publish(rgb_to_image(frames[cam][0], "rgb8", probe.header(cam)))
        probe.spin(0.05)
    time.sleep(3.0)
    statuses = probe.statuses(after=time.monotonic())
    batched = [int({kv.key: kv.value for kv in statuses[f"/segmentation: semantic segmentation {cam}"].values}
                   ["frames_batched_total"]) for cam in LIVE]
    assert min(batched) > 0, f"no frame segmented together with another camera's: {batched}"


def test_a_silent_camera_is_reported_and_the_others_are_unaffected(node, frames):
    proc, probe = node
    for cam in LIVE:
        probe.pubs[cam].publish(rgb_to_image(frames[cam][1], "rgb8", probe.header(cam)))
    statuses = probe.statuses(after=time.monotonic() + 0.6)
    silent = statuses["/segmentation: semantic segmentation /silent/image_raw"]
    assert silent.level == DiagnosticStatus.WARN and "no input frames on /silent/image_raw" in silent.message
    geometry = [n for n in statuses if n.startswith("/segmentation: ground projection")]
    assert len(geometry) == len(CAMERAS)
    header = probe.header(LIVE[0])
    probe.pubs[LIVE[0]].publish(rgb_to_image(frames[LIVE[0]][2], "rgb8", header))
    key = (header.stamp.sec, header.stamp.nanosec)
    assert wait_for(lambda: key in probe.labels[LIVE[0]], FRAME_TIMEOUT, probe.spin)


@pytest.mark.parametrize("cameras, expected", [
    ("['/a/image_raw', '/a/image_raw']", "listed twice"),
    ("['/a/image_raw', '/a/image_rect']", "would publish their outputs on the same topics"),
    ("['/a/image raw']", "is not a valid image topic name"),
])
def test_a_bad_camera_list_is_refused_with_the_reason(cameras, expected, ros_env, tmp_path):
    proc = NodeProcess(node_args(params={"cameras": cameras}), tmp_path / "node.log")
    code = proc.wait(timeout=120)
    assert code == 1 and expected in proc.output(), proc.output()


def test_camera_topic_names():
    assert parse_cameras("/front/image_raw, /rear/image_raw") == ["/front/image_raw", "/rear/image_raw"]
    assert parse_cameras("[/front/image_raw]") == ["/front/image_raw"] and parse_cameras("") == []
    assert camera_info_topic("/front/image_raw") == "/front/camera_info"
    assert output_prefix("/front/image_raw", "segmentation") == "/front/segmentation/"
    assert output_prefix("front/image_raw", "seg") == "front/seg/"
    assert output_prefix("image_raw", "segmentation") == "segmentation/"
    with pytest.raises(CameraListError, match="compressed"):
        parse_cameras(["/front/image_raw/compressed"])


def test_the_multi_camera_launch_file_parses_with_the_launch_api():
    """Where ROS 2's launch is installed (a ROS install; it is not on PyPI): both modes give the nodes."""
    launch = pytest.importorskip("launch", reason="ROS 2's launch package is not installed")
    pytest.importorskip("launch_ros", reason="ROS 2's launch_ros package is not installed")
    from launch.launch_description_sources import get_launch_description_from_python_launch_file
    from launch_ros.actions import Node

    path = Path(__file__).resolve().parents[1] / "launch" / "multi_camera.launch.py"
    for mode, count in (("batched", 1), ("per_camera", 2)):
        description = get_launch_description_from_python_launch_file(str(path))
        arguments = {a.name: a for a in description.get_launch_arguments()}
        assert {"cameras", "mode", "node_name", "use_sim_time", "log_level"} <= set(arguments)
        assert all(a.description for a in arguments.values())
        context = launch.LaunchContext()
        context.launch_configurations.update(cameras="/front/image_raw, /rear/image_raw", mode=mode,
                                             params_file="drive.yaml")
        nodes = []
        for entity in description.entities:
            for action in entity.visit(context) or []:
                nodes += [a for a in [action] if isinstance(a, Node)]
        assert len(nodes) == count, mode
        for node in nodes:
            node._perform_substitutions(context)
        namespaces = sorted(n.expanded_node_namespace for n in nodes)
        assert namespaces == (["/"] if mode == "batched" else ["/front", "/rear"]), namespaces
    context = launch.LaunchContext()
    context.launch_configurations.update(cameras="/front/image_raw,/front/image_raw", params_file="drive.yaml")
    with pytest.raises(CameraListError, match="listed twice"):
        for entity in get_launch_description_from_python_launch_file(str(path)).entities:
            entity.visit(context)


def test_one_pose_for_several_cameras_is_pointed_out(ros_env, tmp_path):
    proc = NodeProcess(node_args(params={"cameras": "['/a/image_raw', '/b/image_raw']",
                                         "camera_position": "[1.5, 0.0, 1.4]", "camera_rpy": "[0.0, 0.1, 0.0]"}),
                       tmp_path / "node.log")
    try:
        assert wait_for(lambda: not proc.alive() or "segmenting" in proc.output(), START_TIMEOUT), proc.output()
        assert proc.alive(), proc.output()
        assert "camera_position and camera_rpy describe one camera but apply to all 2 cameras" in proc.output()
    finally:
        assert proc.stop() == 0, proc.output()
