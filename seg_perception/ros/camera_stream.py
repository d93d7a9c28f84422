# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""One camera of segmentation_node: its subscription, newest pending frame, outputs and statistics.

The node owns the model and the worker; each stream keeps only the newest frame of its camera
(older ones count as dropped), turns a segmentation into the outputs somebody subscribes to, with
the frame's own header, and reports its own figures in /diagnostics.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from collections import deque

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image

from ..inference.masks import group_mask, overlay
from .geometry_outputs import BOUNDARY_OUTPUTS, GeometryOutputs
from .ros_image import compressed_to_rgb, image_to_rgb, make_image

IMAGE_OUTPUTS = ("labels", "drivable_mask", "obstacle_mask", "confidence", "overlay")


class Stats:
    """Counters and recent per-frame timings, shared by the worker, the log and diagnostics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.skipped = self.overlays = self.batched = 0
        self.outputs = dict.fromkeys(IMAGE_OUTPUTS, 0)
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=4096)  # (t, latency, inference)

    def totals(self) -> dict:
        with self.lock:
            return dict(received=self.received, processed=self.processed, dropped=self.dropped,
                        skipped=self.skipped, overlays=self.overlays, batched=self.batched,
                        **{f"published_{k}": v for k, v in self.outputs.items()})

    def window(self, since: float) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            rows = [r for r in self.recent if r[0] > since]
        lat = np.array([r[1] for r in rows], np.float64)
        inf = np.array([r[2] for r in rows], np.float64)
        return lat, inf


class Window:
    """What happened since the previous report (one per consumer: log line, diagnostics)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.t = time.monotonic()
        self.totals = stats.totals()

    def next(self) -> dict:
        now = time.monotonic()
        totals = self.stats.totals()
        lat, inf = self.stats.window(self.t)
        span = max(now - self.t, 1e-6)
        delta = {k: totals[k] - self.totals[k] for k in totals}
        self.t, self.totals = now, totals
        return dict(
            span=span, fps=delta["processed"] / span, delta=delta, totals=totals,
            latency_mean=float(lat.mean()) if lat.size else float("nan"),
            latency_p95=float(np.percentile(lat, 95)) if lat.size else float("nan"),
            inference_mean=float(inf.mean()) if inf.size else float("nan"))


class CameraStream:
    """A camera's input and outputs in a node; `image_topic`/`info_topic`/`prefix` name its topics."""

    def __init__(self, node, *, image_topic: str, info_topic: str, prefix: str, out_qos, make_publisher,
                 label: str = "") -> None:
        self.node = node
        self.image_topic = image_topic
        self.label = label  # '' for the single-camera node (its diagnostics keep their name)
        self.stats = Stats()
        self.pending = None
        self.sub = None
        self.compressed = False
        self.pubs = {name: make_publisher(Image, prefix + name, out_qos) for name in IMAGE_OUTPUTS}
        self.geometry = GeometryOutputs(node, out_qos=out_qos, make_publisher=make_publisher, prefix=prefix,
                                        info_topic=info_topic, label=label)
        self.log_window = Window(self.stats)
        self.diag_window = Window(self.stats)

    # -- input ----------------------------------------------------------------------
    def open_input(self, *, compressed: bool, in_qos, info_qos, qos_overrides, on_image) -> None:
        self.compressed = compressed
        if compressed:
            self.sub = self.node.create_subscription(CompressedImage, self.image_topic + "/compressed", on_image,
                                                     copy.copy(in_qos), qos_overriding_options=qos_overrides)
        else:
            self.sub = self.node.create_subscription(Image, self.image_topic, on_image, copy.copy(in_qos),
                                                     qos_overriding_options=qos_overrides)
        self.geometry.open_input(copy.copy(info_qos))
        self.log_window = Window(self.stats)
        self.diag_window = Window(self.stats)

    def close_input(self) -> None:
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None
        self.geometry.close_input()
        self.pending = None

    def close_outputs(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)
        self.pubs = {}
        self.geometry.close_outputs()

    @property
    def topic(self) -> str:
        return self.sub.topic_name if self.sub is not None else self.image_topic

    def offer(self, msg) -> bool:
        """Keep only the newest frame (call with the node's condition held); True if it replaced one."""
        dropped = self.pending is not None
        with self.stats.lock:
            self.stats.received += 1
            self.stats.dropped += dropped
        self.pending = (msg, time.monotonic())
        return dropped

    def take(self):
        item, self.pending = self.pending, None
        return item

    def decode(self, msg) -> np.ndarray:
        """The frame as HxWx3 RGB (ImageFormatError for what cannot be one)."""
        return compressed_to_rgb(msg) if self.compressed else image_to_rgb(msg)

    # -- output --------------------------------------------------------------------
    def wanted(self, settings) -> tuple[dict[str, bool], dict[str, bool]]:
        """The (image, geometric) outputs somebody subscribes to, asked once per frame: rclpy's publish to
        nobody still serialises.
        """
        image = {name: pub.get_subscription_count() > 0 for name, pub in self.pubs.items()}
        image["confidence"] &= settings.publish_confidence
        image["overlay"] &= settings.publish_overlay
        return image, self.geometry.wanted()

    @staticmethod
    def needs_confidence(wanted) -> bool:
        """Whether a wanted output carries the confidence (its image, the clouds' confidence field)."""
        image, geometry = wanted
        return image["confidence"] or geometry["points"] or geometry["obstacles"]

    def publish(self, header, rgb: np.ndarray, seg, settings, wanted, t_received: float, batch: int = 1) -> None:
        """The `wanted` outputs of one segmented frame, with the frame's header (`batch`: frames segmented with it)."""
        s = settings
        labels = seg.labels
        wanted, geometry_wanted = wanted
        drivable = None
        if wanted["drivable_mask"] or any(geometry_wanted[k] for k in BOUNDARY_OUTPUTS):
            drivable = group_mask(labels, s.drivable_lut)
        pubs = self.pubs
        if wanted["labels"]:
            pubs["labels"].publish(make_image(labels, "mono8", header))
        if wanted["drivable_mask"]:
            pubs["drivable_mask"].publish(make_image(drivable, "mono8", header))
        if wanted["obstacle_mask"]:
            pubs["obstacle_mask"].publish(make_image(group_mask(labels, s.obstacle_lut), "mono8", header))
        if wanted["confidence"]:
            pubs["confidence"].publish(make_image(seg.confidence, "mono8", header))
        if wanted["overlay"]:
            base = rgb
            if labels.shape != rgb.shape[:2]:
                base = cv2.resize(rgb, (labels.shape[1], labels.shape[0]), interpolation=cv2.INTER_AREA)
            pubs["overlay"].publish(make_image(overlay(base, labels, s.palette_lut, s.overlay_alpha), "rgb8", header))
        self.geometry.process(header, labels, seg.confidence, drivable, s.obstacle_lut, (rgb.shape[1], rgb.shape[0]),
                              s.geometry, wanted=geometry_wanted)
        done = time.monotonic()
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.overlays += wanted["overlay"]
            self.stats.batched += batch > 1
            for name, made in wanted.items():
                self.stats.outputs[name] += made
            self.stats.recent.append((done, (done - t_received) * 1000.0, seg.inference_ms))

    # -- reporting -----------------------------------------------------------------------
    def log_line(self, no_frames_fix: str) -> tuple[str, str] | None:
        """(level, text) of this camera's statistics line for the last period."""
        w = self.log_window.next()
        d = w["delta"]
        who = f"{self.topic}: " if self.label else ""
        if d["received"] == 0 and d["skipped"] == 0:
            pubs = self.node.count_publishers(self.topic)
            if pubs:
                return "warning", (f"no frames on {self.topic} in the last {w['span']:.0f} s although {pubs} "
                                   f"publisher{'s are' if pubs != 1 else ' is'} matched: " + no_frames_fix)
            return "info", f"no frames on {self.topic} in the last {w['span']:.0f} s (no publisher)"

        def ms(v: float) -> str:
            return "n/a" if math.isnan(v) else f"{v:.1f} ms"

        return "info", (
            f"{who}{w['fps']:.1f} frames/s, latency mean {ms(w['latency_mean'])} p95 {ms(w['latency_p95'])} "
            f"(inference {ms(w['inference_mean'])}), dropped {d['dropped']}, skipped {d['skipped']} "
            f"in {w['span']:.0f} s; totals: {w['totals']['processed']} processed, "
            f"{w['totals']['dropped']} dropped, {w['totals']['skipped']} skipped")

    def diagnostic_status(self, name: str, hardware_id: str, extra=(), problem=None,
                          no_frames_fix: str = "") -> DiagnosticStatus:
        """This camera's status: `problem` (level, message) wins, then missing input, skipped frames."""
        w = self.diag_window.next()
        d, t = w["delta"], w["totals"]
        status = DiagnosticStatus(name=name + (f" {self.topic}" if self.label else ""), hardware_id=hardware_id)
        if problem is not None:
            status.level, status.message = problem
        elif d["received"] == 0:
            pubs = self.node.count_publishers(self.topic)
            status.level = DiagnosticStatus.WARN
            status.message = (f"no input frames on {self.topic}"
                              + (f" although {pubs} publisher(s) matched: {no_frames_fix}" if pubs else ""))
        elif d["skipped"]:
            status.level, status.message = DiagnosticStatus.WARN, f"{d['skipped']} bad input frames skipped"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"{w['fps']:.1f} frames/s"

        def fmt(v: float) -> str:
            return "nan" if math.isnan(v) else f"{v:.2f}"

        status.values = [KeyValue(key=k, value=v) for k, v in (
            ("frames_per_second", fmt(w["fps"])),
            ("latency_mean_ms", fmt(w["latency_mean"])),
            ("latency_p95_ms", fmt(w["latency_p95"])),
            ("inference_mean_ms", fmt(w["inference_mean"])),
            ("dropped", str(d["dropped"])),
            ("skipped", str(d["skipped"])),
            ("frames_received_total", str(t["received"])),
            ("frames_processed_total", str(t["processed"])),
            ("dropped_total", str(t["dropped"])),
            ("skipped_total", str(t["skipped"])),
            ("overlays_total", str(t["overlays"])),
            ("frames_batched_total", str(t["batched"])),
            *((f"{k}_total", str(v)) for k, v in t.items() if k.startswith("published_")),
            ("input_topic", self.topic),
            *extra,
        )]
        return status


