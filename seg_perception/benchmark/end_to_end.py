# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""End to end over DDS: the node and the naive pipeline as their own processes, fed cameras at a fixed rate.

Each camera is a best-effort publisher of rgb8 frames (the bundled frames at the resolution under
test) on /camN/image_raw at --rate Hz, every frame stamped with the wall clock when it goes out.
The pipeline's labels are received as raw CDR (no decoding in the measuring process) and their
latency is receipt time minus header stamp, both the wall clock of this host; a frame counts as
answered when labels with its stamp arrive. The node runs as launch starts it (config/drive.yaml,
default parameters); with several cameras it takes them all through its `cameras` parameter, while
the naive pipeline runs one process per camera, as a user would launch it.

Every process gets this benchmark's DDS environment (localhost discovery, the large-frame Fast DDS
profile, the user's ROS_DOMAIN_ID or one picked here), like `seg-perception demo`.
"""
from __future__ import annotations

import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .measure import BenchError, summary
from .naive import NODE_NAME as NAIVE_NAME
from .naive import OUTPUTS

NODE_NAME = "segmentation"
#: Seconds after the node published its single-camera topics without the per-camera ones: no `cameras` support.
NO_CAMERAS_GRACE = 8.0


def image_topic(k: int) -> str:
    return f"/cam{k}/image_raw"


@dataclass
class Pipeline:
    """What runs for one (pipeline, camera count): its processes' command lines and per-camera output topics."""

    kind: str  # "node" or "naive"
    cameras: int
    commands: list[list[str]]
    outputs: list[dict[str, str]]  # per camera: output name -> topic
    fallback: str | None = None  # a topic whose presence without `outputs` says the node ignored `cameras`
    procs: list = field(default_factory=list)


def node_pipeline(cameras: int, model=None, params=()) -> Pipeline:
    """The node as launch starts it: drive.yaml, one camera remapped onto `image`, or all through `cameras`."""
    from ..cli.demo import find_config_file
    from ..evaluation.bag_evaluation import NODE_MODULE
    cmd = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
    params_file = find_config_file("drive.yaml")
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    if model:
        cmd += ["-p", f"model:={model}"]
    if cameras == 1:
        cmd += ["-r", f"image:={image_topic(0)}"]
        outputs = [{o: f"/{NODE_NAME}/{o}" for o in OUTPUTS}]
    else:
        topics = ",".join(f"'{image_topic(k)}'" for k in range(cameras))
        cmd += ["-p", f"cameras:=[{topics}]"]
        outputs = [{o: f"/cam{k}/{NODE_NAME}/{o}" for o in OUTPUTS} for k in range(cameras)]
    cmd += ["-p", "stats_period:=0.0"]
    for param in params:
        cmd += ["-p", param]
    return Pipeline("node", cameras, [cmd], outputs, fallback=f"/{NODE_NAME}/labels" if cameras > 1 else None)


def naive_pipeline(cameras: int, model=None) -> Pipeline:
    """One naive process per camera (`naive`, or naive0, naive1, ... for several)."""
    commands, outputs = [], []
    for k in range(cameras):
        name = NAIVE_NAME if cameras == 1 else f"{NAIVE_NAME}{k}"
        cmd = [sys.executable, "-m", "seg_perception.benchmark.naive", "--ros-args", "-r", f"__node:={name}",
               "-r", f"image:={image_topic(k)}"]
        if model:
            cmd += ["-p", f"model:={model}"]
        commands.append(cmd)
        outputs.append({o: f"/{name}/{o}" for o in OUTPUTS})
    return Pipeline("naive", cameras, commands, outputs)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _stamp_of(cdr: bytes) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header."""
    sec, nsec = struct.unpack_from("<iI" if cdr[1] == 1 else ">iI", cdr, 4)
    return sec * 1_000_000_000 + nsec


def restamped(cdr: bytes, stamp_ns: int) -> bytes:
    """A serialised Image with a new header stamp, in one copy of the frame."""
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    view = memoryview(cdr)
    return b"".join((view[:4], struct.pack("<iI" if cdr[1] == 1 else ">iI", sec, nsec), view[12:]))


class Probe:
    """The benchmark's own ROS node: a best-effort camera publisher per camera, raw subscriptions to outputs."""

    def __init__(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        from ..ros.replay import import_rclpy, init_context
        self.rclpy = import_rclpy()
        self.ctx = init_context(self.rclpy)
        self.node = self.rclpy.create_node("seg_perception_bench", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[int, int]]] = {}
        self.pubs: dict[str, object] = {}
        self.subs: list = []

    def publisher(self, topic: str):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        if topic not in self.pubs:
            self.pubs[topic] = self.node.create_publisher(
                Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        return self.pubs[topic]

    def subscribe(self, topics) -> None:
        """Receive these topics (raw CDR; stamp and receipt time kept), replacing earlier subscriptions."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        self.unsubscribe()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for topic in topics:
            self.received[topic] = []

            def on_message(cdr, topic=topic):
                t = time.time_ns()
                with self.lock:
                    self.received[topic].append((_stamp_of(cdr), t))
            self.subs.append(self.node.create_subscription(Image, topic, on_message, qos, raw=True))

    def take(self, topic: str) -> list[tuple[int, int]]:
        with self.lock:
            got, self.received[topic] = self.received.get(topic, []), []
        return got

    def has_answer(self, topic: str) -> bool:
        with self.lock:
            return bool(self.received.get(topic))

    def unsubscribe(self) -> None:
        for sub in self.subs:
            self.node.destroy_subscription(sub)
        self.subs = []
        with self.lock:
            self.received = {}

    def publishers_of(self, topic: str) -> int:
        return self.node.count_publishers(topic)

    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=2.0)
            self.thread.join(timeout=2.0)
            self.node.destroy_node()
        finally:
            self.rclpy.try_shutdown(context=self.ctx)


def _start(pipeline: Pipeline, env: dict, logs: Path) -> None:
    from ..cli.demo import _node_process_class
    cls = _node_process_class()
    for i, cmd in enumerate(pipeline.commands):
        pipeline.procs.append(cls(cmd, logs / f"{pipeline.kind}{pipeline.cameras}_{i}.log", env))


def _stop(pipeline: Pipeline) -> None:
    from ..cli.demo import _stop_node
    for proc in pipeline.procs:
        _stop_node(proc)
    pipeline.procs = []


def _tail(pipeline: Pipeline) -> str:
    return " | ".join(t for t in (p.tail() for p in pipeline.procs) if t)


def _wait_ready(probe: Probe, pipeline: Pipeline, timeout: float) -> str | None:
    """Until every camera's input is subscribed and labels published; a reason when that cannot happen."""
    deadline = time.monotonic() + timeout
    fallback_since = None
    labels = [o["labels"] for o in pipeline.outputs]
    pubs = [probe.publisher(image_topic(k)) for k in range(pipeline.cameras)]
    while True:
        dead = [p for p in pipeline.procs if not p.alive()]
        if dead:
            return f"{pipeline.kind} exited (status {dead[0].proc.returncode}): {dead[0].tail()}"
        if all(probe.publishers_of(t) > 0 for t in labels) and all(p.get_subscription_count() > 0 for p in pubs):
            return None
        if pipeline.fallback and probe.publishers_of(pipeline.fallback) > 0:
            fallback_since = fallback_since or time.monotonic()
            if time.monotonic() - fallback_since > NO_CAMERAS_GRACE:
                return (f"the node publishes {pipeline.fallback} but not {labels[0]}: it does not take the "
                        f"`cameras` parameter (several cameras in one node)")
        if time.monotonic() > deadline:
            return f"{pipeline.kind} did not come up within {timeout:g} s: {_tail(pipeline)}"
        time.sleep(0.1)


def _publish(probe: Probe, frames: list[bytes], cameras: int, rate: float, seconds: float, phase: str,
             until=None) -> list[list[int]]:
    """Publish every camera's frames at `rate` for `seconds` (or until until() is true); the stamps sent."""
    pubs = [probe.publisher(image_topic(k)) for k in range(cameras)]
    period = 1.0 / rate
    t0 = time.monotonic()
    next_t = [t0 + (k * period / cameras if phase == "staggered" else 0.0) for k in range(cameras)]
    counts = [0] * cameras
    sent: list[list[int]] = [[] for _ in range(cameras)]
    end = t0 + seconds
    while True:
        k = min(range(cameras), key=next_t.__getitem__)
        wait = next_t[k] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        if now >= end or (until is not None and until()):
            return sent
        stamp = time.time_ns()
        pubs[k].publish(restamped(frames[(counts[k] + 3 * k) % len(frames)], stamp))
        sent[k].append(stamp)
        counts[k] += 1
        next_t[k] += period
        if next_t[k] < now - period:  # the publisher fell behind: no burst to catch up
            next_t[k] = now


def measure(probe: Probe, pipeline: Pipeline, frames: list[bytes], *, subscribed: str, rate: float, seconds: float,
            warmup: float, phase: str, timeout: float) -> dict:
    """One window: warm up until every camera is answered, then `seconds` of frames at `rate`, then a drain."""
    names = ["labels"] if subscribed == "labels" else list(OUTPUTS)
    labels = [o["labels"] for o in pipeline.outputs]
    probe.subscribe([o[n] for o in pipeline.outputs for n in names])
    deadline = time.monotonic() + timeout
    while not all(s.get_publisher_count() > 0 for s in probe.subs):
        if time.monotonic() > deadline:
            raise BenchError(f"could not subscribe to {pipeline.kind}'s outputs")
        time.sleep(0.05)
    t_warm = time.monotonic()
    _publish(probe, frames, pipeline.cameras, rate, timeout,  "sync",
             until=lambda: ((time.monotonic() - t_warm >= warmup and all(probe.has_answer(t) for t in labels))
                            or not all(p.alive() for p in pipeline.procs)))
    if not all(p.alive() for p in pipeline.procs):
        raise BenchError(f"{pipeline.kind} exited: {_tail(pipeline)}")
    if not all(probe.has_answer(t) for t in labels):
        raise BenchError(f"{pipeline.kind} answered no frame within {timeout:g} s: {_tail(pipeline)}")
    time.sleep(0.5)  # the warm-up's last answers
    for t in probe.received:
        probe.take(t)
    pids = [p.proc.pid for p in pipeline.procs]
    cpu0, own0, t0 = sum(cpu_seconds(p) for p in pids), cpu_seconds(os.getpid()), time.monotonic()
    sent = _publish(probe, frames, pipeline.cameras, rate, seconds, phase)
    wall = time.monotonic() - t0
    cpu = (sum(cpu_seconds(p) for p in pids) - cpu0) / wall
    own = (cpu_seconds(os.getpid()) - own0) / wall
    time.sleep(min(3.0, max(1.0, 0.2 * seconds)))  # answers to the last frames
    latencies, answered = [], []
    for k, topic in enumerate(labels):
        stamps = set(sent[k])
        got = {}
        for stamp, t in probe.take(topic):
            if stamp in stamps and stamp not in got:
                got[stamp] = t
        answered.append(len(got))
        latencies += [(t - s) / 1e6 for s, t in got.items()]
    n_sent = sum(len(s) for s in sent)
    return {"pipeline": pipeline.kind, "subscribed": subscribed, "cameras": pipeline.cameras, "rate": rate,
            "seconds": seconds, "phase": phase, "sent": n_sent, "sent_per_s": n_sent / seconds,
            "answered": sum(answered), "answered_fraction": sum(answered) / n_sent if n_sent else None,
            "outputs_per_s": sum(answered) / seconds, "per_camera_outputs_per_s": [a / seconds for a in answered],
            "latency_ms": summary(latencies), "cpu_cores": cpu, "bench_cpu_cores": own, "note": None}


def run_end_to_end(resolutions, cameras, *, seconds: float, rate: float, warmup: float, model=None,
                   node_params=(), all_outputs: bool = True, phase: str = "sync", startup_timeout: float = 120.0,
                   saturation_rate: float = 0.0, on_result=None, say=print,
                   logs: str | Path | None = None) -> list[dict]:
    """Every (camera count, pipeline, resolution): naive first, so that each node row has its ratio at once.

    With saturation_rate, one camera is also sent at that rate, more than either pipeline takes: their
    outputs/s is then their throughput, which a camera's own rate does not cap.

    The processes' logs go to `logs` (kept) or to a temporary folder (removed).
    """
    import contextlib
    import tempfile

    from ..cli.demo import demo_environment
    from ..ros.environment import ros_environment
    from ..ros.replay import import_rclpy
    from ..ros.ros_image import rgb_to_image
    from .measure import sample_frames
    import_rclpy()
    from rclpy.serialization import serialize_message

    results = []
    keep = logs is not None
    with (contextlib.nullcontext(str(logs)) if keep else tempfile.TemporaryDirectory(prefix="seg_bench_")) as tmp:
        logs = Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        values = demo_environment(logs)
        if not os.environ.get("ROS_HOME"):  # ~/.ros as usual: the TensorRT engines the node caches there stay
            values.pop("ROS_HOME", None)
        with ros_environment(values) as env:
            say(f"end to end over DDS: ROS_DOMAIN_ID {env.get('ROS_DOMAIN_ID')}, localhost only, "
                f"{rate:g} frames/s per camera, {seconds:g} s per window after a warm-up")
            frames = {size: [serialize_message(rgb_to_image(f, "rgb8")) for f in sample_frames(size)]
                      for size in resolutions}
            probe = Probe()
            try:
                for n in cameras:
                    for pipeline in (naive_pipeline(n, model), node_pipeline(n, model, node_params)):
                        kinds = [("labels", size, rate) for size in resolutions]
                        if pipeline.kind == "node" and n == 1 and all_outputs:
                            kinds += [("all", size, rate) for size in resolutions]
                        if n == 1 and saturation_rate:
                            kinds += [("labels", size, saturation_rate) for size in resolutions]
                        _start(pipeline, env, logs)
                        try:
                            problem = _wait_ready(probe, pipeline, startup_timeout)
                            for subscribed, size, hz in kinds:
                                row = {"pipeline": pipeline.kind, "subscribed": subscribed, "cameras": n,
                                       "rate": hz, "seconds": seconds, "phase": phase}
                                if problem is None:
                                    try:
                                        row = measure(probe, pipeline, frames[size], subscribed=subscribed,
                                                      rate=hz, seconds=seconds, warmup=warmup, phase=phase,
                                                      timeout=startup_timeout)
                                    except BenchError as exc:
                                        row["note"] = str(exc)
                                else:
                                    row["note"] = problem
                                row["resolution"] = list(size)
                                results.append(row)
                                if on_result is not None:
                                    on_result(row, results)
                        finally:
                            probe.unsubscribe()
                            _stop(pipeline)
            finally:
                probe.close()
    return results
