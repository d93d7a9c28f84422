# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`free_space_monitor`: an example planning node on segmentation_node's contract, small enough to copy.

Subscribes to `segmentation/grid` (or `segmentation/scan`), measures the free distance along a
corridor of the vehicle's width straight ahead (+x of the message's frame) and publishes it
with a stop flag:

  in   segmentation/grid       nav_msgs/OccupancyGrid   (input: grid)
  in   segmentation/scan       sensor_msgs/LaserScan    (input: scan)
  out  free_space/distance     sensor_msgs/Range: metres free ahead, the input's header
  out  free_space/stop         std_msgs/Bool: distance < stop_distance

Grid: rows of cells across the corridor are walked from `corridor_start` forward; the free
distance ends at the first row with a cell at or above `occupied_threshold`. Unknown cells
(-1) neither block nor clear; with no blocking row the distance ends at the farthest row
seen free. Scan: the nearest beam end point inside the corridor; +inf ranges clear.
"""
from __future__ import annotations

import sys

import numpy as np
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import LaserScan, Range
from std_msgs.msg import Bool

from ..geometry.free_space import grid_free_distance, scan_free_distance
from .executable import run_node

NODE_NAME = "free_space_monitor"


class FreeSpaceMonitor(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        d = ParameterType
        self.declare_parameter("input", "grid", ParameterDescriptor(
            type=d.PARAMETER_STRING, read_only=True, additional_constraints="one of: grid, scan",
            description="Subscribe to segmentation/grid (OccupancyGrid) or segmentation/scan (LaserScan)"))
        self.declare_parameter("corridor_width", 2.0, ParameterDescriptor(
            type=d.PARAMETER_DOUBLE,
            description="Corridor width [m] centred on the frame's x axis (the vehicle's width)",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=20.0, step=0.0)]))
        self.declare_parameter("corridor_start", 0.0, ParameterDescriptor(
            type=d.PARAMETER_DOUBLE, description="x [m] where the corridor starts (the vehicle's front)",
            floating_point_range=[FloatingPointRange(from_value=-50.0, to_value=50.0, step=0.0)]))
        self.declare_parameter("stop_distance", 5.0, ParameterDescriptor(
            type=d.PARAMETER_DOUBLE, description="free_space/stop is true below this free distance [m]",
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0, step=0.0)]))
        self.declare_parameter("occupied_threshold", 65, ParameterDescriptor(
            type=d.PARAMETER_INTEGER, description="Grid values at or above this block the corridor",
            integer_range=[IntegerRange(from_value=1, to_value=100, step=1)]))
        source = self.get_parameter("input").value
        if source not in ("grid", "scan"):
            raise ValueError(f"parameter 'input' is '{source}'; choose one of ['grid', 'scan']")
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_distance = self.create_publisher(Range, "free_space/distance", qos)
        self.pub_stop = self.create_publisher(Bool, "free_space/stop", qos)
        if source == "grid":
            self.sub = self.create_subscription(OccupancyGrid, "segmentation/grid", self._on_grid, qos)
        else:
            self.sub = self.create_subscription(LaserScan, "segmentation/scan", self._on_scan, qos)
        self.get_logger().info(f"watching {self.sub.topic_name}: corridor {self._p('corridor_width')} m wide, "
                               f"stop below {self._p('stop_distance')} m")

    def _p(self, name: str):
        return self.get_parameter(name).value

    def _on_grid(self, msg: OccupancyGrid) -> None:
        info = msg.info
        q = info.origin.orientation
        if abs(q.x) + abs(q.y) + abs(q.z) > 1e-6:
            self.get_logger().warning("grid is rotated in its frame; only axis-aligned grids are supported",
                                      throttle_duration_sec=5.0)
            return
        if info.width * info.height != len(msg.data) or info.resolution <= 0:
            self.get_logger().warning("malformed OccupancyGrid (size or resolution)", throttle_duration_sec=5.0)
            return
        distance = grid_free_distance(
            np.frombuffer(msg.data, np.int8) if isinstance(msg.data, (bytes, bytearray)) else np.array(msg.data),
            width=info.width, height=info.height, resolution=info.resolution, origin_x=info.origin.position.x,
            origin_y=info.origin.position.y, corridor_width=self._p("corridor_width"),
            corridor_start=self._p("corridor_start"), occupied_threshold=self._p("occupied_threshold"))
        far = info.origin.position.x + info.width * info.resolution - self._p("corridor_start")
        self._publish(msg.header, distance, max(far, 0.0))

    def _on_scan(self, msg: LaserScan) -> None:
        distance = scan_free_distance(np.array(msg.ranges), msg.angle_min, msg.angle_increment, msg.range_max,
                                      corridor_width=self._p("corridor_width"),
                                      corridor_start=self._p("corridor_start"))
        self._publish(msg.header, distance, msg.range_max)

    def _publish(self, header, distance: float, max_range: float) -> None:
        self.pub_distance.publish(Range(header=header, radiation_type=Range.INFRARED, field_of_view=0.0,
                                        min_range=0.0, max_range=float(max_range), range=float(distance)))
        self.pub_stop.publish(Bool(data=bool(distance < self._p("stop_distance"))))


def main(args=None) -> int:
    """Entry point of `free_space_monitor`: 0 on a clean shutdown, 1 on a bad parameter."""
    return run_node(FreeSpaceMonitor, logger_name=NODE_NAME, expected=(ValueError,), args=args)


if __name__ == "__main__":
    sys.exit(main())
