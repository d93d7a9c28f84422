# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""segmentation_lifecycle_node driven through every transition over real DDS, as a lifecycle manager would.

The manager's side is the standard lifecycle services (~/get_state, ~/change_state) and the
parameter service; the node runs as its own process on real CamVid frames.
"""
from __future__ import annotations

import signal

import pytest
import rclpy
from builtin_interfaces.msg import Time
from conftest import SAMPLES, NodeProcess, node_args, wait_for
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_perception.learning.datasets import read_rgb
from seg_perception.ros.ros_image import rgb_to_image

MODULE = "seg_perception.ros.lifecycle_node"
CAMERA = "/lc_cam/image_raw"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT = 120.0


class Manager:
    """A lifecycle manager in miniature: state, transitions, parameters; it also sends frames."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("lc_manager", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.get_state = self.node.create_client(GetState, "/segmentation/get_state")
        self.change_state = self.node.create_client(ChangeState, "/segmentation/change_state")
        self.set_params = self.node.create_client(SetParameters, "/segmentation/set_parameters")
        self.pub = self.node.create_publisher(Image, CAMERA, RELIABLE)
        self.labels: dict = {}
        self.sub = self.node.create_subscription(
            Image, "/segmentation/labels", lambda m: self.labels.setdefault(m.header.stamp.sec, m), RELIABLE)
        self.stamp = 100

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=TIMEOUT), client.srv_name
        future = client.call_async(request)
        assert wait_for(future.done, TIMEOUT, self.spin), f"no answer from {client.srv_name}"
        return future.result()

    def state(self) -> int:
        return self.call(self.get_state, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        return self.call(self.change_state, ChangeState.Request(transition=Transition(id=transition_id))).success

    def set_string(self, name: str, value: str):
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        return self.call(self.set_params, SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))

    def send(self, rgb) -> int:
        self.stamp += 1
        self.pub.publish(rgb_to_image(rgb, "rgb8", Header(stamp=Time(sec=self.stamp), frame_id="lc_cam")))
        return self.stamp

    def answered(self, stamp: int, timeout: float) -> bool:
        return wait_for(lambda: stamp in self.labels, timeout, self.spin)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def rgb():
    return read_rgb(sorted((SAMPLES / "images").glob("*.png"))[0])


def test_every_transition_including_a_failed_configure(ros_env, tmp_path, rgb):
    proc = NodeProcess(node_args(params={"model": str(tmp_path / "missing.pt"), "qos_reliability": "reliable"},
                                 remaps={"image": CAMERA}), tmp_path / "lc.log", module=MODULE)
    manager = Manager()
    try:
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        # configure with a missing model: FAILURE, the reason in the log, still unconfigured, alive
        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert wait_for(lambda: "configure failed: cannot load model" in proc.output(), 10.0), proc.output()
        # fix the parameter while unconfigured, configure again: inactive, publishers there but silent
        assert manager.set_string("model", "camvid").results[0].successful
        assert manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert wait_for(lambda: manager.sub.get_publisher_count() == 1, 30.0, manager.spin)
        assert not manager.answered(manager.send(rgb), 2.0)
        # activate: frames are answered
        assert manager.transition(Transition.TRANSITION_ACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        assert wait_for(lambda: manager.pub.get_subscription_count() == 1, 30.0, manager.spin)
        stamp = manager.send(rgb)
        assert manager.answered(stamp, 60.0), proc.output()
        assert (manager.labels[stamp].width, manager.labels[stamp].height) == (rgb.shape[1], rgb.shape[0])
        # a configure-time parameter is refused while configured, with the reason
        result = manager.set_string("model", "driving").results[0]
        assert not result.successful and "unconfigured" in result.reason
        # deactivate: no processing, no subscription; the model stays loaded
        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert wait_for(lambda: manager.pub.get_subscription_count() == 0, 30.0, manager.spin)
        assert not manager.answered(manager.send(rgb), 2.0)
        # activate again: answered again
        assert manager.transition(Transition.TRANSITION_ACTIVATE)
        assert wait_for(lambda: manager.pub.get_subscription_count() == 1, 30.0, manager.spin)
        assert manager.answered(manager.send(rgb), 60.0)
        # deactivate, cleanup: unconfigured, publishers gone; then shutdown: finalized
        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.transition(Transition.TRANSITION_CLEANUP)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert wait_for(lambda: manager.sub.get_publisher_count() == 0, 30.0, manager.spin)
        assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
        assert proc.alive()
    finally:
        manager.close()
        code = proc.stop(signal.SIGINT)
    assert code == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def test_shutdown_from_active_and_autostart(ros_env, tmp_path, rgb):
    proc = NodeProcess(node_args(params={"model": "camvid", "autostart": True, "qos_reliability": "reliable"},
                                 remaps={"image": CAMERA}), tmp_path / "auto.log", module=MODULE)
    manager = Manager()
    try:
        assert wait_for(lambda: manager.pub.get_subscription_count() == 1 or not proc.alive(), TIMEOUT,
                        manager.spin), proc.output()
        assert manager.state() == State.PRIMARY_STATE_ACTIVE
        assert manager.answered(manager.send(rgb), 60.0), proc.output()
        assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
        assert wait_for(lambda: manager.pub.get_subscription_count() == 0, 30.0, manager.spin)
    finally:
        manager.close()
        code = proc.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in proc.output(), proc.output()


def test_autostart_with_a_missing_model_exits_non_zero(ros_env, tmp_path):
    proc = NodeProcess(node_args(params={"model": str(tmp_path / "missing.pt"), "autostart": True}),
                       tmp_path / "bad.log", module=MODULE)
    assert proc.wait(timeout=TIMEOUT) == 1
    assert "configure failed: cannot load model" in proc.output() and "Traceback" not in proc.output()
