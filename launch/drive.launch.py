"""Start segmentation_node on a camera topic.

    ros2 launch seg_perception drive.launch.py camera_topic:=/camera/image_raw
    ros2 launch seg_perception drive.launch.py namespace:=front device:=cuda
    ros2 launch seg_perception drive.launch.py params_file:=/path/my_params.yaml model:=/path/model.pt

Parameters come from params_file (default: the installed config/drive.yaml);
the model and device arguments override the file's values.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    camera_topic = LaunchConfiguration("camera_topic")
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    model = LaunchConfiguration("model")
    device = LaunchConfiguration("device")

    return LaunchDescription([
        DeclareLaunchArgument(
            "camera_topic", default_value="/camera/image_raw",
            description="sensor_msgs/Image topic to segment; with input_transport 'compressed' the "
                        "node reads <camera_topic>/compressed"),
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the node and of its segmentation/* outputs"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("seg_perception"), "config", "drive.yaml"]),
            description="YAML file with the node's parameters"),
        DeclareLaunchArgument(
            "model", default_value="",
            description="A shipped model by name (camvid, driving) or a model file (.pt or .onnx); empty = driving"),
        DeclareLaunchArgument(
            "device", default_value="auto", choices=["auto", "cpu", "cuda"],
            description="Inference device"),
        Node(
            package="seg_perception",
            executable="segmentation_node",
            name="segmentation",
            namespace=namespace,
            # ParameterValue(..., value_type=str): an empty model stays the string "".
            parameters=[params_file, {"model": ParameterValue(model, value_type=str),
                                      "device": ParameterValue(device, value_type=str)}],
            remappings=[
                ("image", camera_topic),
                ("image/compressed", [camera_topic, "/compressed"]),
            ],
            output="screen",
            emulate_tty=True,
        ),
    ])
