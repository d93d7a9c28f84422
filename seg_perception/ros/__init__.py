# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The thin rclpy layers: the segmentation node, the bag replayer and the message conversions."""
