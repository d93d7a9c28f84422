# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`segmentation_lifecycle_node`: segmentation_node as a ROS 2 managed node (rclpy.lifecycle).

Same parameters and topics as segmentation_node. It starts unconfigured, or configures and
activates itself when its `autostart` parameter is true.

  configure   load and warm the model, validate the parameters, create the (lifecycle) publishers
  activate    open the image and camera_info subscriptions, start the worker; publishers enabled
  deactivate  stop processing and publishing; the model stays loaded
  cleanup     destroy the publishers, free the model
  shutdown    from any state: everything above that is still open
  on error    the same as cleanup, back to unconfigured

A failing configure (a missing model, a bad parameter) returns FAILURE with the reason in the
log; the node stays unconfigured and can be configured again once the parameter is fixed: the
configure-time parameters (read-only in segmentation_node: model, device, input_transport,
QoS...) can be set while the node is unconfigured and are refused, with the reason, after.
Under Nav2's lifecycle_manager set `bond_timeout: 0.0`: rclpy has no bond library, so the node
cannot answer bond heartbeats; the manager then drives the transitions without a bond.
"""
from __future__ import annotations

import copy
import sys

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode

from .executable import run_node
from .node import NODE_NAME, QOS_OVERRIDES, SegmentationMixin, StartupError


class SegmentationLifecycleNode(SegmentationMixin, LifecycleNode):
    """The managed twin of SegmentationNode: the same steps, run by lifecycle transitions."""

    CONFIGURE_TIME_WRITABLE = True

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        LifecycleNode.__init__(self, node_name, **kwargs)
        self._declare_parameters()
        self.declare_parameter("autostart", False, ParameterDescriptor(
            type=ParameterType.PARAMETER_BOOL, read_only=True,
            description="Configure and activate at start (true), or wait for a lifecycle manager (false)"))

    def _make_publisher(self, msg_type, topic: str, qos):
        return self.create_lifecycle_publisher(msg_type, topic, copy.copy(qos), qos_overriding_options=QOS_OVERRIDES)

    def _release(self) -> None:
        """Whatever is open, closed: inputs, outputs, the model."""
        self.close_inputs()
        self.close_outputs()
        self.unload()

    # -- transitions -------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.load()
            self.open_outputs()
        except StartupError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a defect: ERROR, and on_error cleans up
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.ERROR
        self.get_logger().info(f"configured: {self.segmenter.describe()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.open_inputs()
        except Exception as exc:
            self.get_logger().error(f"activate failed: {type(exc).__name__}: {exc}")
            self.close_inputs()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)  # enables the lifecycle publishers

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close_inputs()
        self.get_logger().info("deactivated: no processing, no publishing; the model stays loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: publishers destroyed, model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: cleaning up")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def autostart(self) -> bool:
        """Configure and activate when the autostart parameter says so; False if a step failed."""
        if not self.get_parameter("autostart").value:
            return True
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS


def main(args=None) -> int:
    """Entry point of `segmentation_lifecycle_node`: 0 on a clean shutdown, 1 if autostart failed."""
    return run_node(SegmentationLifecycleNode, logger_name=NODE_NAME, expected=(StartupError,), args=args,
                    setup=lambda node: node.autostart(), teardown=lambda node: node._release())


if __name__ == "__main__":
    sys.exit(main())
