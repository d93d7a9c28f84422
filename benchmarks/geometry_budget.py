# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Cost of the geometric outputs per frame against the frame's segmentation time, in one run.

The node's budget: all geometric outputs together (boundary, scan, obstacles, grid, the
organized cloud, and their ROS messages) at most 15 % of the frame's segmentation time at
1280x720 on the CPU. Not a test: the figures depend on the machine.

    .venv/bin/python benchmarks/geometry_budget.py                 # driving model, 1280x720
    .venv/bin/python benchmarks/geometry_budget.py --threads 2 --runs 30 --size 1280 720
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model_latency import time_it  # noqa: E402  (benchmarks/, next to this script)
from std_msgs.msg import Header  # noqa: E402

from seg_perception.geometry import free_space  # noqa: E402
from seg_perception.geometry.camera_model import CameraModel  # noqa: E402
from seg_perception.geometry.camera_pose import CameraPose  # noqa: E402
from seg_perception.geometry.free_space import OrganizedCloud  # noqa: E402
from seg_perception.geometry.ground_projection import GridSpec, GroundProjection  # noqa: E402
from seg_perception.inference.masks import group_lut, group_mask  # noqa: E402
from seg_perception.inference.segmenter import Segmenter  # noqa: E402
from seg_perception.learning.datasets import read_rgb  # noqa: E402
from seg_perception.ros import planner_messages as messages  # noqa: E402


def median_ms(fn, runs: int) -> float:
    return time_it(fn, warmup=1, runs=runs)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="driving")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    args = ap.parse_args()
    width, height = args.size

    frame = read_rgb(sorted((REPO / "sample_data" / "camvid_val" / "images").glob("*.png"))[0])
    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    seg = Segmenter(args.model, device="cpu", threads=args.threads)
    segment_ms = median_ms(lambda: seg.segment(frame), args.runs)
    result = seg.segment(frame)
    labels, confidence = result.labels, result.confidence
    classes = seg.classes
    drivable_lut, obstacle_lut = group_lut(classes.ids(classes.drivable)), group_lut(classes.ids(classes.obstacle))

    f = 0.9 * width  # about a 58 degree horizontal field of view
    camera = CameraModel.from_camera_info(width=width, height=height, k=[f, 0, width / 2 - 0.5, 0, f, height / 2 - 0.5,
                                                                         0, 0, 1],
                                          d=[-0.1, 0.02, 0, 0, 0], distortion_model="plumb_bob")
    pose = CameraPose.from_position_rpy([1.5, 0.0, 1.4], [0.0, 0.06, 0.0])
    t0 = time.perf_counter()
    proj = GroundProjection(camera, pose, max_range=30.0, grid=GridSpec())
    cloud = OrganizedCloud(proj)
    build_ms = (time.perf_counter() - t0) * 1000
    header = Header(frame_id="base_footprint")

    drivable = group_mask(labels, drivable_lut)  # the node has it anyway: it publishes drivable_mask

    def geometry() -> None:
        boundary = free_space.find_boundary(proj, labels, drivable)
        messages.camera_info(camera, header)
        messages.scan(free_space.scan_ranges(proj, boundary), proj, header)
        xy, cls = free_space.obstacle_points(boundary, obstacle_lut)
        messages.obstacle_cloud(xy, cls, np.zeros(len(xy), np.uint8), 0.5, header)
        messages.occupancy_grid(free_space.occupancy(proj, boundary, obstacle_lut, 70), proj.grid, header)
        messages.organized_cloud(cloud, labels, confidence, header)

    parts = {
        "boundary": lambda: free_space.find_boundary(proj, labels, drivable),
        "camera_info": lambda: messages.camera_info(camera, header),
        "organized cloud (fill + message)": lambda: messages.organized_cloud(cloud, labels, confidence, header),
    }
    boundary = free_space.find_boundary(proj, labels, drivable)
    parts["scan"] = lambda: messages.scan(free_space.scan_ranges(proj, boundary), proj, header)

    def obstacles() -> None:
        xy, cls = free_space.obstacle_points(boundary, obstacle_lut)
        messages.obstacle_cloud(xy, cls, np.zeros(len(xy), np.uint8), 0.5, header)

    parts["obstacles"] = obstacles
    parts["grid"] = lambda: messages.occupancy_grid(free_space.occupancy(proj, boundary, obstacle_lut, 70),
                                                    proj.grid, header)
    geometry_ms = median_ms(geometry, args.runs)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"CPU: {cpu}; {args.threads} inference threads; frame {width}x{height}; model {args.model}; "
          f"median of {args.runs} runs")
    print(f"projection tables (once per camera, pose and size): {build_ms:.0f} ms")
    print("| part | ms per frame |\n|---|---|")
    print(f"| segmentation (Segmenter.segment: decode-free, resize, inference, upsample) | {segment_ms:.1f} |")
    for name, fn in parts.items():
        print(f"| {name} | {median_ms(fn, args.runs):.2f} |")
    print(f"| **all geometric outputs** | **{geometry_ms:.2f}** |")
    share = geometry_ms / segment_ms
    print(f"geometric outputs / segmentation = {share:.1%} (budget 15 %): {'within' if share <= 0.15 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
