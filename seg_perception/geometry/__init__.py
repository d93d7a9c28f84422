# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Monocular ground-plane geometry, ROS-free: camera model, camera pose, projection tables, free space."""
