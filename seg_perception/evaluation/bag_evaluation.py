# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Scoring a model on a bag's images against the bag's ground-truth label topic.

Offline mode runs the `Segmenter` on every image/label pair, through the same
`evaluate_frames` as the `evaluate` command, so a bag made from a folder scores
exactly like the folder. Live mode replays the images over DDS into the
running segmentation node (started here or already running), collects its
`segmentation/labels` outputs, pairs them with the ground truth by header
stamp, and also measures publish-to-receipt latency and dropped frames.

Labels are scored with the model's class table. A bag whose label ids differ
from the model's gets a mapping YAML (see `load_mapping`); ids that neither the
table nor the mapping explain are an error, never a silently wrong score.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import yaml

from ..bags import (
    IMAGE,
    IMAGE_TYPES,
    Bag,
    BagError,
    PairStats,
    check_frame_topics,
    paired_frames,
    read_labels,
    stamp_name,
)
from ..class_mapping import MappingError, mapping_from_dict
from ..classes import ClassTable, ClassTableError
from .metrics import confusion_matrix, scores

DEFAULT_OUTPUT_TOPIC = "/segmentation/labels"
NODE_MODULE = "seg_perception.ros.node"


# -- label mapping ----------------------------------------------------------

class LabelMapper:
    """Turns the bag's label ids into the model's class ids (or its ignore id), refusing unknown ids."""

    def __init__(self, classes: ClassTable, lut: np.ndarray | None = None, known: np.ndarray | None = None,
                 source: str | None = None):
        self.classes = classes
        self.lut = lut
        self.known = known
        self.source = source

    @classmethod
    def load(cls, path: str | Path, classes: ClassTable) -> "LabelMapper":
        """A class mapping file (`source`, `target`, `map`: see class_mapping), or a mapping of raw label ids.

        mapping:          # label id in the bag -> model class id or name, or 'ignore'
          7: Road
          8: 4
          0: ignore
        unlisted: ignore  # ids not listed: 'ignore' them, or 'error' (the default)
        """
        path = Path(path)
        if not path.is_file():
            raise BagError(f"mapping file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise BagError(f"mapping file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
        if isinstance(data, dict) and {"source", "target", "map"} & set(data):
            try:
                mapping = mapping_from_dict(data, origin=f"mapping file {path}", target=classes)
            except (MappingError, ClassTableError) as exc:
                raise BagError(str(exc)) from None
            known = np.zeros(256, bool)
            known[: mapping.source.num_classes] = True
            known[mapping.source.ignore_index] = True
            return cls(classes, mapping.lut(), known, str(path))
        if isinstance(data, dict) and "mapping" in data:
            unlisted = str(data.get("unlisted", "error")).lower()
            extra = set(data) - {"mapping", "unlisted"}
            if extra:
                raise BagError(f"mapping file {path}: unknown keys {sorted(map(str, extra))}; "
                               "allowed: mapping, unlisted")
            data = data["mapping"]
        else:
            unlisted = "error"
        if unlisted not in ("ignore", "error"):
            raise BagError(f"mapping file {path}: unlisted must be 'ignore' or 'error', got '{unlisted}'")
        if not isinstance(data, dict) or not data:
            raise BagError(f"mapping file {path}: expected 'mapping:' with label id -> class entries")
        lut = np.full(256, classes.ignore_index, np.uint8)
        known = np.full(256, unlisted == "ignore", bool)
        for raw, target in data.items():
            try:
                raw_id = int(raw)
            except (TypeError, ValueError):
                raise BagError(f"mapping file {path}: key '{raw}' is not a label id") from None
            if not 0 <= raw_id <= 255:
                raise BagError(f"mapping file {path}: label id {raw_id} is outside 0..255")
            if target is None or str(target).lower() == "ignore":
                value = classes.ignore_index
            elif isinstance(target, int) and not isinstance(target, bool):
                if not 0 <= target < classes.num_classes:
                    raise BagError(f"mapping file {path}: {raw_id} -> {target}, but the model has classes "
                                   f"0..{classes.num_classes - 1}")
                value = target
            elif str(target) in classes.names:
                value = classes.names.index(str(target))
            else:
                raise BagError(f"mapping file {path}: {raw_id} -> '{target}' is neither a class id, a class of "
                               f"{list(classes.names)} nor 'ignore'")
            lut[raw_id] = value
            known[raw_id] = True
        return cls(classes, lut, known, str(path))

    @classmethod
    def for_bag(cls, bag: Bag, classes: ClassTable, mapping: str | Path | None) -> "LabelMapper":
        """The mapping file when given; else identity, after checking the bag's recorded label classes."""
        if mapping:
            return cls.load(mapping, classes)
        recorded = bag.label_classes()
        if recorded and list(recorded.get("names", [])) != list(classes.names):
            raise BagError(f"the bag's labels use classes {recorded.get('names')}, the model "
                           f"{list(classes.names)}; give a --mapping file")
        if recorded and int(recorded.get("ignore_index", classes.ignore_index)) != classes.ignore_index:
            lut = np.arange(256, dtype=np.uint8)
            lut[int(recorded["ignore_index"])] = classes.ignore_index
            return cls(classes, lut, None, None)
        return cls(classes)

    def __call__(self, label: np.ndarray, where: str) -> np.ndarray:
        c = self.classes
        if self.lut is not None:
            if self.known is not None:
                unknown = ~self.known[label]
                if unknown.any():
                    ids = sorted(set(np.unique(label[unknown]).tolist()))
                    raise BagError(f"label {where} holds ids {ids[:10]} that the mapping {self.source} does not "
                                   "list (add them, or set 'unlisted: ignore')")
            label = self.lut[label]
        bad = (label >= c.num_classes) & (label != c.ignore_index)
        if bad.any():
            ids = sorted(set(np.unique(label[bad]).tolist()))
            raise BagError(f"label {where} holds ids {ids[:10]} outside the model's classes (0..{c.num_classes - 1}, "
                           f"ignore {c.ignore_index}); give a --mapping file")
        return label


# -- helpers ------------------------------------------------------------------

def latency_summary(ms) -> dict:
    arr = np.asarray(list(ms), np.float64)
    if arr.size == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None, "count": 0}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(arr.max()),
            "mean": float(arr.mean()), "count": int(arr.size)}


def sample_indices(n: int, k: int) -> set[int]:
    if n <= 0 or k <= 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, n - 1, min(k, n))}


def model_identity(path: str | Path, info=None, provider: str | None = None) -> dict:
    from ..inference.segmenter import file_sha256
    path = Path(path)
    out = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    if info is not None:
        out.update({"arch": info.arch, "classes": list(info.classes.names),
                    "input_size": list(info.input_size)})
    if provider:
        out["backend"] = provider
    return out


class _Recorder:
    """Wraps a Segmenter for evaluate_frames: keeps per-frame inference times and a few sample predictions."""

    def __init__(self, segmenter, current: dict, want: set[int]):
        self._seg = segmenter
        self._current = current
        self._want = want
        self.times: list[float] = []
        self.samples: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._seg, name)

    def segment(self, rgb):
        out = self._seg.segment(rgb)
        self.times.append(out.inference_ms)
        frame = self._current.get("frame")
        if frame is not None and frame.index in self._want:
            self.samples.append({"name": frame.name, "rgb": frame.rgb, "label": self._current["label"],
                                 "pred": out.labels})
        return out


# -- offline ------------------------------------------------------------------

class Deadline:
    """A per-bag time limit, checked between frames: one slow bag must not hold up a fleet's report."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.end = time.monotonic() + seconds if seconds else None

    def check(self, done: int, total: int | None = None) -> None:
        if self.end is not None and time.monotonic() > self.end:
            of = f" of {total}" if total is not None else ""
            raise BagError(f"timed out after {self.seconds:g} s ({done}{of} frames done)")


def evaluate_offline(bag_path, image_topic: str, label_topic: str, segmenter, *, mapping=None,
                     progress: bool = True, samples: int = 6, timeout: float | None = None) -> tuple[dict, list]:
    """Score the segmenter on every image/label pair of the bag; returns (report dict, sample frames)."""
    from .labelled_images import evaluate_frames
    classes = segmenter.classes
    deadline = Deadline(timeout)
    with Bag(bag_path) as bag:
        img_info, lab_info = check_frame_topics(bag, image_topic, label_topic)
        mapper = LabelMapper.for_bag(bag, classes, mapping)
        stats = PairStats()
        expected = min(img_info.count, lab_info.count)
        current: dict = {}
        rec = _Recorder(segmenter, current, sample_indices(expected, samples))

        def frames():
            for done, frame in enumerate(paired_frames(bag, image_topic, label_topic, stats)):
                deadline.check(done, expected)
                label = mapper(frame.label, frame.name)
                current["frame"], current["label"] = frame, label
                yield frame.name, frame.rgb, label

        t0 = time.perf_counter()
        try:
            result = evaluate_frames(rec, frames(), classes=classes, total=expected, progress=progress)
        except BagError:
            raise
        except Exception as exc:
            if stats.pairs == 0 and "no frames" in str(exc):
                raise BagError(f"no image on {image_topic} has a label with the same stamp on {label_topic} "
                               f"({stats.images} images, {stats.labels} labels; skipped: {stats.summary()})") \
                    from None
            raise
        wall = time.perf_counter() - t0
        result.update({
            "mode": "offline",
            "frames_total": stats.images,
            "frames_evaluated": result["frames"],
            "frames_dropped": 0,
            "frames_skipped": stats.skipped,
            "skipped": stats.to_dict(),
            "fps": result["frames"] / wall if wall > 0 else None,
            "latency_ms": latency_summary(rec.times),
            "latency_kind": "inference time per frame (Segmenter.segment)",
            "latency_series": [[i, t] for i, t in enumerate(rec.times)],
            "model": model_identity(segmenter.model_path, getattr(segmenter, "info", None), segmenter.provider),
            "bag": {**bag.identity(), "image_topic": image_topic, "label_topic": label_topic},
            "mapping": mapper.source,
        })
        return result, rec.samples


# -- live ---------------------------------------------------------------------

class NodeProcess:
    """The segmentation node as a child process, its output in a log file.

    Its input is remapped onto the bag's image topic (`image/compressed` with input_transport
    compressed for a CompressedImage topic) and subscribed reliably, so that what counts as
    dropped is what the node itself skips, not transport loss.
    """

    def __init__(self, image_topic: str, *, compressed: bool, model: str | Path | None, log_path: Path,
                 params=(), env=None):
        cmd = [sys.executable, "-m", NODE_MODULE, "--ros-args"]
        if compressed:
            cmd += ["-r", f"image/compressed:={image_topic}", "-p", "input_transport:=compressed"]
        else:
            cmd += ["-r", f"image:={image_topic}"]
        cmd += ["-p", "qos_reliability:=reliable"]
        if model:
            cmd += ["-p", f"model:={Path(model).resolve()}"]
        for param in params or ():
            if ":=" not in param:
                raise BagError(f"node parameter '{param}' is not of the form name:=value")
            cmd += ["-p", param]
        self.cmd = cmd
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(env if env is not None else os.environ))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            import signal
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()


def _image_array(msg) -> np.ndarray:
    """HxW uint8 of an rclpy mono8 Image (honouring step)."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data, np.uint8)
    if h * step > data.size or step < w:
        raise BagError(f"output image {w}x{h} (step {step}) carries only {data.size} bytes")
    return data[: h * step].reshape(h, step)[:, :w].copy()


def evaluate_live(bag_path, image_topic: str, label_topic: str, *, model=None, classes: ClassTable | None = None,
                  mapping=None, start_node: bool = True, node_params=(), output_topic: str = DEFAULT_OUTPUT_TOPIC,
                  rate: float = 1.0, startup_timeout: float = 120.0, drain_timeout: float = 10.0,
                  progress: bool = True, samples: int = 6, log_dir: str | Path | None = None,
                  timeout: float | None = None) -> tuple[dict, list]:
    """Replay the bag's images into the segmentation node over DDS and score its outputs."""
    from ..inference.segmenter import model_info, resolve_model
    from ..ros.replay import Replayer, import_rclpy, init_context, qos_profile

    model_path = resolve_model(model)
    info = model_info(model_path)
    classes = classes or info.classes
    time_limit = Deadline(timeout)
    rclpy = import_rclpy()
    from sensor_msgs.msg import Image as RosImage
    with Bag(bag_path) as bag:
        img_info, lab_info = check_frame_topics(bag, image_topic, label_topic)
        if img_info.msgtype not in IMAGE_TYPES:
            raise BagError(f"image topic {image_topic} is {img_info.msgtype}")
        mapper = LabelMapper.for_bag(bag, classes, mapping)
        stats = PairStats()
        gt = read_labels(bag, label_topic, stats)
        if not gt:
            raise BagError(f"label topic {label_topic} holds no usable label")
        log_dir = Path(log_dir) if log_dir else None
        node_proc = None
        ctx = init_context(rclpy)
        node = rclpy.create_node("bag_evaluation", context=ctx)
        received: deque = deque()  # (stamp, monotonic receipt time, HxW array | error text)
        published: dict[int, float] = {}
        executor = None
        spin_thread = None
        try:
            if start_node:
                if log_dir is None:
                    raise BagError("live evaluation with a started node needs a folder for its log")
                log_dir.mkdir(parents=True, exist_ok=True)
                node_proc = NodeProcess(image_topic, compressed=img_info.msgtype != IMAGE, model=model_path,
                                        log_path=log_dir / "node.log", params=node_params)
            player = Replayer(bag, node=node, topics=[image_topic], reliability="reliable", depth=10)
            # wait for the node: its publisher on the output topic and its subscription on the image topic
            deadline = time.monotonic() + startup_timeout
            pub_infos = []
            while time.monotonic() < deadline:
                if node_proc is not None and not node_proc.alive():
                    raise BagError(f"the segmentation node exited (status {node_proc.proc.returncode}) before it "
                                   f"was ready: {node_proc.tail() or 'no output'}")
                pub_infos = node.get_publishers_info_by_topic(output_topic)
                if pub_infos and player.publishers[image_topic].get_subscription_count() > 0:
                    break
                time.sleep(0.1)
            else:
                what = ("started node" if start_node else "running node")
                raise BagError(f"no {what} appeared within {startup_timeout:g} s (need a subscriber on "
                               f"{image_topic} and a publisher on {output_topic})"
                               + (f"; node log: {node_proc.tail()}" if node_proc else ""))
            from rclpy.qos import ReliabilityPolicy
            best_effort = all(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in pub_infos)
            sub_qos = qos_profile("best_effort" if best_effort else "reliable", depth=1000)

            def on_output(msg):
                t = time.monotonic()
                st = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
                try:
                    if msg.encoding.lower() not in ("mono8", "8uc1"):
                        raise BagError(f"output encoding '{msg.encoding}', expected mono8")
                    received.append((st, t, _image_array(msg)))
                except BagError as exc:
                    received.append((st, t, str(exc)))

            sub = node.create_subscription(RosImage, output_topic, on_output, sub_qos)
            from rclpy.executors import SingleThreadedExecutor
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            spin_thread = threading.Thread(target=executor.spin, daemon=True)
            spin_thread.start()
            # our subscription must be matched before the first frame goes out
            sub_deadline = time.monotonic() + 10.0
            while sub.get_publisher_count() == 0 and time.monotonic() < sub_deadline:
                time.sleep(0.05)
            if sub.get_publisher_count() == 0:
                raise BagError(f"could not subscribe to the node's output {output_topic} (QoS mismatch?)")

            def on_publish(topic, stamp, t):
                time_limit.check(len(published), img_info.count)
                if stamp >= 0:
                    published.setdefault(stamp, t)

            play = player.play(rate=rate, on_publish=on_publish, progress=progress)
            player.flush()
            # drain: wait for outstanding outputs, ending early once every published frame came back
            end = time.monotonic() + drain_timeout
            while time.monotonic() < end:
                got = {r[0] for r in list(received)}
                if all(s in got for s in published):
                    break
                if node_proc is not None and not node_proc.alive():
                    break
                time.sleep(0.05)
            last_pub = max(published.values()) if published else time.monotonic()
        finally:
            if executor is not None:
                executor.shutdown(timeout_sec=2.0)
            if spin_thread is not None:
                spin_thread.join(timeout=2.0)
            node.destroy_node()
            rclpy.try_shutdown(context=ctx)
            if node_proc is not None:
                node_proc.stop()

        if node_proc is not None and node_proc.proc.returncode not in (0, -2, 130, None) and not received:
            raise BagError(f"the segmentation node failed (status {node_proc.proc.returncode}): {node_proc.tail()}")
        return _score_live(bag, image_topic, label_topic, output_topic, classes, mapper, gt, stats, published,
                           list(received), play, last_pub, rate, model_path, info, node_proc, samples,
                           start_node)


def _score_live(bag, image_topic, label_topic, output_topic, classes, mapper, gt, stats, published, received,
                play, last_pub, rate, model_path, info, node_proc, samples, start_node):
    n = classes.num_classes
    cm = np.zeros((n, n), np.int64)
    first = {}
    extra_outputs = 0
    bad_outputs = 0
    for st, t, arr in received:
        if st not in published:
            extra_outputs += 1
            continue
        if st in first:
            extra_outputs += 1
            continue
        first[st] = (t, arr)
    images_sent = len(published)
    want = sample_indices(images_sent, samples)
    order = sorted(published)
    index_of = {s: i for i, s in enumerate(order)}
    wanted_stamps = {order[i] for i in want}
    latencies = []
    evaluated = 0
    sample_frames = []
    for st in order:
        if st not in first:
            continue
        t, arr = first[st]
        latencies.append((published[st] - published[order[0]], (t - published[st]) * 1000.0, index_of[st]))
        if isinstance(arr, str):
            bad_outputs += 1
            stats.note(f"output {stamp_name(st)}: {arr}")
            continue
        label = gt.get(st)
        if label is None:
            stats.images_without_label += 1
            stats.note(f"image {stamp_name(st)}: no label with this stamp")
            continue
        if label.shape != arr.shape:
            stats.size_mismatch += 1
            stats.note(f"{stamp_name(st)}: output is {arr.shape[1]}x{arr.shape[0]}, label is "
                       f"{label.shape[1]}x{label.shape[0]}")
            continue
        mapped = mapper(label, stamp_name(st))
        cm += confusion_matrix(mapped, arr, n, classes.ignore_index)
        evaluated += 1
        if st in wanted_stamps:
            sample_frames.append({"name": stamp_name(st), "stamp": st, "label": mapped, "pred": arr})
    stats.images = images_sent
    stats.pairs = evaluated
    stats.labels_without_image += sum(1 for s in gt if s not in published)
    dropped = sum(1 for s in published if s not in first)
    if evaluated == 0:
        raise BagError(f"no frame could be scored: {images_sent} images sent, {len(first)} outputs received on "
                       f"{output_topic} ({dropped} dropped; skipped: {stats.summary()})"
                       + (f"; node log: {node_proc.tail()}" if node_proc else ""))
    _attach_sample_images(bag, image_topic, sample_frames)
    result = scores(cm, classes.names)
    lat_ms = [lat[1] for lat in latencies]
    span = (max(t for t, _ in first.values()) - published[order[0]]) if first else 0.0
    result.update({
        "confusion_matrix": cm.tolist(),
        "frames": evaluated,
        "mode": "live",
        "frames_total": images_sent,
        "frames_received": len(first),
        "frames_evaluated": evaluated,
        "frames_dropped": dropped,
        "frames_skipped": stats.skipped + bad_outputs,
        "outputs_unexpected": extra_outputs,
        "outputs_bad": bad_outputs,
        "skipped": stats.to_dict(),
        "fps": len(first) / span if span > 0 else None,
        "replay_fps": images_sent / max(play.wall_s, 1e-9),
        "replay_rate": rate,
        "replay_max_lag_ms": play.max_lag_ms,
        "latency_ms": latency_summary(lat_ms),
        "latency_kind": "replay publish to output receipt (same host, monotonic clock)",
        "latency_series": [[round(lat[0], 4), lat[1]] for lat in latencies],
        "model": model_identity(model_path, info),
        "node": {"started": bool(start_node), "output_topic": output_topic,
                 "command": node_proc.cmd if node_proc else None,
                 "exit_status": node_proc.proc.returncode if node_proc else None},
        "bag": {**bag.identity(), "image_topic": image_topic, "label_topic": label_topic},
        "mapping": mapper.source,
    })
    return result, sample_frames


def _attach_sample_images(bag: Bag, image_topic: str, frames: list) -> None:
    """Decode the bag images of the chosen sample frames (live mode keeps only stamps while running)."""
    if not frames:
        return
    from ..bags import cdr_stamp_ns, decode_image, typestore
    ts = typestore()
    want = {f["stamp"]: f for f in frames}
    for _, mtype, _, raw in bag.messages([image_topic]):
        st = cdr_stamp_ns(raw)
        if st in want and "rgb" not in want[st]:
            try:
                want[st]["rgb"] = decode_image(ts.deserialize_cdr(raw, mtype), mtype)
            except BagError:
                pass
    frames[:] = [f for f in frames if "rgb" in f]
