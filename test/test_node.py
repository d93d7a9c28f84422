# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""segmentation_node end to end: a real node process, real DDS, real CamVid frames.

One node process per input transport serves many checks (model loading
dominates the start-up time); failure-at-start cases get their own short-lived
processes.
"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import SAMPLES, NodeProcess, RosProbe, jpeg_claiming, node_args, wait_for
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_perception.classes import CAMVID
from seg_perception.image_codec import decode_compressed, encode_compressed
from seg_perception.inference.segmenter import Segmenter
from seg_perception.learning.datasets import read_label, read_rgb
from seg_perception.ros.ros_image import rgb_to_compressed, rgb_to_image

CAMERA = "/test_cam/image_raw"
OUT = "/segmentation/"
MASK_TOPICS = ("labels", "drivable_mask", "obstacle_mask", "confidence")
START_TIMEOUT = 180.0  # model loading on a busy 2-core machine
FRAME_TIMEOUT = 60.0
#: The node's labels vs CamVid ground truth on labelled pixels of real val frames.
MIN_GT_AGREEMENT = 0.85
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
FRAMES = sorted((SAMPLES / "images").glob("*.png"))
DRIVABLE = CAMVID.ids(CAMVID.drivable)
OBSTACLE = CAMVID.ids(CAMVID.obstacle)


def to_array(msg: Image) -> np.ndarray:
    ch = msg.step // msg.width
    arr = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, : msg.width * ch]
    return arr.reshape(msg.height, msg.width, ch) if ch > 1 else arr


class Probe(RosProbe):
    """An in-process rclpy node: publishes camera frames, records the node's outputs."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"probe_{tag}")
        self.pub_raw = self.node.create_publisher(Image, CAMERA, RELIABLE)
        self.pub_compressed = self.node.create_publisher(CompressedImage, CAMERA + "/compressed", RELIABLE)
        self.received: dict[str, dict[tuple, Image]] = {t: {} for t in MASK_TOPICS + ("overlay",)}
        self.subs = {t: self._subscribe(t) for t in MASK_TOPICS}
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.param_client = self.node.create_client(SetParameters, "/segmentation/set_parameters")
        self.stamp_sec = 1000

    def _subscribe(self, topic: str):
        def store(msg: Image, topic=topic) -> None:
            self.received[topic][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        return self.node.create_subscription(Image, OUT + topic, store, RELIABLE)

    def wait_ready(self, proc: NodeProcess, compressed: bool = False) -> None:
        """The node subscribes only once its model is loaded, so a matched publisher means ready."""
        pub = self.pub_compressed if compressed else self.pub_raw
        subs = [self.subs[t] for t in MASK_TOPICS]
        ok = wait_for(lambda: not proc.alive() or (pub.get_subscription_count() > 0
                                                    and all(s.get_publisher_count() > 0 for s in subs)),
                      START_TIMEOUT, self.spin)
        assert proc.alive(), f"node exited with {proc.proc.returncode}:\n{proc.output()}"
        assert ok, f"node did not come up in {START_TIMEOUT} s:\n{proc.output()}"

    def header(self) -> Header:
        self.stamp_sec += 1
        return Header(stamp=Time(sec=self.stamp_sec, nanosec=123456789), frame_id=f"cam_{self.stamp_sec}")

    def send(self, msg, *, compressed: bool = False) -> tuple:
        (self.pub_compressed if compressed else self.pub_raw).publish(msg)
        return (msg.header.stamp.sec, msg.header.stamp.nanosec)

    def wait_outputs(self, key: tuple, topics=MASK_TOPICS, timeout: float = FRAME_TIMEOUT) -> dict[str, Image]:
        ok = wait_for(lambda: all(key in self.received[t] for t in topics), timeout, self.spin)
        missing = [t for t in topics if key not in self.received[t]]
        assert ok, f"no {missing} for frame stamped {key}"
        return {t: self.received[t][key] for t in topics}

    def set_parameters(self, **values):
        assert self.param_client.wait_for_service(timeout_sec=30.0)
        req = SetParameters.Request()
        for name, value in values.items():
            pv = ParameterValue()
            if isinstance(value, bool):
                pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
            elif isinstance(value, float):
                pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
            elif isinstance(value, list) and all(isinstance(v, int) for v in value) and (value or name == "palette"):
                pv.type, pv.integer_array_value = ParameterType.PARAMETER_INTEGER_ARRAY, value
            elif isinstance(value, list):
                pv.type, pv.string_array_value = ParameterType.PARAMETER_STRING_ARRAY, value
            elif isinstance(value, str):
                pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
            req.parameters.append(ParameterMsg(name=name, value=pv))
        future = self.param_client.call_async(req)
        assert wait_for(future.done, 30.0, self.spin)
        return future.result().results

    def latest_diagnostics(self, after: float, timeout: float = 30.0) -> dict:
        """Key/values of the first /diagnostics message received after monotonic time `after`."""
        marker = len(self.diagnostics)
        # The second message after now was certainly made after now (the first may be in flight).
        assert wait_for(lambda: len(self.diagnostics) > marker + 1 and time.monotonic() > after, timeout, self.spin)
        status = self.diagnostics[-1].status[0]
        return {kv.key: kv.value for kv in status.values}

    def wait_skipped(self, count: int, timeout: float = FRAME_TIMEOUT) -> None:
        """Until the node reports `count` skipped frames in total (so the next frame cannot replace a bad one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self.latest_diagnostics(after=time.monotonic())["skipped_total"]) >= count:
                return
        raise AssertionError(f"node did not report {count} skipped frames")


def check_outputs(out: dict[str, Image], header: Header, width: int, height: int) -> np.ndarray | None:
    """Header, size and encoding of every output, and masks consistent with the labels."""
    for topic, msg in out.items():
        assert msg.header.stamp.sec == header.stamp.sec and msg.header.stamp.nanosec == header.stamp.nanosec, topic
        assert msg.header.frame_id == header.frame_id, topic
        assert (msg.width, msg.height) == (width, height), topic
        assert msg.encoding == ("rgb8" if topic == "overlay" else "mono8"), topic
    if "labels" not in out:
        return None
    labels = to_array(out["labels"])
    assert labels.max() < CAMVID.num_classes
    for topic, ids in (("drivable_mask", DRIVABLE), ("obstacle_mask", OBSTACLE)):
        if topic in out:
            np.testing.assert_array_equal(to_array(out[topic]), np.where(np.isin(labels, ids), 255, 0))
    return labels


@pytest.fixture(scope="module")
def library():
    return Segmenter("camvid", device="cpu")


@pytest.fixture(scope="module")
def frames():
    return [read_rgb(p) for p in FRAMES[:3]]


@pytest.fixture(scope="module")
def raw_node(module_ros_env, tmp_path_factory):
    """One node on raw Image input (reliable input QoS so a busy machine loses no test frame)."""
    log = tmp_path_factory.mktemp("node") / "raw.log"
    proc = NodeProcess(node_args(params={"model": "camvid", "qos_reliability": "reliable", "qos_depth": 5,
                                         "diagnostics_period": 0.5, "stats_period": 5.0},
                                 remaps={"image": CAMERA}), log)
    probe = Probe("raw")
    try:
        probe.wait_ready(proc)
        yield proc, probe
    finally:
        probe.close()
        code = proc.stop(signal.SIGINT)
    assert code == 0, f"node did not shut down cleanly on SIGINT (exit {code}):\n{proc.output()}"
    assert "Traceback" not in proc.output(), proc.output()


ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_gbrg8"]


def test_every_encoding_gives_consistent_outputs(raw_node, frames, library):
    proc, probe = raw_node
    rgb = frames[0]
    h, w = rgb.shape[:2]
    expected = library.segment(rgb).labels
    results = {}
    for enc in ENCODINGS:
        header = probe.header()
        out = probe.wait_outputs(probe.send(rgb_to_image(rgb, enc, header)))
        results[enc] = check_outputs(out, header, w, h)
        conf = to_array(out["confidence"])
        assert conf.max() > 0
    # Lossless encodings decode to the same frame, so the node must give the library's labels.
    for enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
        assert (results[enc] == expected).mean() > 0.999, enc
    for enc in ("mono8", "yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_gbrg8"):
        assert results[enc].shape == (h, w)
    # Row padding (step > width * 3) and a frame size other than the network's.
    small = rgb[::2, ::2].copy()
    header = probe.header()
    out = probe.wait_outputs(probe.send(rgb_to_image(small, "rgb8", header, step=small.shape[1] * 3 + 64)))
    labels = check_outputs(out, header, small.shape[1], small.shape[0])
    assert (labels == library.segment(small).labels).mean() > 0.999
    assert proc.alive()


def test_labels_agree_with_ground_truth(raw_node, frames, library):
    proc, probe = raw_node
    hits = total = 0
    for path, rgb in zip(FRAMES, frames):
        header = probe.header()
        out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "bgr8", header)))
        labels = check_outputs(out, header, rgb.shape[1], rgb.shape[0])
        assert (labels == library.segment(rgb).labels).mean() > 0.999, path.name
        gt = read_label(SAMPLES / "labels" / path.name)
        valid = gt != CAMVID.ignore_index
        hits += int((labels[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert hits / total > MIN_GT_AGREEMENT, f"{hits / total:.3f} of labelled pixels agree with ground truth"


def test_overlay_only_while_subscribed(raw_node, frames):
    proc, probe = raw_node
    rgb = frames[1]
    # No subscriber: frames are processed but no overlay is computed.
    key = probe.send(rgb_to_image(rgb, "rgb8", probe.header()))
    probe.wait_outputs(key)
    diag = probe.latest_diagnostics(after=time.monotonic())
    assert int(diag["frames_processed_total"]) > 0
    assert diag["overlays_total"] == "0", diag

    sub = probe._subscribe("overlay")
    assert wait_for(lambda: sub.get_publisher_count() > 0, 30.0, probe.spin)
    results = probe.set_parameters(overlay_alpha=1.0)
    assert results[0].successful, results[0].reason
    got = None
    for _ in range(20):  # the node sees the new subscriber shortly after we see its publisher
        header = probe.header()
        key = probe.send(rgb_to_image(rgb, "rgb8", header))
        out = probe.wait_outputs(key)
        if wait_for(lambda: key in probe.received["overlay"], 3.0, probe.spin):
            got = probe.received["overlay"][key], out, header
            break
    assert got is not None, "overlay never published although subscribed"
    ov, out, header = got
    check_outputs({"overlay": ov}, header, rgb.shape[1], rgb.shape[0])
    # alpha 1: the overlay is exactly the class colours.
    labels = to_array(out["labels"])
    np.testing.assert_array_equal(to_array(ov), CAMVID.palette_array()[labels])
    assert probe.set_parameters(overlay_alpha=0.5)[0].successful

    # Unsubscribed again: the count of computed overlays stops growing.
    probe.node.destroy_subscription(sub)
    assert wait_for(lambda: probe.node.count_subscribers(OUT + "overlay") == 0, 30.0, probe.spin)
    probe.spin(1.0)
    before = int(probe.latest_diagnostics(after=time.monotonic())["overlays_total"])
    assert before >= 1
    for _ in range(2):
        probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", probe.header())))
    after = probe.latest_diagnostics(after=time.monotonic())
    assert int(after["overlays_total"]) == before, after


def test_runtime_parameters(raw_node, frames):
    proc, probe = raw_node
    rgb = frames[2]
    res = probe.set_parameters(obstacle_classes=["Car"])
    assert res[0].successful, res[0].reason
    out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", probe.header())))
    labels = to_array(out["labels"])
    np.testing.assert_array_equal(to_array(out["obstacle_mask"]), np.where(labels == CAMVID.ids(["Car"])[0], 255, 0))

    res = probe.set_parameters(obstacle_classes=["Car", "Unicorn"])
    assert not res[0].successful and "Unicorn" in res[0].reason, res[0].reason
    res = probe.set_parameters(overlay_alpha=1.5)
    assert not res[0].successful, "overlay_alpha outside 0..1 accepted"
    res = probe.set_parameters(palette=[1, 2, 3])
    assert not res[0].successful and "palette" in res[0].reason, res[0].reason
    res = probe.set_parameters(device="cpu")
    assert not res[0].successful, "read-only parameter changed at runtime"
    res = probe.set_parameters(output_resolution="huge")
    assert not res[0].successful, res[0].reason

    # Back to the model's groups with an empty list; the mask follows immediately.
    res = probe.set_parameters(obstacle_classes=[], drivable_classes=["Road", "Pavement"])
    assert all(r.successful for r in res), [r.reason for r in res]
    header = probe.header()
    out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", header)))
    labels = check_outputs({k: v for k, v in out.items() if k != "drivable_mask"}, header, rgb.shape[1], rgb.shape[0])
    np.testing.assert_array_equal(to_array(out["drivable_mask"]),
                                  np.where(np.isin(labels, CAMVID.ids(["Road", "Pavement"])), 255, 0))
    assert probe.set_parameters(drivable_classes=[])[0].successful
    assert "parameters changed" in proc.output()
    # an array is logged as written, not as array('q', [...])
    palette = [int(v) for v in CAMVID.palette_array()[:CAMVID.num_classes].reshape(-1)]
    assert probe.set_parameters(palette=palette)[0].successful
    assert wait_for(lambda: f"palette={palette}" in proc.output(), 10.0, probe.spin), proc.output()[-2000:]
    assert "array(" not in proc.output()
    assert probe.set_parameters(palette=[])[0].successful


def _dump(probe) -> dict:
    """What `ros2 param dump` does: list every parameter, get them all in one request."""
    from rcl_interfaces.srv import GetParameters, ListParameters
    from rclpy.parameter import parameter_value_to_python
    lister = probe.node.create_client(ListParameters, "/segmentation/list_parameters")
    getter = probe.node.create_client(GetParameters, "/segmentation/get_parameters")
    assert lister.wait_for_service(timeout_sec=30) and getter.wait_for_service(timeout_sec=30)
    future = lister.call_async(ListParameters.Request())
    assert wait_for(future.done, 30, probe.spin)
    names = list(future.result().result.names)
    future = getter.call_async(GetParameters.Request(names=names))
    assert wait_for(future.done, 30, probe.spin)
    values = future.result().values
    assert len(values) == len(names), f"get_parameters answered {len(values)} of {len(names)} names"
    return {n: parameter_value_to_python(v) for n, v in zip(names, values)}


def test_every_parameter_dumps_and_the_dump_loads_back(raw_node, frames, tmp_path):
    """All parameters, arrays included, answer one get_parameters request (ros2 param dump, rqt), and a
    node started from the dump has the same values.
    """
    import yaml
    proc, probe = raw_node
    assert probe.set_parameters(obstacle_classes=["Car", "Pedestrian"], overlay_alpha=0.7)[0].successful
    try:
        dumped = _dump(probe)
    finally:
        assert probe.set_parameters(obstacle_classes=[], overlay_alpha=0.5)[0].successful
    for name in ("drivable_classes", "palette", "camera_position", "camera_rpy", "model", "max_range"):
        assert name in dumped, name
    assert dumped["obstacle_classes"] == ["Car", "Pedestrian"] and dumped["camera_position"] == []
    # the dump as ros2 param dump writes it (dotted names nested), loaded by a second node
    nested: dict = {}
    for name, value in dumped.items():
        *path, leaf = name.split(".") if not name.startswith("qos_overrides.") else (
            ["qos_overrides", name[len("qos_overrides."):].rsplit(".", 2)[0], *name.rsplit(".", 2)[1:]])
        node = nested
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value
    params = tmp_path / "dump.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    other = NodeProcess(["--params-file", str(params), "-r", "__ns:=/reloaded", "-r", f"image:={CAMERA}"],
                        tmp_path / "reloaded.log")
    try:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        getter = probe.node.create_client(GetParameters, "/reloaded/segmentation/get_parameters")
        assert getter.wait_for_service(timeout_sec=START_TIMEOUT), other.output()
        names = [n for n in dumped if not n.startswith("qos_overrides.")]
        future = getter.call_async(GetParameters.Request(names=names))
        assert wait_for(future.done, 30, probe.spin)
        reloaded = {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
        assert reloaded == {n: dumped[n] for n in names}
    finally:
        other.stop()


def test_flip_tta_switches_at_runtime(raw_node, frames, library):
    proc, probe = raw_node
    rgb = frames[1]
    assert probe.set_parameters(flip_tta=True)[0].successful
    try:
        out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", probe.header())))
        with_tta = to_array(out["labels"])
    finally:
        assert probe.set_parameters(flip_tta=False)[0].successful
    assert (with_tta == library.segment(rgb, flip_tta=True).labels).mean() > 0.999
    assert (with_tta != library.segment(rgb).labels).any(), "flip_tta changed nothing"
    out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", probe.header())))
    assert (to_array(out["labels"]) == library.segment(rgb).labels).mean() > 0.999


def _bad_frames(rgb: np.ndarray, header_fn) -> list[tuple[str, Image, str]]:
    """(case, message, text expected in the node's log) for each kind of broken frame."""
    good = rgb_to_image(rgb, "rgb8")
    cases = []

    def variant(case, expect, **fields):
        msg = rgb_to_image(rgb, "rgb8", header_fn())
        for k, v in fields.items():
            setattr(msg, k, v)
        cases.append((case, msg, expect))

    variant("unknown encoding", "unsupported image encoding '32FC1'", encoding="32FC1")
    variant("short data", "expected step*height", data=good.data[: len(good.data) // 2])
    variant("small step", "is smaller than width", step=good.width * 3 - 3)
    variant("zero size", "zero size", width=0, height=0, step=0, data=good.data[:0])
    odd = rgb_to_image(np.ascontiguousarray(rgb[:, :2]), "yuv422", header_fn())
    odd.width, odd.step = 1, 2
    cases.append(("odd width yuv422", odd, "needs an even width"))
    variant("absurd size", "Mpixel limit", width=100_000, height=100_000, step=300_000)
    return cases


def test_bad_frames_are_skipped_and_the_node_goes_on(raw_node, frames):
    proc, probe = raw_node
    rgb = frames[0]
    start = int(probe.latest_diagnostics(after=time.monotonic())["skipped_total"])
    cases = _bad_frames(rgb, probe.header)
    for n, (case, bad, _) in enumerate(cases, 1):
        bad_key = probe.send(bad)
        probe.wait_skipped(start + n)
        header = probe.header()
        out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", header)))
        check_outputs(out, header, rgb.shape[1], rgb.shape[0])
        assert bad_key not in probe.received["labels"], case
        assert proc.alive(), f"node died after {case}:\n{proc.output()}"
    diag = probe.latest_diagnostics(after=time.monotonic())
    assert int(diag["skipped_total"]) - start == len(cases), diag
    log = proc.output()
    for case, _, expect in cases:
        assert expect in log, f"no log line for {case} ('{expect}'):\n{log}"
    assert "Traceback" not in log


def test_a_changing_bad_encoding_is_logged_once_per_period(raw_node, frames):
    """The bad-input log limit is per kind of problem, not per message text: 30 frames with 30
    made-up encodings within a second give one log line (with the count following later).
    """
    proc, probe = raw_node
    rgb = frames[0]
    start = int(probe.latest_diagnostics(after=time.monotonic())["skipped_total"])
    before = proc.output().count("skipped frame from")
    for i in range(30):
        bad = rgb_to_image(rgb, "rgb8", probe.header())
        bad.encoding = f"made_up_{i}"
        probe.send(bad)
        probe.spin(0.01)
    probe.wait_skipped(start + 30)
    assert proc.output().count("skipped frame from") - before <= 1, proc.output()[-3000:]


def test_outputs_are_the_nodes_private_names_and_a_namesake_is_refused(raw_node, frames, tmp_path):
    """Outputs are ~/labels...: /segmentation/labels for the default name, /other/labels for a node
    named other in the same namespace (no collision); a second /segmentation refuses to start.
    """
    proc, probe = raw_node
    same = NodeProcess(node_args(params={"model": "camvid"}, remaps={"image": CAMERA}), tmp_path / "same.log")
    code = same.wait(timeout=START_TIMEOUT)
    assert code == 1, same.output()
    assert "another node named /segmentation is already running" in same.output()
    assert "[ERROR]" in same.output() and "Traceback" not in same.output()
    other = NodeProcess(node_args(params={"model": "camvid", "qos_reliability": "reliable"},
                                  remaps={"image": CAMERA, "__node": "other"}), tmp_path / "other.log")
    try:
        got = []
        sub = probe.node.create_subscription(Image, "/other/labels", got.append, RELIABLE)
        assert wait_for(lambda: not other.alive() or (sub.get_publisher_count() > 0
                                                       and probe.pub_raw.get_subscription_count() >= 2),
                        START_TIMEOUT, probe.spin), other.output()
        header = probe.header()
        key = probe.send(rgb_to_image(frames[0], "rgb8", header))
        probe.wait_outputs(key)  # the original node still answers on /segmentation/...
        assert wait_for(lambda: any(m.header.stamp == header.stamp for m in got), FRAME_TIMEOUT, probe.spin)
        probe.node.destroy_subscription(sub)
    finally:
        assert other.stop() == 0, other.output()
    assert proc.alive()


def test_a_matched_publisher_without_frames_is_reported_with_the_fix(ros_env, start_node):
    """A camera matched but silent (as when its frames are too large for the transport): a WARN in
    /diagnostics and a log line that say what to do.
    """
    proc = start_node(node_args(params={"model": "camvid", "diagnostics_period": 0.5, "stats_period": 1.0},
                                remaps={"image": CAMERA}))
    probe = Probe("silent")  # its raw publisher on CAMERA matches and never publishes
    try:
        probe.wait_ready(proc)
        diag = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe.latest_diagnostics(after=time.monotonic())
            diag = probe.diagnostics[-1].status[0]
            if "although" in diag.message:
                break
        assert diag.level == DiagnosticStatus.WARN, diag
        assert "although 1 publisher(s) matched" in diag.message and "fastdds_large_frames.xml" in diag.message
        assert wait_for(lambda: "although 1 publisher is matched" in proc.output(), 10.0, probe.spin), proc.output()
        # a window with only a bad frame: the statistics line says n/a, not "nan ms"
        bad = rgb_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8", probe.header())
        bad.encoding = "32FC1"
        probe.send(bad)
        assert wait_for(lambda: "latency mean n/a p95 n/a (inference n/a)" in proc.output(), 15.0, probe.spin), \
            proc.output()
        assert "nan ms" not in proc.output()
    finally:
        probe.close()


def test_standard_qos_overrides_apply_on_top_of_the_qos_parameters(ros_env, start_node):
    """qos_overrides.<topic>.subscription/publisher.<policy> (ROS 2's standard QoS parameters) win over the
    node's qos_* parameters, and show in the graph.
    """
    from rclpy.qos import ReliabilityPolicy
    proc = start_node(node_args(params={
        "model": "camvid", "qos_reliability": "best_effort",
        f"qos_overrides.{CAMERA}.subscription.reliability": "reliable",
        "qos_overrides./segmentation/labels.publisher.reliability": "best_effort"}, remaps={"image": CAMERA}))
    probe = Probe("qos")
    try:
        assert wait_for(lambda: not proc.alive() or (probe.node.get_subscriptions_info_by_topic(CAMERA)
                                                     and probe.node.get_publishers_info_by_topic(OUT + "labels")),
                        START_TIMEOUT, probe.spin), proc.output()
        sub = probe.node.get_subscriptions_info_by_topic(CAMERA)[0]
        pub = probe.node.get_publishers_info_by_topic(OUT + "labels")[0]
        assert sub.node_name == "segmentation", sub
        assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE, (sub, proc.output())
        assert pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        drivable = probe.node.get_publishers_info_by_topic(OUT + "drivable_mask")[0]
        assert drivable.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # output_qos_reliability
    finally:
        probe.close()


def test_outputs_without_subscribers_are_not_made(ros_env, start_node, frames):
    """Each image output is made only while it has subscribers (counted in /diagnostics)."""
    proc = start_node(node_args(params={"model": "camvid", "qos_reliability": "reliable", "diagnostics_period": 0.5},
                                remaps={"image": CAMERA}))
    probe = Probe("lazy")
    try:
        probe.wait_ready(proc)
        for topic in MASK_TOPICS:
            if topic != "labels":
                probe.node.destroy_subscription(probe.subs.pop(topic))
        probe.spin(1.0)
        before = probe.latest_diagnostics(after=time.monotonic())
        for _ in range(3):
            header = probe.header()
            probe.wait_outputs(probe.send(rgb_to_image(frames[0], "rgb8", header)), topics=("labels",))
        after = probe.latest_diagnostics(after=time.monotonic())
        made = {k: int(after[k]) - int(before[k]) for k in after if k.startswith("published_")}
        assert made["published_labels_total"] == 3, made
        assert made["published_drivable_mask_total"] == made["published_obstacle_mask_total"] == 0, made
        assert made["published_confidence_total"] == made["published_overlay_total"] == 0, made
    finally:
        probe.close()


LARGE_FRAME_PUBLISHER = """
import sys, time, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from seg_perception.ros.ros_image import rgb_to_image
rclpy.init()
node = rclpy.create_node("large_frame_probe")
pub = node.create_publisher(Image, sys.argv[1], QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
got = []
reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
node.create_subscription(Image, "/segmentation/labels", got.append, reliable)
rgb = np.zeros((2160, 3840, 3), np.uint8); rgb[1080:] = (90, 90, 90)
msg = rgb_to_image(rgb, "rgb8"); msg.header.stamp.sec = 77
deadline = time.monotonic() + float(sys.argv[2])
while not got and time.monotonic() < deadline:
    if pub.get_subscription_count():
        pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=1.0)
print("labels", got[0].width, got[0].height, got[0].header.stamp.sec if got else "none") if got else print("no labels")
"""


def test_4k_raw_frames_arrive_best_effort_with_the_shipped_profile(ros_env, start_node, monkeypatch, tmp_path):
    """A 3840x2160 rgb8 frame (25 MB) on the default best-effort input reaches the node when every
    process uses config/fastdds_large_frames.xml.
    """
    import subprocess
    import sys

    from conftest import REPO
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_frames.xml"))
    proc = start_node(node_args(params={"model": "camvid", "output_resolution": "network", "publish_overlay": False},
                                remaps={"image": CAMERA}))
    script = tmp_path / "large.py"
    script.write_text(LARGE_FRAME_PUBLISHER)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, str(script), CAMERA, "150"], env=env, capture_output=True, text=True,
                         timeout=240)
    # a 16:9 frame reaches the network at 640x360 (its aspect kept)
    assert "labels 640 360 77" in res.stdout, res.stdout + res.stderr + proc.output()[-2000:]
    assert proc.alive()


@pytest.fixture
def compressed_node(ros_env, start_node):
    proc = start_node(node_args(params={"model": "camvid", "input_transport": "compressed",
                                        "qos_reliability": "reliable",
                                        "qos_depth": 5, "diagnostics_period": 0.5, "publish_overlay": False},
                                remaps={"image": CAMERA, "image/compressed": CAMERA + "/compressed"}))
    probe = Probe("compressed")
    try:
        probe.wait_ready(proc, compressed=True)
        yield proc, probe
    finally:
        probe.close()


def test_compressed_input(compressed_node, frames, library):
    proc, probe = compressed_node
    rgb = frames[0]
    h, w = rgb.shape[:2]
    jpeg_decoded = decode_compressed("jpeg", encode_compressed(rgb, "jpeg"))
    png_header = encode_compressed(rgb[:8, :8], "png")[:33]  # signature and IHDR of a real PNG
    bad = [("broken JPEG header", "jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "JPEG header is broken"),
           ("corrupt PNG data", "png", png_header + bytes(range(256)) * 4, "corrupt or not a JPEG/PNG"),
           ("decompression bomb", "jpeg", jpeg_claiming(rgb, 30000, 30000), "refused before decoding"),
           ("empty data", "jpeg", b"", "compressed image is empty"),
           ("unknown format", "theora", b"\x00\x01", "unsupported compressed format 'theora'")]
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8", "png"):
        header = probe.header()
        out = probe.wait_outputs(probe.send(rgb_to_compressed(rgb, fmt, header), compressed=True))
        labels = check_outputs(out, header, w, h)
        ref = library.segment(jpeg_decoded if "jpeg" in fmt else rgb).labels
        assert (labels == ref).mean() > 0.999, fmt
    for n, (case, fmt, data, _) in enumerate(bad, 1):
        msg = CompressedImage(header=probe.header(), format=fmt)
        msg.data = data
        bad_key = probe.send(msg, compressed=True)
        probe.wait_skipped(n)
        header = probe.header()
        out = probe.wait_outputs(probe.send(rgb_to_compressed(rgb, "jpeg", header), compressed=True))
        check_outputs(out, header, w, h)
        assert bad_key not in probe.received["labels"], case
        assert proc.alive(), case
    log = proc.output()
    for case, _, _, expect in bad:
        assert expect in log, f"no log line for {case}:\n{log}"
    # SIGTERM (what a process manager sends) also shuts the node down cleanly.
    assert proc.stop(signal.SIGTERM) == 0, proc.output()
    assert "Traceback" not in proc.output()


@pytest.mark.parametrize("model", ["driving", None], ids=["by-name", "default"])
def test_driving_model_by_name_and_by_default(model, ros_env, start_node):
    """model:=driving (and no model at all) loads the shipped 7-class model: the library's labels on Indian and
    Cambridge streets, masks from its own groups (drivable; living things and vehicles).
    """
    from seg_perception.classes import DRIVING
    from seg_perception.learning.datasets import idd_lite
    params = {"qos_reliability": "reliable", "qos_depth": 5, **({"model": model} if model else {})}
    proc = start_node(node_args(params=params, remaps={"image": CAMERA}))
    probe = Probe("driving")
    try:
        probe.wait_ready(proc)
        driving = Segmenter("driving", device="cpu")
        assert driving.classes == DRIVING
        idd = idd_lite(SAMPLES.parent / "idd_lite")
        for rgb in (idd.read(0)[0], idd.read(5)[0], read_rgb(FRAMES[0])):
            header = probe.header()
            out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", header)))
            labels = to_array(out["labels"])
            assert labels.shape == rgb.shape[:2] and out["labels"].header.frame_id == header.frame_id
            assert (labels == driving.segment(rgb).labels).mean() > 0.999
            assert labels.max() < DRIVING.num_classes
            np.testing.assert_array_equal(to_array(out["drivable_mask"]), np.where(labels == 0, 255, 0))
            np.testing.assert_array_equal(to_array(out["obstacle_mask"]), np.where(np.isin(labels, [2, 3]), 255, 0))
    finally:
        probe.close()
    assert "driving_lraspp" in proc.output()


@pytest.mark.parametrize("case", ["missing model", "corrupt model", "unknown model name", "unknown class",
                                  "bad device", "bad value at declaration"])
def test_start_up_errors_exit_non_zero_with_a_clear_message(case, ros_env, start_node, tmp_path):
    params, expect = {
        "missing model": ({"model": str(tmp_path / "nope.pt")}, "does not exist"),
        "corrupt model": ({"model": str(tmp_path / "corrupt.pt")}, "corrupt"),
        "unknown model name": ({"model": "highway"}, "unknown model 'highway': not a shipped model (camvid, driving)"),
        "unknown class": ({"drivable_classes": "['drivable','Unicorn']"}, "unknown class 'Unicorn'"),
        "bad device": ({"device": "gpu"}, "parameter 'device' is 'gpu'"),
        # refused while the node is being made: the error still names the node with its namespace
        "bad value at declaration": ({"threads": -5}, "[startup_ns.segmentation]: parameter 'threads'"),
    }[case]
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    proc = start_node(node_args(params=params, remaps={"image": CAMERA, "__ns": "/startup_ns"}))
    code = proc.wait(timeout=START_TIMEOUT)
    out = proc.output()
    assert code != 0, out
    assert expect in out, out
    assert "[ERROR]" in out and "Traceback" not in out, out
    assert "weights_only=False" not in out  # no advice to load untrusted files unsafely


def test_predict_command_gives_the_nodes_labels(raw_node, frames, tmp_path):
    """`seg-perception predict` is the offline twin of the node: same labels for the same frame."""
    from seg_perception.cli import main as cli

    proc, probe = raw_node
    path = FRAMES[0]
    assert cli.main(["predict", "--model", "camvid", "--input", str(path), "--output", str(tmp_path),
                     "--no-progress"]) == 0
    offline = read_label(tmp_path / path.name)
    header = probe.header()
    out = probe.wait_outputs(probe.send(rgb_to_image(read_rgb(path), "rgb8", header)))
    np.testing.assert_array_equal(to_array(out["labels"]), offline)


@pytest.mark.parametrize("gap", [0.002, 0.05])
def test_double_sigint_from_ctrl_c_under_launch_exits_cleanly(gap, ros_env, start_node):
    """Ctrl-C reaches the node from the terminal and again from launch: still a clean exit 0."""
    proc = start_node(node_args(remaps={"image": CAMERA}), name="sigint")
    assert wait_for(lambda: "segmenting" in proc.output() or not proc.alive(), START_TIMEOUT), proc.output()
    assert proc.alive(), proc.output()
    proc.proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    if proc.alive():
        proc.proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, proc.output()
    assert "Traceback" not in proc.output()
