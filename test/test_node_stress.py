# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The node under hostile and heavy input over real DDS: fuzzed messages at full speed, a 200 Hz burst
of 1280x720 frames, a camera that vanishes and returns, a frame size that changes mid-stream.

Memory bounds are on the node process's resident set (VmRSS): after 1000 fuzzed messages it may grow
by at most FUZZ_RSS_GROWTH_MB, after the burst by at most BURST_RSS_GROWTH_MB (decoders and the
ONNX Runtime arena settle within the first frames; a leak of one frame per message would be GBs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from conftest import REPO, SAMPLES, NodeProcess, jpeg_claiming, node_args, rss_mb, wait_for
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.image_codec import SUPPORTED_ENCODINGS, encode_compressed
from seg_perception.learning.datasets import read_rgb
from seg_perception.ros.ros_image import rgb_to_image

CAMERA = "/stress_cam/image_raw"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
START_TIMEOUT = 180.0
FUZZ_MESSAGES = 1000
FUZZ_RSS_GROWTH_MB = 300
BURST_RSS_GROWTH_MB = 400
PROFILE = REPO / "config" / "fastdds_large_frames.xml"


class Probe:
    def __init__(self, tag: str, compressed: bool) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"stress_{tag}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        topic = CAMERA + "/compressed" if compressed else CAMERA
        self.pub = self.node.create_publisher(CompressedImage if compressed else Image, topic, RELIABLE)
        self.labels: dict = {}
        self.sub = self.node.create_subscription(
            Image, "/segmentation/labels",
            lambda m: self.labels.__setitem__((m.header.stamp.sec, m.header.stamp.nanosec), (time.monotonic(), m)),
            RELIABLE)
        self.sec = 5000

    def spin(self, seconds: float) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def header(self) -> Header:
        self.sec += 1
        return Header(stamp=Time(sec=self.sec, nanosec=7), frame_id="stress_cam")

    def answered(self, header: Header, timeout: float = 60.0):
        key = (header.stamp.sec, header.stamp.nanosec)
        assert wait_for(lambda: key in self.labels, timeout, self.spin), f"no labels for {key}"
        return self.labels[key][1]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="module")
def rgb():
    return read_rgb(sorted((SAMPLES / "images").glob("*.png"))[0])


def _start(tmp_path, compressed: bool) -> tuple[NodeProcess, Probe]:
    proc = NodeProcess(node_args(params={"model": "camvid", "qos_reliability": "reliable", "qos_depth": 1,
                                         "input_transport": "compressed" if compressed else "raw",
                                         "publish_overlay": False, "stats_period": 0.0},
                                 remaps={"image": CAMERA, "image/compressed": CAMERA + "/compressed"}),
                       tmp_path / f"node_{compressed}.log")
    probe = Probe("c" if compressed else "r", compressed)
    assert wait_for(lambda: not proc.alive() or (probe.pub.get_subscription_count() > 0
                                                 and probe.sub.get_publisher_count() > 0),
                    START_TIMEOUT, probe.spin), proc.output()
    return proc, probe


def _fuzzed_raw(rng: np.random.Generator, good: Image) -> Image:
    msg = Image(header=Header(stamp=Time(sec=1, nanosec=int(rng.integers(1, 10**9)))))
    msg.encoding = str(rng.choice(list(SUPPORTED_ENCODINGS) + ["32FC1", "", "rgb8 ", "x" * 300, "bgr8\x00"]))
    big = rng.random() < 0.1
    msg.width = int(rng.integers(0, 100_000 if big else 700))
    msg.height = int(rng.integers(0, 100_000 if big else 500))
    msg.step = int(rng.choice([msg.width * 3, msg.width * 2, msg.width, rng.integers(0, 5000)]))
    n = int(rng.choice([0, 1, len(good.data) // 2, len(good.data), int(rng.integers(0, 600_000))]))
    msg.data = bytes(rng.integers(0, 256, n, dtype=np.uint8)) if rng.random() < 0.5 else bytes(good.data[:n])
    msg.is_bigendian = int(rng.integers(0, 2))
    return msg


def _fuzzed_compressed(rng: np.random.Generator, seeds: list[bytes]) -> CompressedImage:
    data = bytearray(seeds[int(rng.integers(0, len(seeds)))])
    for _ in range(int(rng.integers(0, 6))):
        if not data:
            break
        i = int(rng.integers(0, len(data)))
        op = rng.integers(0, 3)
        if op == 0:
            data[i] = int(rng.integers(0, 256))
        elif op == 1:
            data = data[:i]
        else:
            data[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8))
    fmt = str(rng.choice(["jpeg", "png", "rgb8; jpeg compressed bgr8", "theora", "", "PNG"]))
    return CompressedImage(header=Header(stamp=Time(sec=1, nanosec=int(rng.integers(1, 10**9)))), format=fmt,
                           data=bytes(data))


@pytest.mark.parametrize("compressed", [False, True], ids=["Image", "CompressedImage"])
def test_a_thousand_fuzzed_messages_at_full_speed(ros_env, tmp_path, rgb, compressed):
    proc, probe = _start(tmp_path, compressed)
    try:
        # warm up (model arena, decoders), then measure from there
        header = probe.header()
        probe.pub.publish(CompressedImage(header=header, format="jpeg", data=encode_compressed(rgb, "jpeg"))
                          if compressed else rgb_to_image(rgb, "rgb8", header))
        probe.answered(header)
        before = rss_mb(proc.proc.pid)
        rng = np.random.default_rng(11 if compressed else 7)
        good = rgb_to_image(rgb, "rgb8")
        seeds = [encode_compressed(rgb, "jpeg"), encode_compressed(rgb[:100, :120], "png"),
                 jpeg_claiming(rgb, 30000, 30000)]
        for _ in range(FUZZ_MESSAGES):
            probe.pub.publish(_fuzzed_compressed(rng, seeds) if compressed else _fuzzed_raw(rng, good))
        probe.spin(0.5)
        assert proc.alive(), proc.output()[-3000:]
        # the next good frame is answered with its header
        header = probe.header()
        probe.pub.publish(CompressedImage(header=header, format="jpeg", data=encode_compressed(rgb, "jpeg"))
                          if compressed else rgb_to_image(rgb, "rgb8", header))
        out = probe.answered(header, timeout=120.0)
        assert out.header.frame_id == "stress_cam" and (out.width, out.height) == (rgb.shape[1], rgb.shape[0])
        growth = rss_mb(proc.proc.pid) - before
        assert growth < FUZZ_RSS_GROWTH_MB, f"node grew by {growth:.0f} MB"
        log = proc.output()
        assert "Traceback" not in log and "skipped frame" in log
        assert log.count("skipped frame") < 200, "the bad-input log is not rate-limited"
    finally:
        probe.close()
        assert proc.stop(signal.SIGINT) == 0, proc.output()[-3000:]


BURST_PUBLISHER = """
import sys, time, numpy as np, rclpy, cv2
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from seg_perception.learning.datasets import read_rgb
from seg_perception.ros.ros_image import rgb_to_image
rclpy.init()
node = rclpy.create_node("burst_probe")
pub = node.create_publisher(Image, sys.argv[1], QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
rgb = cv2.resize(read_rgb(sys.argv[2]), (1280, 720))
msgs = [rgb_to_image(np.roll(rgb, 37 * i, axis=1), "rgb8") for i in range(8)]
deadline = time.monotonic() + 60
while not pub.get_subscription_count() and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.1)
start = time.monotonic(); n = 0
while time.monotonic() - start < float(sys.argv[3]):
    m = msgs[n % 8]; n += 1
    m.header.stamp.sec, m.header.stamp.nanosec = 9000 + n, 0
    pub.publish(m)
    next_t = start + n / 200.0
    while time.monotonic() < next_t:
        pass
end = time.monotonic()
print(f"sent {n} frames in {end - start:.2f} s; last stamp {9000 + n}; stop {end:.6f}", flush=True)
"""


def test_a_200_hz_burst_of_hd_frames_leaves_no_backlog(ros_env, tmp_path, rgb, monkeypatch):
    """10 s of 1280x720 rgb8 at up to 200 Hz (best-effort, the shipped Fast DDS profile): the node works on
    the newest frame, so the last output comes within about one frame time after the input stops, and
    its memory stays bounded. Its two parallel workers overlap, and the outputs still leave in the
    frames' order.
    """
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE))
    proc = NodeProcess(node_args(params={"model": "camvid", "publish_overlay": False, "stats_period": 0.0,
                                         "diagnostics_period": 1.0, "workers": 2}, remaps={"image": CAMERA}),
                       tmp_path / "burst.log")
    got: dict = {}
    order: list[int] = []
    overlapping: list[int] = []
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("burst_listener", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)

    def on_labels(m: Image) -> None:
        got[m.header.stamp.sec] = time.monotonic()
        order.append(m.header.stamp.sec)

    def on_diagnostics(m: DiagnosticArray) -> None:
        for status in m.status:
            values = {kv.key: kv.value for kv in status.values}
            if "overlapping_runs_total" in values:
                overlapping.append(int(values["overlapping_runs_total"]))

    node.create_subscription(Image, "/segmentation/labels", on_labels, RELIABLE)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    script = tmp_path / "burst.py"
    script.write_text(BURST_PUBLISHER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    frame = str(sorted((SAMPLES / "images").glob("*.png"))[0])
    try:
        # warm-up burst of 2 s: model arena, first-frame costs; then measure
        subprocess.run([sys.executable, str(script), CAMERA, frame, "2"], env=env, capture_output=True, timeout=180)
        assert wait_for(lambda: len(got) > 0 or not proc.alive(), START_TIMEOUT, lambda s: ex.spin_once(timeout_sec=s))
        assert proc.alive(), proc.output()
        before = rss_mb(proc.proc.pid)
        wait_for(lambda: False, 1.0, lambda s: ex.spin_once(timeout_sec=s))  # the warm-up's last outputs
        got.clear()
        order.clear()
        pub = subprocess.Popen([sys.executable, str(script), CAMERA, frame, "10"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        while pub.poll() is None:
            ex.spin_once(timeout_sec=0.05)
        out = pub.stdout.read()
        assert pub.returncode == 0, out
        sent = int(out.split("sent ")[1].split()[0])
        last_stamp = int(out.split("last stamp ")[1].split(";")[0])
        stop = float(out.split("stop ")[1])
        wait_for(lambda: last_stamp in got, 5.0, lambda s: ex.spin_once(timeout_sec=s))
        assert got, proc.output()[-2000:]
        times = sorted(got.values())
        frame_time = float(np.median(np.diff(times))) if len(times) > 2 else 1.0
        last_output = max(got.values())
        print(f"burst: {sent} frames sent in 10 s, {len(got)} answered, frame time {frame_time * 1000:.0f} ms, "
              f"last output {1000 * (last_output - stop):.0f} ms after the input stopped")
        assert sent > 500
        # no backlog: the last output follows the input's end within about one frame time
        assert last_output - stop <= 1.5 * frame_time + 0.25, (last_output - stop, frame_time)
        # and it is one of the last frames sent, not a stale one
        assert max(got) >= last_stamp - max(3, int(3 * frame_time * 200))
        # the outputs in the frames' order although two workers overlapped
        assert order == sorted(order) and len(set(order)) == len(order)
        wait_for(lambda: overlapping and overlapping[-1] > 0, 5.0, lambda s: ex.spin_once(timeout_sec=s))
        assert overlapping and overlapping[-1] > 0, overlapping[-5:]
        growth = rss_mb(proc.proc.pid) - before
        assert growth < BURST_RSS_GROWTH_MB, f"node grew by {growth:.0f} MB"
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        assert proc.stop(signal.SIGINT) == 0, proc.output()[-2000:]


def test_a_vanishing_camera_and_a_changing_frame_size(ros_env, tmp_path, rgb):
    proc, probe = _start(tmp_path, compressed=False)
    try:
        for size in [(480, 360), (640, 480), (320, 240), (480, 360)]:
            header = probe.header()
            frame = np.ascontiguousarray(cv2.resize(rgb, size))
            probe.pub.publish(rgb_to_image(frame, "rgb8", header))
            out = probe.answered(header)
            assert (out.width, out.height) == size
        # the camera goes away: the node notices no publisher; then a new one comes and is answered
        probe.node.destroy_publisher(probe.pub)
        assert wait_for(lambda: probe.node.count_subscribers(CAMERA) == 1 and
                        probe.node.count_publishers(CAMERA) == 0, 30.0, probe.spin)
        probe.spin(1.0)
        probe.pub = probe.node.create_publisher(Image, CAMERA, RELIABLE)
        assert wait_for(lambda: probe.pub.get_subscription_count() > 0, 60.0, probe.spin)
        header = probe.header()
        probe.pub.publish(rgb_to_image(rgb, "rgb8", header))
        assert probe.answered(header).header.frame_id == "stress_cam"
        assert proc.alive()
    finally:
        probe.close()
        assert proc.stop(signal.SIGINT) == 0, proc.output()[-2000:]
