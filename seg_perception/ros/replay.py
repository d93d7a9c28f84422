# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Publishing a bag over DDS with its recorded timing, for machines without `ros2 bag play`.

Messages go out as the bag stores them: the serialised CDR bytes are handed to
rclpy (`Publisher.publish(bytes)`), so nothing is decoded or re-encoded and the
subscriber sees exactly the recorded message. rclpy only supplies the type
support, so each replayed type's Python message package (sensor_msgs, ...) must
be importable.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..bags import Bag, BagError, cdr_stamp_ns

QOS_RELIABILITY = ("reliable", "best_effort")


def parse_remaps(items) -> dict[str, str]:
    """['old:=new', ...] -> {old: new}, with a clear error for anything else."""
    out = {}
    for item in items or ():
        old, sep, new = item.partition(":=")
        if not sep or not old or not new:
            raise BagError(f"remap '{item}' is not of the form /old/topic:=/new/topic")
        out[old] = new
    return out


def message_class(msgtype: str):
    """The rclpy message class of 'pkg/msg/Name'."""
    pkg, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype} is not available to rclpy here (install its Python package, "
                       "or leave its topic out with --topics)") from None


def import_rclpy():
    try:
        import rclpy
        return rclpy
    except ImportError as exc:
        raise BagError(f"rclpy is not importable ({exc}); source a ROS 2 installation first") from None


def init_context(rclpy=None, ros_args=()):
    """A private rclpy context (so this code can share a process with other rclpy users).

    rcl sees only `ros_args` (what followed --ros-args on the command line), never the
    command's own arguments: left to itself it would read sys.argv and take `old:=new` there
    for a global remapping.
    """
    rclpy = rclpy or import_rclpy()
    from rclpy.context import Context
    ctx = Context()
    args = ["seg-perception", *(["--ros-args", *ros_args] if ros_args else [])]
    try:
        from rclpy.signals import SignalHandlerOptions
        rclpy.init(context=ctx, args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):
        rclpy.init(context=ctx, args=args)
    return ctx


def qos_profile(reliability: str = "reliable", depth: int = 10):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    if reliability not in QOS_RELIABILITY:
        raise BagError(f"QoS reliability '{reliability}' unknown; choose one of {list(QOS_RELIABILITY)}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)),
                      reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


@dataclass
class PlayStats:
    published: dict = field(default_factory=dict)  # output topic -> count
    loops: int = 0
    wall_s: float = 0.0
    max_lag_ms: float = 0.0  # how late the slowest message went out against its schedule

    def total(self) -> int:
        return sum(self.published.values())


class Replayer:
    """Publishes a bag's topics (optionally filtered and renamed) with their recorded spacing."""

    def __init__(self, bag: Bag, *, node, topics=None, remap: dict | None = None, reliability: str = "reliable",
                 depth: int = 10):
        self.bag = bag
        self.remap = dict(remap or {})
        names = list(bag.topics) if not topics else list(topics)
        for name in names:
            bag.require(name, role="topic")
        for old in self.remap:
            if old not in names:
                raise BagError(f"remap of {old}: that topic is not replayed; replayed: {names}")
        self.topics = names
        self.node = node
        qos = qos_profile(reliability, depth)
        self.publishers = {}
        for name in names:
            cls = message_class(bag.topics[name].msgtype)
            self.publishers[name] = node.create_publisher(cls, self.out_topic(name), qos)

    def out_topic(self, name: str) -> str:
        return self.remap.get(name, name)

    def wait_for_subscribers(self, timeout_s: float, topics=None, *, alive: Callable[[], bool] | None = None) -> list:
        """Wait until every (given) replayed topic has a subscriber; returns the topics still without one."""
        wanted = list(topics or self.topics)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            missing = [t for t in wanted if self.publishers[t].get_subscription_count() == 0]
            if not missing or time.monotonic() >= deadline or (alive is not None and not alive()):
                return missing
            time.sleep(0.05)

    def play(self, *, rate: float = 1.0, start_offset: float = 0.0, loop: bool = False,
             on_publish: Callable[[str, int, float], None] | None = None,
             stop: threading.Event | None = None, progress: bool = True, max_loops: int | None = None) -> PlayStats:
        """Publish in record order, message k at start + (t_k - t_0) / rate (monotonic clock).

        on_publish(bag topic, header stamp ns, monotonic time just before publishing) is called for
        every message whose type starts with a std_msgs/Header (others pass stamp -1).
        """
        from tqdm import tqdm

        if not rate > 0:
            raise BagError(f"rate must be positive, got {rate}")
        if start_offset < 0:
            raise BagError(f"start offset must be >= 0 s, got {start_offset}")
        stop = stop or threading.Event()
        stats = PlayStats(published={self.out_topic(t): 0 for t in self.topics})
        first_allowed = self.bag.start_ns + int(round(start_offset * 1e9))
        total = sum(self.bag.topics[t].count for t in self.topics)
        wall0 = time.monotonic()
        while not stop.is_set():
            t0 = None
            loop_start = time.monotonic()
            bar = tqdm(total=total, desc=f"replay{f' (loop {stats.loops + 1})' if loop else ''}", file=sys.stderr,
                       disable=not progress, leave=False, unit="msg")
            sent = 0
            for topic, _, t, raw in self.bag.messages(self.topics):
                if t < first_allowed:
                    bar.update(1)
                    continue
                if t0 is None:
                    t0 = t
                due = loop_start + (t - t0) / 1e9 / rate
                while not stop.is_set():
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    time.sleep(min(wait, 0.1))
                if stop.is_set():
                    break
                now = time.monotonic()
                stats.max_lag_ms = max(stats.max_lag_ms, (now - due) * 1000.0)
                try:
                    stamp = cdr_stamp_ns(raw) if _has_header(self.bag.topics[topic].msgtype) else -1
                except BagError:
                    stamp = -1
                if on_publish is not None:
                    on_publish(topic, stamp, now)
                self.publishers[topic].publish(raw)
                stats.published[self.out_topic(topic)] += 1
                sent += 1
                bar.update(1)
            bar.close()
            stats.loops += 1
            if sent == 0:
                raise BagError(f"nothing to replay: no message on {self.topics} at or after the start offset "
                               f"({start_offset} s of a {self.bag.duration_ns / 1e9:.2f} s bag)")
            if not loop or (max_loops is not None and stats.loops >= max_loops):
                break
        stats.wall_s = time.monotonic() - wall0
        return stats

    def flush(self, timeout_s: float = 2.0) -> None:
        """Give reliable subscribers time to acknowledge the last messages before the process exits."""
        from rclpy.duration import Duration
        for pub in self.publishers.values():
            try:
                pub.wait_for_all_acked(Duration(nanoseconds=int(timeout_s * 1e9)))
            except Exception:
                time.sleep(min(timeout_s, 0.5))
                return

    def close(self) -> None:
        for pub in self.publishers.values():
            try:
                self.node.destroy_publisher(pub)
            except Exception:
                pass


_HEADER_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
                 "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/Imu", "sensor_msgs/msg/LaserScan",
                 "std_msgs/msg/Header"}


def _has_header(msgtype: str) -> bool:
    return msgtype in _HEADER_TYPES


def replay_bag(path, *, topics=None, remap=None, rate=1.0, start_offset=0.0, loop=False,
               reliability="reliable", depth=10, wait_subscribers=0.0, progress=True, ros_args=()) -> PlayStats:
    """The `replay` command: open the bag, publish it, shut down cleanly (Ctrl-C stops it).

    The node is `bag_replay_<pid>` (two replays never share a name; `--ros-args -r __node:=NAME`
    renames it) and is spun while it plays, so its parameter services answer (ros2 param dump).
    """
    rclpy = import_rclpy()
    from rclpy.executors import SingleThreadedExecutor
    with Bag(path) as bag:
        ctx = init_context(rclpy, ros_args)
        node = rclpy.create_node(f"bag_replay_{os.getpid()}", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spinner = threading.Thread(target=_spin_quietly, args=(executor,), name="replay-services", daemon=True)
        spinner.start()
        stop = threading.Event()
        try:
            player = Replayer(bag, node=node, topics=topics, remap=parse_remaps(remap) if isinstance(remap, list)
                              else remap, reliability=reliability, depth=depth)
            if wait_subscribers > 0:
                missing = player.wait_for_subscribers(wait_subscribers)
                if missing:
                    print(f"replay: no subscriber after {wait_subscribers:g} s on "
                          f"{[player.out_topic(t) for t in missing]}; playing anyway", file=sys.stderr)
            try:
                stats = player.play(rate=rate, start_offset=start_offset, loop=loop, stop=stop, progress=progress)
                player.flush()
                return stats
            except KeyboardInterrupt:
                stop.set()
                raise
        finally:
            executor.shutdown(timeout_sec=2.0)
            spinner.join(timeout=2.0)
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)


def _spin_quietly(executor) -> None:
    """Serve the node's services until the executor is shut down."""
    try:
        executor.spin()
    except Exception:  # the context went down under it: replay is over
        pass
