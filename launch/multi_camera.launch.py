# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
r"""Segment several cameras: one batched segmentation_node for all of them, or one node per camera.

    ros2 launch seg_perception multi_camera.launch.py cameras:="/front/image_raw,/rear/image_raw"
    ros2 launch seg_perception multi_camera.launch.py cameras:="[/left/image_raw, /right/image_raw]" \
        mode:=per_camera use_sim_time:=true log_level:=debug

Either way each camera's outputs appear under its namespace: /front/segmentation/labels,
/front/segmentation/grid, ... (node_name replaces `segmentation`), and its CameraInfo is read
from the image topic's sibling (/front/camera_info). batched: one process holds the model once
and segments the newest frame of every camera as one batch (the better use of one GPU, and of a
CPU when the cameras together outrun it); per_camera: one process per camera, each with its own
model copy, isolated from the others (one camera's trouble cannot slow another's). Figures for
both: docs/performance.md.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from seg_perception.ros.camera_topics import camera_info_topic, camera_namespace, parse_cameras
from seg_perception.ros.launch_arguments import model_arguments


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cameras = parse_cameras(arg("cameras"))
    if not cameras:
        raise ValueError("launch argument cameras is empty: give the image topics, e.g. "
                         "cameras:=\"/front/image_raw,/rear/image_raw\"")
    name = arg("node_name")
    common = {"use_sim_time": arg("use_sim_time") == "true",
              "model": ParameterValue(arg("model"), value_type=str),
              "device": ParameterValue(arg("device"), value_type=str),
              "precision": ParameterValue(arg("precision"), value_type=str)}
    ros_arguments = ["--log-level", arg("log_level")]
    if arg("mode") == "batched":
        return [Node(package="seg_perception", executable="segmentation_node", name=name, namespace="",
                     parameters=[arg("params_file"), dict(common, cameras=cameras)],
                     ros_arguments=ros_arguments, output="screen", emulate_tty=True)]
    return [Node(package="seg_perception", executable="segmentation_node", name=name,
                 namespace=camera_namespace(topic),
                 parameters=[arg("params_file"), common],
                 remappings=[("image", topic), ("image/compressed", topic + "/compressed"),
                             ("camera_info", camera_info_topic(topic))],
                 ros_arguments=ros_arguments, output="screen", emulate_tty=True)
            for topic in cameras]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "cameras", default_value="/camera/image_raw",
            description="Image topics of the cameras, separated by commas (or a YAML list); each camera's "
                        "CameraInfo is its sibling camera_info and its outputs go under its namespace"),
        DeclareLaunchArgument(
            "mode", default_value="batched", choices=["batched", "per_camera"],
            description="batched: one node segments every camera in one batch; per_camera: one node per "
                        "camera, in the camera's namespace (the same output topics)"),
        DeclareLaunchArgument(
            "node_name", default_value="segmentation",
            description="Name of the node(s); the outputs are <camera namespace>/<node_name>/labels, ..."),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="Use /clock (rosbag2 play --clock) instead of the system clock"),
        DeclareLaunchArgument(
            "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
            description="Log level of the node(s)"),
        *model_arguments(),
        DeclareLaunchArgument(
            "precision", default_value="auto", choices=["auto", "fp32", "fp16", "int8"],
            description="Inference precision; auto = int8 on CPUs with VNNI/AMX, fp16 on GPUs, else fp32"),
        OpaqueFunction(function=_nodes),
    ])
