# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
r"""Start segmentation_node on a camera, optionally with free_space_monitor on its grid.

    ros2 launch seg_perception drive.launch.py camera_topic:=/camera/image_raw
    ros2 launch seg_perception drive.launch.py namespace:=front device:=cuda
    ros2 launch seg_perception drive.launch.py params_file:=/path/my_params.yaml model:=/path/model.pt
    ros2 launch seg_perception drive.launch.py camera_position:="[1.5, 0.0, 1.4]" \
        camera_rpy:="[0.0, 0.08, 0.0]" free_space_monitor:=true
    ros2 launch seg_perception drive.launch.py managed:=true            # for a lifecycle manager
    ros2 launch seg_perception drive.launch.py managed:=true autostart:=true

Parameters come from params_file (default: the installed config/drive.yaml); the
model, device, base_frame and extrinsics arguments override the file's values when given.
The CameraInfo topic defaults to the camera topic's sibling, as image_transport names it
(/camera/image_raw -> /camera/camera_info).
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from seg_perception.ros.camera_topics import camera_info_topic
from seg_perception.ros.launch_arguments import model_arguments


def _float_list(text: str, name: str) -> list[float]:
    values = [v for v in text.strip().strip("[]").replace(",", " ").split() if v]
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"launch argument {name}:='{text}' must be three numbers, e.g. \"[1.5, 0.0, 1.4]\"") from None
    if len(numbers) != 3:
        raise ValueError(f"launch argument {name}:='{text}' must be three numbers, got {len(numbers)}")
    return numbers


def _nodes(context):
    """The node actions with only the overrides that were given (an empty argument keeps the file's value)."""
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    camera_topic = arg("camera_topic")
    # ParameterValue(..., value_type=str): an empty model stays the string "" (not YAML null).
    overrides = {"model": ParameterValue(arg("model"), value_type=str),
                 "device": ParameterValue(arg("device"), value_type=str)}
    if arg("base_frame"):
        overrides["base_frame"] = ParameterValue(arg("base_frame"), value_type=str)
    if bool(arg("camera_position")) != bool(arg("camera_rpy")):
        raise ValueError("launch arguments camera_position and camera_rpy go together: give both (or neither, "
                         "to keep params_file's or use TF)")
    for name in ("camera_position", "camera_rpy"):
        if arg(name):
            overrides[name] = _float_list(arg(name), name)
    # Sim time: the node's clock follows /clock (diagnostics, logs, TF's cache); outputs keep the frame's stamp.
    overrides["use_sim_time"] = arg("use_sim_time") == "true"
    managed = arg("managed") == "true"
    if managed:
        overrides["autostart"] = arg("autostart") == "true"
    segmentation = (LifecycleNode if managed else Node)(
        package="seg_perception",
        executable="segmentation_lifecycle_node" if managed else "segmentation_node",
        name="segmentation",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides],
        remappings=[
            ("image", camera_topic),
            ("image/compressed", camera_topic + "/compressed"),
            ("camera_info", arg("camera_info_topic") or camera_info_topic(camera_topic)),
        ],
        output="screen",
        emulate_tty=True,
    )
    monitor = Node(
        package="seg_perception",
        executable="free_space_monitor",
        name="free_space_monitor",
        namespace=arg("namespace"),
        parameters=[{"corridor_width": float(arg("corridor_width")), "stop_distance": float(arg("stop_distance")),
                     "use_sim_time": arg("use_sim_time") == "true"}],
        condition=IfCondition(arg("free_space_monitor")),
        output="screen",
        emulate_tty=True,
    )
    return [segmentation, monitor]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument(
            "camera_topic", default_value="/camera/image_raw",
            description="sensor_msgs/Image topic to segment; with input_transport 'compressed' the "
                        "node reads <camera_topic>/compressed"),
        DeclareLaunchArgument(
            "camera_info_topic", default_value="",
            description="sensor_msgs/CameraInfo topic for the geometric outputs; empty = the camera "
                        "topic's sibling camera_info (/camera/image_raw -> /camera/camera_info)"),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the nodes and of their segmentation/* and free_space/* topics"),
        *model_arguments(),
        DeclareLaunchArgument(
            "base_frame", default_value="",
            description="Frame of the geometric outputs (REP-105); empty = params_file's (base_footprint)"),
        DeclareLaunchArgument(
            "camera_position", default_value="",
            description="Camera position in base_frame \"[x, y, z]\" metres; give it with camera_rpy (the "
                        "two win over TF); empty = params_file's, or TF"),
        DeclareLaunchArgument(
            "camera_rpy", default_value="",
            description="Camera roll, pitch, yaw in base_frame \"[r, p, y]\" radians (positive pitch looks "
                        "down); give it with camera_position; empty = params_file's, or TF"),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", choices=["true", "false"],
            description="Use the /clock topic (simulation, ros2 bag play --clock) as every node's clock; the "
                        "outputs carry their input frame's stamp either way"),
        DeclareLaunchArgument(
            "managed", default_value="false", choices=["true", "false"],
            description="Start segmentation_lifecycle_node, a managed (lifecycle) node, instead of segmentation_node"),
        DeclareLaunchArgument(
            "autostart", default_value="false", choices=["true", "false"],
            description="With managed:=true: configure and activate at once instead of waiting for a lifecycle "
                        "manager"),
        DeclareLaunchArgument(
            "free_space_monitor", default_value="false", choices=["true", "false"],
            description="Also start free_space_monitor (free distance ahead and a stop flag from the grid)"),
        DeclareLaunchArgument(
            "corridor_width", default_value="2.0",
            description="free_space_monitor: corridor width [m] (the vehicle's width)"),
        DeclareLaunchArgument(
            "stop_distance", default_value="5.0",
            description="free_space_monitor: stop flag below this free distance [m]"),
        OpaqueFunction(function=_nodes),
    ])
