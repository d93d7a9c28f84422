# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The camera pose from TF, for real: a static transform on /tf_static and a moving one on /tf.

Runs where tf2_ros (and tf2_msgs) import: a ROS install, or tf2 built from source over the PyPI
wheels; skipped elsewhere (the parameters path, tested in test_planner_outputs.py, needs no TF).
The node looks up base_frame <- the image's frame_id at the image's stamp; a camera whose
transform changes must give each frame the pose of its own stamp (tf2 interpolates between).
"""
from __future__ import annotations

import math
import signal

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import SAMPLES, NodeProcess, node_args, wait_for
from std_msgs.msg import Header
from test_planner_outputs import BASE, CAMERA, CX, CY, INFO, START_TIMEOUT, F, GeoProbe, camera_info

from seg_perception.geometry.free_space import OrganizedCloud
from seg_perception.learning.datasets import read_rgb

tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not installed (a ROS install has it)")
from geometry_msgs.msg import TransformStamped  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

POSITION = [1.2, 0.0, 1.3]
#: camera_link -> its optical frame (z forward, x right, y down), as every camera URDF states it
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)
CHECK_RANGE = 15.0   # metres: the node rounds TF's quaternion to 1e-4, which moves far points most


def _quaternion(rpy) -> tuple[float, float, float, float]:
    """(x, y, z, w) of fixed-axis roll, pitch, yaw (tf2's setRPY)."""
    r, p, y = (a / 2 for a in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy)


def _transform(parent: str, child: str, stamp: Time, xyz, rpy) -> TransformStamped:
    t = TransformStamped()
    t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in xyz)
    q = _quaternion(rpy)
    t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w = q
    return t


def _truth(pitch: float, h: int, w: int) -> np.ndarray:
    """Closed-form ground point of every pixel centre for the camera at POSITION pitched by `pitch`."""
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    xn, yn = (uu - CX) / F, (vv - CY) / F
    c, s = math.cos(pitch), math.sin(pitch)
    down = s + c * yn
    with np.errstate(divide="ignore", invalid="ignore"):
        t = POSITION[2] / down
        x, y = POSITION[0] + t * (c - s * yn), POSITION[1] - t * xn
    ok = (down > 0) & (np.hypot(x, y) <= CHECK_RANGE)
    return np.where(ok[..., None], np.stack([x, y], axis=-1), np.nan)


def _assert_pose(cloud, pitch: float, other: float) -> None:
    pts = np.frombuffer(cloud.data, OrganizedCloud.DTYPE).reshape(cloud.height, cloud.width)
    got = np.stack([pts["x"], pts["y"]], axis=-1).astype(np.float64)
    truth, wrong = _truth(pitch, cloud.height, cloud.width), _truth(other, cloud.height, cloud.width)
    both = np.isfinite(truth[..., 0]) & np.isfinite(got[..., 0])
    assert both.sum() > 0.9 * np.isfinite(truth[..., 0]).sum() > 1000
    np.testing.assert_allclose(got[both], truth[both], rtol=1e-2, atol=0.02)
    apart = both & np.isfinite(wrong[..., 0])
    assert np.abs(got[apart] - wrong[apart]).max() > 0.5     # the other pose would not pass


def test_the_camera_pose_follows_tf_static_and_a_moving_transform_at_each_frames_stamp(ros_env, tmp_path):
    rgb = read_rgb(sorted((SAMPLES / "images").glob("*.png"))[0])
    params = {"model": "camvid", "qos_reliability": "reliable", "diagnostics_period": 0.5, "base_frame": BASE,
              "tf_timeout": 0.5, "camera_info_wait": 0.2}
    proc = NodeProcess(node_args(params=params, remaps={"image": CAMERA, "camera_info": INFO, "__ns": "/tfcam"}),
                       tmp_path / "node.log")
    probe = GeoProbe("tf", namespace="/tfcam/segmentation")
    probe.proc = proc
    static = tf2_ros.StaticTransformBroadcaster(probe.node)
    moving = probe.node.create_publisher(TFMessage, "/tf", 100)
    zero = Time(sec=0, nanosec=0)
    static.sendTransform([
        _transform(BASE, "fixed_cam_link", zero, POSITION, (0.0, 0.1, 0.0)),
        _transform("fixed_cam_link", "fixed_cam_optical_frame", zero, (0, 0, 0), OPTICAL_RPY),
        _transform("moving_cam_link", "moving_cam_optical_frame", zero, (0, 0, 0), OPTICAL_RPY)])

    def frame(stamp: Time, frame_id: str):
        header = Header(stamp=stamp, frame_id=frame_id)
        key = probe.send(rgb, camera_info(header), header)
        return probe.wait(key, ("points", "scan"))["points"]

    try:
        assert wait_for(lambda: not proc.alive() or probe.pub_image.get_subscription_count() > 0
                        and probe.subs["points"].get_publisher_count() > 0, START_TIMEOUT, probe.spin), proc.output()
        # A static mount on /tf_static: the pose of the parameters' test (pitch 0.1), from TF.
        _assert_pose(frame(Time(sec=3000, nanosec=0), "fixed_cam_optical_frame"), 0.1, 0.3)
        status = probe.ground_status(after=0.0)
        assert {kv.key: kv.value for kv in status.values}["camera_pose_source"] == "tf"
        # A mount that tilts from pitch 0.1 at t = 3010 s to 0.3 at t = 3011 s: each frame gets its stamp's pose.
        t1, t2, t3 = Time(sec=3010), Time(sec=3011), Time(sec=3012)
        moving.publish(TFMessage(transforms=[
            _transform(BASE, "moving_cam_link", t, POSITION, (0.0, p, 0.0)) for t, p in ((t1, 0.1), (t2, 0.3),
                                                                                          (t3, 0.3))]))
        probe.spin(0.3)
        _assert_pose(frame(t2, "moving_cam_optical_frame"), 0.3, 0.1)
        _assert_pose(frame(t1, "moving_cam_optical_frame"), 0.1, 0.3)
        _assert_pose(frame(Time(sec=3010, nanosec=500_000_000), "moving_cam_optical_frame"), 0.2, 0.1)
        # A stamp TF cannot give (before the first transform): the geometric outputs skip it, with the reason.
        header = Header(stamp=Time(sec=2000), frame_id="moving_cam_optical_frame")
        key = probe.send(rgb, camera_info(header), header)
        probe.wait(key, ("labels",))
        probe.spin(1.0)
        assert key not in probe.received["points"]
        assert "TF lookup" in probe.ground_status(after=0.0).message
        assert proc.alive()
    finally:
        probe.close()
        assert proc.stop(signal.SIGINT) == 0, proc.output()
