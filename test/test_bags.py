# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""make-bag / bag reading / replay: real bag files (mcap and sqlite3) from the bundled CamVid frames,
and a real DDS round trip for `replay`.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import dds_env

from seg_perception import bags
from seg_perception.bags import Bag, BagError, PairStats, make_bag, paired_frames
from seg_perception.classes import CAMVID
from seg_perception.learning.datasets import open_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
START = 1_700_000_000.0


def sample_dataset():
    return open_dataset("generic", images=SAMPLES / "images", labels=SAMPLES / "labels", classes=CAMVID)

def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "seg_perception.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def read_all(path, image_topic, label_topic):
    stats = PairStats()
    with Bag(path) as bag:
        frames = list(paired_frames(bag, image_topic, label_topic, stats))
    return frames, stats


@pytest.mark.parametrize("storage,compression", [("mcap", "none"), ("sqlite3", "none"), ("mcap", "jpeg"),
                                                 ("sqlite3", "png")])
def test_bag_reads_back_frames_and_stamps(tmp_path, storage, compression):
    ds = sample_dataset()
    out = tmp_path / "bag"
    summary = make_bag(ds, out, storage=storage, compression=compression, fps=10, start_time=START,
                       progress=False)
    image_topic = "/camera/image_raw" + ("/compressed" if compression != "none" else "")
    assert summary["image_topic"] == image_topic and summary["frames"] == len(ds) == 12

    with Bag(out) as bag:
        assert bag.storage == storage
        assert {t: (i.msgtype, i.count) for t, i in bag.topics.items()} == {
            image_topic: (bags.IMAGE if compression == "none" else bags.COMPRESSED, 12),
            "/camera/camera_info": (bags.CAMERA_INFO, 12),
            "/camera/ground_truth": (bags.IMAGE, 12)}
        assert bag.label_classes()["names"] == list(CAMVID.names)
        # CameraInfo: same stamps, image size filled in
        ts = bags.typestore()
        infos = [ts.deserialize_cdr(raw, mt) for _, mt, _, raw in bag.messages(["/camera/camera_info"])]
    frames, stats = read_all(out, image_topic, "/camera/ground_truth")
    assert stats.pairs == 12 and stats.skipped == 0
    expected_stamps = [int(round(START * 1e9)) + i * 100_000_000 for i in range(12)]
    assert [f.stamp_ns for f in frames] == expected_stamps
    assert [bags.stamp_ns(m.header) for m in infos] == expected_stamps
    assert all((m.width, m.height) == (480, 360) and m.header.frame_id == "camera" for m in infos)
    for i, frame in enumerate(frames):  # sequence (file name) order
        rgb, label = ds.read(i)
        np.testing.assert_array_equal(frame.label, label)  # labels are always lossless
        if compression == "jpeg":
            assert psnr(frame.rgb, rgb) > 35
        else:
            np.testing.assert_array_equal(frame.rgb, rgb)


def test_cli_make_bag_options(tmp_path):
    out = tmp_path / "small"
    r = cli("make-bag", out, "--images", SAMPLES / "images", "--labels", SAMPLES / "labels", "--classes", "camvid",
            "--max-frames", 3, "--fps", 5, "--frame-id", "cam_front", "--image-topic", "/front/image",
            "--label-topic", "/front/gt", "--info-topic", "/front/info", "--start-time", START,
            "--storage", "sqlite3", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "wrote 3 frames" in r.stdout
    frames, stats = read_all(out, "/front/image", "/front/gt")
    assert [f.stamp_ns - frames[0].stamp_ns for f in frames] == [0, 200_000_000, 400_000_000]
    assert stats.pairs == 3
    # the output is never overwritten
    r = cli("make-bag", out, "--images", SAMPLES / "images", "--labels", SAMPLES / "labels", "--classes", "camvid")
    assert r.returncode == 2 and "already exists" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_make_bag_failure_leaves_no_bag(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("0016E5_08001.png", "0016E5_08005.png"):
        shutil.copy(SAMPLES / "images" / name, images / name)
        shutil.copy(SAMPLES / "labels" / name, labels / name)
    (images / "0016E5_08005.png").write_bytes((SAMPLES / "images" / "0016E5_08005.png").read_bytes()[:1000])
    ds = open_dataset("generic", images=images, labels=labels, classes=CAMVID)
    with pytest.raises(Exception, match="corrupt"):
        make_bag(ds, tmp_path / "bag", start_time=START, progress=False)
    assert not (tmp_path / "bag").exists()


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "small"
    make_bag(sample_dataset(), out, max_frames=4, start_time=START, progress=False)
    return out


def test_missing_bag_and_missing_topic(small_bag, tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        Bag(tmp_path / "nope")
    with Bag(small_bag) as bag:
        with pytest.raises(BagError) as err:
            list(paired_frames(bag, "/camera/image_rect", "/camera/ground_truth", PairStats()))
    msg = str(err.value)
    assert "/camera/image_rect is not in bag" in msg
    for topic in ("/camera/image_raw", "/camera/camera_info", "/camera/ground_truth"):
        assert topic in msg  # the error lists what the bag has


def test_corrupt_bags(small_bag, tmp_path):
    # truncated mcap
    trunc = tmp_path / "truncated"
    shutil.copytree(small_bag, trunc)
    data_file = next(trunc.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(BagError, match="corrupt or truncated"):
        with Bag(trunc) as bag:
            list(bag.messages())
    # garbage sqlite3
    garbage = tmp_path / "garbage"
    make_bag(sample_dataset(), garbage, storage="sqlite3", max_frames=1, start_time=START, progress=False)
    db = next(garbage.glob("*.db3"))
    db.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(BagError, match="corrupt or truncated"):
        with Bag(garbage) as bag:
            list(bag.messages())
    # a folder without metadata.yaml
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 folder"):
        Bag(tmp_path / "empty")


def write_custom_bag(path, frames, storage="mcap"):
    """frames: (image stamp | None, rgb, image encoding, label stamp | None, label) -> a bag with two topics."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts = bags.typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap"
                else StoragePlugin.SQLITE3) as w:
        ic = w.add_connection("/img", bags.IMAGE, typestore=ts)
        lc = w.add_connection("/gt", bags.IMAGE, typestore=ts)
        for img_stamp, rgb, enc, lab_stamp, label in frames:
            if img_stamp is not None:
                w.write(ic, img_stamp, bytes(ts.serialize_cdr(bags.image_msg(ts, rgb, img_stamp, "c", enc),
                                                              bags.IMAGE)))
            if lab_stamp is not None:
                w.write(lc, lab_stamp, bytes(ts.serialize_cdr(bags.image_msg(ts, label, lab_stamp, "c", "mono8"),
                                                              bags.IMAGE)))


def test_unmatched_and_mismatched_frames_are_counted(tmp_path):
    ds = sample_dataset()
    (rgb0, lab0), (rgb1, lab1), (rgb2, lab2), (rgb3, lab3) = (ds.read(i) for i in range(4))
    s = [10**18 + i * 10**8 for i in range(5)]
    # bgr8 image: decoded to the same RGB pixels
    frames = [(s[0], rgb0[:, :, ::-1], "bgr8", s[0], lab0),
              (None, None, None, s[1], lab1),                   # label without image
              (s[2], rgb2, "rgb8", s[2], lab2[:200]),            # size mismatch
              (s[3], rgb3, "rgb8", None, None),                  # image without label
              (s[4], rgb1, "rgb8", s[4], lab1)]
    path = tmp_path / "mixed"
    write_custom_bag(path, frames)
    got, stats = read_all(path, "/img", "/gt")
    assert [f.stamp_ns for f in got] == [s[0], s[4]]
    np.testing.assert_array_equal(got[0].rgb, rgb0)
    assert (stats.labels_without_image, stats.images_without_label, stats.size_mismatch) == (1, 1, 1)
    assert stats.skipped == 3 and len(stats.examples) == 3


def test_unknown_encoding_is_an_error(tmp_path):
    rgb, label = sample_dataset().read(0)
    path = tmp_path / "weird"
    write_custom_bag(path, [(10**18, rgb, "weird24", 10**18, label)])
    with pytest.raises(BagError, match="encoding 'weird24' is not supported"):
        read_all(path, "/img", "/gt")


def test_replay_over_dds(small_bag, tmp_path, monkeypatch):
    """`seg-perception replay` publishes the recorded messages, byte for byte, with the recorded spacing."""
    env = dds_env(tmp_path, monkeypatch)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("replay_test", context=ctx)
    got = {"img": [], "info": []}
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/test/image", lambda m: got["img"].append((m, time.monotonic())), qos)
    node.create_subscription(CameraInfo, "/camera/camera_info", lambda m: got["info"].append(m), qos)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "seg_perception.cli", "replay", str(small_bag), "--rate", "2",
             "--topics", "/camera/image_raw", "/camera/camera_info", "--remap", "/camera/image_raw:=/test/image",
             "--wait-subscribers", "30", "--no-progress"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "published 8 messages" in proc.stdout
        deadline = time.monotonic() + 10
        while len(got["img"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    frames, _ = read_all(small_bag, "/camera/image_raw", "/camera/ground_truth")
    assert len(got["img"]) == 4 and len(got["info"]) == 4
    for (msg, _), frame in zip(got["img"], frames):
        assert bags.stamp_ns(msg.header) == frame.stamp_ns
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(360, 480, 3), frame.rgb)
    # recorded spacing 0.1 s at rate 2 -> 0.05 s apart (generous bounds for a loaded machine)
    gaps = np.diff([t for _, t in got["img"]])
    assert 0.02 < float(np.median(gaps)) < 0.5


def test_replay_start_offset_and_loop(small_bag, tmp_path, monkeypatch):
    """--start-offset skips the bag's first seconds; --loop starts over (here: two rounds)."""
    dds_env(tmp_path, monkeypatch)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from seg_perception.ros.replay import Replayer, init_context

    ctx = init_context()
    node = rclpy.create_node("loop_test", context=ctx)
    got = []
    node.create_subscription(Image, "/camera/image_raw", lambda m: got.append(bags.stamp_ns(m.header)),
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    sent = []
    try:
        with Bag(small_bag) as bag:
            player = Replayer(bag, node=node, topics=["/camera/image_raw"])
            assert player.wait_for_subscribers(20) == []
            stats = player.play(rate=4, start_offset=0.15, loop=True, max_loops=2, progress=False,
                                on_publish=lambda topic, stamp, t: sent.append(stamp))
            player.flush()
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ex.shutdown(timeout_sec=2)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    t0 = int(round(START * 1e9))
    third, fourth = t0 + 200_000_000, t0 + 300_000_000  # frames at 0.2 s and 0.3 s (0.0 and 0.1 skipped)
    assert stats.loops == 2 and stats.total() == 4
    assert sent == got == [third, fourth, third, fourth]


def test_replay_errors(small_bag, tmp_path, monkeypatch):
    dds_env(tmp_path, monkeypatch)
    r = cli("replay", small_bag, "--topics", "/nope", "--no-progress")
    assert r.returncode == 2 and "/nope is not in bag" in r.stderr and "/camera/image_raw" in r.stderr
    r = cli("replay", small_bag, "--remap", "bad", "--no-progress")
    assert r.returncode == 2 and "not of the form" in r.stderr
    r = cli("replay", tmp_path / "missing")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_replay_keeps_its_arguments_from_rcl_and_answers_as_a_node(small_bag, tmp_path, monkeypatch):
    """`replay`'s own `--remap old:=new` never reaches rcl (which would take it for a global remap);
    ROS arguments go after --ros-args; each replay node has its own name and answers parameter
    services (what `ros2 param dump` calls) while it plays.
    """
    env = dds_env(tmp_path, monkeypatch)
    import rclpy
    from rcl_interfaces.srv import ListParameters
    from rclpy.executors import SingleThreadedExecutor

    from seg_perception.ros.replay import init_context

    monkeypatch.setattr(sys, "argv", ["seg-perception", "replay", "bag", "--remap", "/a:=/b"])
    ctx = init_context()
    node = rclpy.create_node("argv_probe", context=ctx)
    try:
        assert node.create_publisher(ListParameters.Request, "/a", 1).topic_name == "/a"
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)

    def replay(*extra):
        # SIGINT's default action restored: a test run started in the background ignores SIGINT, and so
        # would the processes it starts (Python keeps an inherited SIG_IGN)
        return subprocess.Popen([sys.executable, "-m", "seg_perception.cli", "replay", str(small_bag), "--loop",
                                 "--no-progress", *extra], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    procs = [replay("--remap", "/camera/image_raw:=/a/image"), replay(),
             replay("--ros-args", "-r", "__node:=front_replay")]
    ctx = init_context()
    probe = rclpy.create_node("replay_probe", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(probe)
    try:
        names = {f"bag_replay_{procs[0].pid}", f"bag_replay_{procs[1].pid}", "front_replay"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not names <= {n for n, _ in probe.get_node_names_and_namespaces()}:
            ex.spin_once(timeout_sec=0.2)
        assert names <= {n for n, _ in probe.get_node_names_and_namespaces()}
        for name in names:
            client = probe.create_client(ListParameters, f"/{name}/list_parameters")
            assert client.wait_for_service(timeout_sec=30)
            future = client.call_async(ListParameters.Request())
            ex.spin_until_future_complete(future, timeout_sec=30)
            assert future.done() and "use_sim_time" in future.result().result.names, name
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        ex.shutdown(timeout_sec=2)
        probe.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert all("Traceback" not in out for out in outputs), outputs
