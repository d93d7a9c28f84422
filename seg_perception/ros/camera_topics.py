# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Topic names of a several-camera setup, shared by the node and the launch files (no rclpy here).

A camera is named by its image topic, as a camera driver publishes it (`/front/image_raw`); its
CameraInfo is the sibling `camera_info` (`/front/camera_info`, image_pipeline's convention) and the
node's outputs go under the camera's namespace: `/front/segmentation/labels` for a node named
`segmentation`. One node per camera, started in that namespace with `image` remapped, publishes on
the very same topics, so the planners downstream do not care which of the two runs.
"""
from __future__ import annotations

import re

_NAME = re.compile(r"^~?/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class CameraListError(ValueError):
    """A cameras list with a bad or repeated topic name."""


def parse_cameras(value) -> list[str]:
    """Image topics from a list, or from a launch argument's text: `/a/image_raw,/b/image_raw` or `[...]`."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip().strip("[]")
        items = [t.strip().strip("'\"") for t in re.split(r"[,\s]+", text) if t.strip().strip("'\"")]
    else:
        items = [str(t).strip() for t in value]
    seen = set()
    for topic in items:
        if not _NAME.match(topic) or topic.startswith("~"):
            raise CameraListError(f"cameras: '{topic}' is not a valid image topic name (for example /front/image_raw)")
        if topic.endswith("/compressed"):
            raise CameraListError(f"cameras: give the raw image topic '{topic[:-len('/compressed')]}'; "
                                  "input_transport: compressed subscribes its /compressed twin")
        if topic in seen:
            raise CameraListError(f"cameras: '{topic}' is listed twice")
        seen.add(topic)
    namespaces = [camera_namespace(t) for t in items]
    twice = sorted({n for n in namespaces if namespaces.count(n) > 1})
    if twice:
        raise CameraListError(f"cameras: several image topics in namespace '{twice[0] or '/'}' would publish their "
                              "outputs on the same topics; give each camera its own namespace")
    return items


def camera_namespace(image_topic: str) -> str:
    """The image topic's namespace: '/front' for '/front/image_raw', '' for a topic at the top."""
    head, _, _ = image_topic.rpartition("/")
    return head if head or not image_topic.startswith("/") else "/"


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic beside an image topic."""
    ns = camera_namespace(image_topic)
    return "camera_info" if ns == "" else ("/camera_info" if ns == "/" else f"{ns}/camera_info")


def output_prefix(image_topic: str, node_name: str) -> str:
    """Where a camera's outputs go: '<camera namespace>/<node name>/'."""
    ns = camera_namespace(image_topic)
    return f"{node_name}/" if ns == "" else ("/" if ns == "/" else f"{ns}/") + f"{node_name}/"
