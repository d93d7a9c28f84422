# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""seg_perception: real-time semantic segmentation for ROS 2 driving stacks."""

__version__ = "0.1.0"
