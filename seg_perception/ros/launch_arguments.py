# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The launch arguments every launch file of the package takes, declared once.

Imported by the launch files only: `launch` and `launch_ros` come with a ROS installation.
"""
from __future__ import annotations


def model_arguments() -> list:
    """params_file, model and device: which parameters and model the node(s) start with."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    return [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("seg_perception"), "config", "drive.yaml"]),
            description="YAML file with the parameters of the segmentation node(s)"),
        DeclareLaunchArgument(
            "model", default_value="",
            description="A shipped model by name (camvid, driving) or a model file (.pt or .onnx); empty = driving"),
        DeclareLaunchArgument(
            "device", default_value="auto", choices=["auto", "cpu", "cuda"],
            description="Inference device"),
    ]
