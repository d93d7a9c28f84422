# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Soak: segmentation_node fed real frames at a camera's rate for a long time; memory growth and latency drift.

Starts the node as its own process (as launch does, with the shipped parameter file), publishes
the bundled CamVid frames in a loop at --rate Hz for --minutes, and every --report seconds prints
the node's resident memory, the frames it answered and their latency (publish to labels received).
At the end: memory growth from the first report on (after warm-up) and the latency drift (median of
the last report window over the first). Not a test: the figures depend on the machine.

    .venv/bin/python benchmarks/soak.py --minutes 30 --rate 30
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=30.0, help="frames per second sent (default 30)")
    ap.add_argument("--report", type=float, default=60.0, help="seconds between report lines")
    ap.add_argument("--model", default="driving")
    args = ap.parse_args()

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", "101")  # above the tests' 1..100
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_frames.xml"))
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from seg_perception.learning.datasets import read_rgb
    from seg_perception.ros.ros_image import rgb_to_image

    node_log = open("/tmp/soak_node.log", "wb")
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "seg_perception.ros.node", "--ros-args", "--params-file",
         str(REPO / "config" / "drive.yaml"), "-p", f"model:={args.model}", "-r", "image:=/soak/image_raw",
         "-p", "stats_period:=0.0"],
        env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=node_log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = rclpy.create_node("soak_probe")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(Image, "/soak/image_raw", best_effort)
    sent: dict[int, float] = {}
    window: list[float] = []
    node.create_subscription(Image, "/segmentation/labels",
                             lambda m: window.append(time.monotonic() - sent.get(m.header.stamp.sec, time.monotonic())),
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    images = sorted((REPO / "sample_data" / "camvid_val" / "images").glob("*.png"))
    frames = [rgb_to_image(read_rgb(p), "rgb8") for p in images]
    while not pub.get_subscription_count():
        ex.spin_once(timeout_sec=0.1)
    reports = []
    start = time.monotonic()
    next_report = start + args.report
    n = 0
    print(f"soak: model {args.model}, {args.rate:g} frames/s for {args.minutes:g} min; node pid {node_proc.pid}")
    print("| minute | node RSS MB | frames answered | latency p50 ms | latency p95 ms |\n|---|---|---|---|---|")
    try:
        while time.monotonic() - start < 60 * args.minutes:
            n += 1
            msg = frames[n % len(frames)]
            msg.header.stamp.sec = n
            sent[n] = time.monotonic()
            pub.publish(msg)
            deadline = start + n / args.rate
            while time.monotonic() < deadline:
                ex.spin_once(timeout_sec=max(0.0, min(0.01, deadline - time.monotonic())))
            if time.monotonic() >= next_report:
                lat = sorted(window)
                row = (round((time.monotonic() - start) / 60, 1), rss_mb(node_proc.pid), len(lat),
                       1000 * statistics.median(lat) if lat else float("nan"),
                       1000 * lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"))
                reports.append(row)
                print(f"| {row[0]} | {row[1]:.0f} | {row[2]} | {row[3]:.1f} | {row[4]:.1f} |", flush=True)
                window.clear()
                sent = {k: v for k, v in sent.items() if k > n - 1000}
                next_report += args.report
    finally:
        node_proc.send_signal(signal.SIGINT)
        node_proc.wait(timeout=60)
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if len(reports) >= 2:
        first, last = reports[0], reports[-1]
        print(f"memory growth after the first report: {last[1] - first[1]:+.0f} MB "
              f"({first[1]:.0f} -> {last[1]:.0f} MB); "
              f"latency p50 drift {last[3] - first[3]:+.1f} ms ({first[3]:.1f} -> {last[3]:.1f}); "
              f"node exit {node_proc.returncode}; frames sent {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
