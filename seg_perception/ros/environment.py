# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The ROS environment variables a command sets for the processes it starts, restored afterwards (no rclpy)."""
from __future__ import annotations

import os
from contextlib import contextmanager

#: What a command may set: discovery, domain, ROS_HOME and logs, and the Fast DDS profile.
ROS_ENV_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "ROS_HOME", "ROS_LOG_DIR",
                "RCUTILS_COLORIZED_OUTPUT", "PYTHONUNBUFFERED", "FASTDDS_DEFAULT_PROFILES_FILE")


@contextmanager
def ros_environment(values: dict):
    """os.environ with `values` (and without the deprecated ROS_LOCALHOST_ONLY), restored afterwards."""
    saved = {k: os.environ.get(k) for k in ROS_ENV_KEYS}
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.update(values)
    try:
        yield dict(os.environ)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
