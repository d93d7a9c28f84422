# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`segmentation_node`: camera images in; class labels, drivable/obstacle masks,
confidence and a colour overlay out.

Topics (inputs relative, outputs the node's private names `~/...`: /segmentation/labels for
the default node name; namespaces and remappings apply; two differently named nodes in one
namespace never collide, and a second node of the same name refuses to start):

  in   image                       sensor_msgs/Image            (input_transport: raw)
  in   image/compressed            sensor_msgs/CompressedImage  (input_transport: compressed)
  in   camera_info                 sensor_msgs/CameraInfo       (for the geometric outputs)
  out  segmentation/labels         mono8, class id per pixel
  out  segmentation/drivable_mask  mono8, 255 on drivable classes, else 0
  out  segmentation/obstacle_mask  mono8, 255 on obstacle classes, else 0
  out  segmentation/confidence     mono8, top-class probability * 255
  out  segmentation/overlay        rgb8, class colours blended over the frame
  out  segmentation/camera_info    CameraInfo of the label images (their size; K, P scaled)
  out  segmentation/points         PointCloud2, organized like the labels: ground point per pixel
  out  segmentation/scan           LaserScan in base_frame: the free-space boundary (marks)
  out  segmentation/free_scan      LaserScan in base_frame: how far the ground was seen free (clears)
  out  segmentation/obstacles      PointCloud2: contact points of obstacle classes
  out  segmentation/grid           OccupancyGrid in base_frame: one frame's free space
  out  /diagnostics                diagnostic_msgs/DiagnosticArray

Image outputs carry the input's header unchanged; the geometric ones its stamp
in base_frame (ros/geometry_outputs.py). Outputs without subscribers are not
computed. The newest frame wins: the subscription callback only stores the
latest message, and a worker thread segments it (two at once by default on a
CPU: `workers`; outputs still leave in the frames' order); frames replaced
before a worker got to them count as dropped, frames that cannot be decoded or
segmented count as skipped (and are logged).

With the `cameras` parameter (image topics) one node serves several cameras:
`<camera ns>/image_raw` and `<camera ns>/camera_info` in, the outputs above
under `<camera ns>/<node name>/`; the newest frame of every camera is segmented
in one batch (ros/camera_stream.py holds one camera's side).
"""
from __future__ import annotations

import copy
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

from ..classes import ClassTable, ClassTableError
from ..inference.input_size import parse_input_size
from ..inference.masks import group_lut
from .camera_stream import CameraStream
from .camera_topics import camera_info_topic, output_prefix, parse_cameras
from .executable import run_node
from .geometry_outputs import GEOMETRY_PARAMETERS, GeometrySettings, build_geometry_settings
from .in_order import InOrder
from .ros_image import ImageFormatError
from .throttled_log import ThrottledWarnings

NODE_NAME = "segmentation"
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
TRANSPORTS = ("raw", "compressed")
RESOLUTIONS = ("input", "network")
RELIABILITIES = ("best_effort", "reliable")
#: Topics whose QoS the standard qos_overrides.<topic>.{publisher,subscription}.<policy> parameters
#: (read-only, given at start) override on top of the qos_* parameters: reliability, durability,
#: history, depth, deadline, liveliness...
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
#: What to do when a publisher is matched but its frames never arrive (large raw frames).
NO_FRAMES_FIX = ("frames larger than the DDS transport carries are lost whole with best-effort input (a 4K rgb8 "
                 "frame is 25 MB); give every process on the host the shipped profile: export "
                 "FASTDDS_DEFAULT_PROFILES_FILE=<share>/seg_perception/config/fastdds_large_frames.xml "
                 "(or publish image/compressed)")
#: Seconds between two log lines about the same kind of bad input, and how many kinds are remembered.
BAD_INPUT_LOG_PERIOD = 5.0
BAD_INPUT_KINDS = 64
#: A second worker starts a frame while another is segmenting only this long after a frame was dropped
#: (a camera outpacing one worker): otherwise the frame waits a few milliseconds for the worker with
#: every thread, which answers it sooner than a worker with a share of them.
BEHIND_SECONDS = 2.0
_VARIABLE_PARTS = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


class StartupError(RuntimeError):
    """A parameter or model problem that stops the node before it starts.

    `logger` is the node's logger name (namespace included) where the node exists by then.
    """

    def __init__(self, message: str, logger: str | None = None) -> None:
        super().__init__(message)
        self.logger = logger


def _descriptor(ptype: int, description: str, *, read_only: bool = False, choices=None,
                float_range=None, int_range=None) -> ParameterDescriptor:
    d = ParameterDescriptor(type=ptype, description=description, read_only=read_only)
    if choices:
        d.additional_constraints = "one of: " + ", ".join(choices)
    if float_range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]),
                                                     to_value=float(float_range[1]), step=0.0)]
    if int_range is not None:
        d.integer_range = [IntegerRange(from_value=int(int_range[0]), to_value=int(int_range[1]), step=1)]
    return d


# name: (type, default (None = no value: empty array), descriptor kwargs)
_S, _I, _D, _B = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
                  ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_BOOL)
_SA, _IA = ParameterType.PARAMETER_STRING_ARRAY, ParameterType.PARAMETER_INTEGER_ARRAY
PARAMETERS: dict[str, tuple[int, object, dict]] = {
    "model": (_S, "", dict(read_only=True, description=(
        "A shipped model by name (camvid: 11 CamVid classes; driving: 7 classes, CamVid and Indian streets) "
        "or a model file (.pt checkpoint or exported .onnx); empty = driving (the default)"))),
    "cameras": (_SA, None, dict(read_only=True, description=(
        "Image topics of several cameras for one node (e.g. ['/front/image_raw', '/rear/image_raw']): the "
        "newest frame of each is segmented in one batch; each camera's CameraInfo is its sibling camera_info "
        "and its outputs go under its namespace (/front/segmentation/labels). Empty = one camera on 'image'"))),
    "device": (_S, "auto", dict(read_only=True, choices=DEVICES, description=(
        "Inference device; auto = CUDA when a GPU is available, else CPU. A GPU asked for where there is none: "
        "the CPU, with an error in the log and a warning in /diagnostics"))),
    "backend": (_S, "auto", dict(read_only=True, choices=BACKENDS, description=(
        "Inference backend; auto = the fastest available: ONNX Runtime's TensorRT (fp16) or PyTorch fp16 on a "
        "GPU, ONNX Runtime on a CPU (the .onnx next to the checkpoint)"))),
    "precision": (_S, "auto", dict(read_only=True, choices=PRECISIONS, description=(
        "auto = int8 on CPUs with int8 dot products (VNNI, AMX) where the model's .int8.onnx exists, fp16 on "
        "GPUs, else fp32"))),
    "input_size": (_S, "auto", dict(read_only=True, description=(
        "Network input: auto = the model's input height at the camera's aspect ratio (16:9 -> 640x360 for a "
        "480x360 model); model = the model's training size whatever the camera; or WIDTHxHEIGHT"))),
    "camera_resolution": (_IA, None, dict(read_only=True, description=(
        "Camera frame size [width, height] the inference engine is built and warmed up for before the node "
        "reports ready (TensorRT builds one engine per network size); empty = the model's training size"))),
    "trt_cache_dir": (_S, "", dict(read_only=True, description=(
        "TensorRT engine cache folder; empty = $ROS_HOME/seg_perception/tensorrt (one engine per model file, "
        "network size and batch; a stale or corrupt one is rebuilt)"))),
    "trt_rebuild": (_B, False, dict(read_only=True, description=(
        "Discard the cached TensorRT engines of this model and build them again at start"))),
    "threads": (_I, 0, dict(read_only=True, int_range=(0, 256), description=(
        "CPU inference threads; 0 = library default (all cores)"))),
    "workers": (_I, 0, dict(read_only=True, int_range=(0, 16), description=(
        "Frames (or batches of cameras) segmented at once by parallel workers, published in the order they "
        "arrived; 0 = auto: 2 with ONNX Runtime on a CPU of two or more cores (a frame that runs alone gets "
        "every thread, overlapping ones a share each: more frames per second once the camera outpaces one "
        "worker), else 1"))),
    "input_transport": (_S, "raw", dict(read_only=True, choices=TRANSPORTS, description=(
        "raw: subscribe sensor_msgs/Image on 'image'; compressed: sensor_msgs/CompressedImage "
        "(JPEG/PNG) on 'image/compressed'"))),
    "output_resolution": (_S, "input", dict(choices=RESOLUTIONS, description=(
        "Size of the outputs: input = the camera frame's size, network = the model's input size"))),
    "qos_reliability": (_S, "best_effort", dict(read_only=True, choices=RELIABILITIES, description=(
        "Input subscription reliability (best_effort = sensor data QoS)"))),
    "qos_depth": (_I, 1, dict(read_only=True, int_range=(1, 100), description=(
        "Input subscription history depth (keep last)"))),
    "output_qos_reliability": (_S, "reliable", dict(read_only=True, choices=RELIABILITIES, description=(
        "Reliability of the published outputs"))),
    "output_qos_depth": (_I, 1, dict(read_only=True, int_range=(1, 100), description=(
        "History depth of the published outputs (keep last)"))),
    "flip_tta": (_B, False, dict(description=(
        "Flip test-time augmentation: segment the frame and its mirror image and average them; "
        "about one point of val mIoU for twice the inference time"))),
    "overlay_alpha": (_D, 0.5, dict(float_range=(0.0, 1.0), description=(
        "Overlay opacity: 0 = camera frame only, 1 = class colours only"))),
    "drivable_classes": (_SA, None, dict(description=(
        "Class names marked in drivable_mask; empty = the model's drivable group"))),
    "obstacle_classes": (_SA, None, dict(description=(
        "Class names marked in obstacle_mask; empty = the model's obstacle group"))),
    "palette": (_IA, None, dict(description=(
        "Overlay colours as a flat list r,g,b,r,g,b,... (3 per class, 0..255); empty = the model's"))),
    "publish_confidence": (_B, True, dict(description="Publish segmentation/confidence")),
    "publish_overlay": (_B, True, dict(description=(
        "Publish segmentation/overlay (computed only while it has subscribers)"))),
    "stats_period": (_D, 10.0, dict(read_only=True, float_range=(0.0, 3600.0), description=(
        "Seconds between statistics log lines (frames/s, latency, dropped, skipped); 0 = off"))),
    "diagnostics_period": (_D, 1.0, dict(read_only=True, float_range=(0.0, 3600.0), description=(
        "Seconds between /diagnostics messages; 0 = off"))),
}
PARAMETERS.update(GEOMETRY_PARAMETERS)
RUNTIME_PARAMETERS = tuple(k for k, v in PARAMETERS.items() if not v[2].get("read_only"))


@dataclass(frozen=True)
class Settings:
    """The runtime-changeable parameters in the form the worker uses them."""

    output_resolution: str
    overlay_alpha: float
    drivable_ids: tuple[int, ...]
    obstacle_ids: tuple[int, ...]
    drivable_lut: np.ndarray
    obstacle_lut: np.ndarray
    palette_lut: np.ndarray
    publish_confidence: bool
    publish_overlay: bool
    flip_tta: bool
    geometry: GeometrySettings


_TYPE_CHECKS = {
    ParameterType.PARAMETER_BOOL: ("a bool", lambda v: isinstance(v, bool)),
    ParameterType.PARAMETER_INTEGER: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    ParameterType.PARAMETER_DOUBLE: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    ParameterType.PARAMETER_STRING: ("a string", lambda v: isinstance(v, str)),
    ParameterType.PARAMETER_STRING_ARRAY: ("a list of strings",
                                           lambda v: _is_list(v) and all(isinstance(x, str) for x in v)),
    ParameterType.PARAMETER_INTEGER_ARRAY: ("a list of integers", lambda v: _is_list(v) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in v)),
    ParameterType.PARAMETER_DOUBLE_ARRAY: ("a list of numbers", lambda v: _is_list(v) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)),
}


def _is_list(value) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "array"


def _check_types(values: dict) -> None:
    """ValueError naming the parameter for a value of the wrong type (rclpy checks the node's own
    parameters first; this keeps the validation whole for any caller).
    """
    for name, value in values.items():
        if name in PARAMETERS and value is not None:
            kind, ok = _TYPE_CHECKS[PARAMETERS[name][0]]
            if not ok(value):
                raise ValueError(f"{name} must be {kind}, got {value!r}")


def build_settings(values: dict, classes: ClassTable) -> Settings:
    """Validate runtime parameter values against the model's class table.

    Raises ValueError (ClassTableError included) with a message naming the parameter.
    """
    _check_types(values)
    res = values["output_resolution"]
    if res not in RESOLUTIONS:
        raise ValueError(f"output_resolution '{res}' unknown; choose one of {list(RESOLUTIONS)}")
    alpha = float(values["overlay_alpha"])
    if not (0.0 <= alpha <= 1.0) or math.isnan(alpha):
        raise ValueError(f"overlay_alpha {alpha} is outside 0..1")
    groups = {}
    for group in ("drivable", "obstacle"):
        names = list(values.get(f"{group}_classes") or []) or list(getattr(classes, group))
        try:
            groups[group] = tuple(classes.ids(names))
        except ClassTableError as exc:
            raise ValueError(f"{group}_classes: {exc}") from None
    palette = list(values.get("palette") or [])
    if palette:
        n = classes.num_classes
        if len(palette) != 3 * n:
            raise ValueError(f"palette has {len(palette)} values; the model has {n} classes, so it needs "
                             f"3*{n} = {3 * n} (r,g,b per class)")
        bad = [v for v in palette if not 0 <= int(v) <= 255]
        if bad:
            raise ValueError(f"palette values {bad[:5]} are outside 0..255")
        table = classes.with_overrides(palette=[palette[i:i + 3] for i in range(0, len(palette), 3)])
    else:
        table = classes
    return Settings(output_resolution=res, overlay_alpha=alpha, drivable_ids=groups["drivable"],
                    obstacle_ids=groups["obstacle"], drivable_lut=group_lut(groups["drivable"]),
                    obstacle_lut=group_lut(groups["obstacle"]), palette_lut=table.palette_array(),
                    publish_confidence=bool(values["publish_confidence"]),
                    publish_overlay=bool(values["publish_overlay"]), flip_tta=bool(values["flip_tta"]),
                    geometry=build_geometry_settings(values))


class _Frame(NamedTuple):
    """A camera's frame on its way through a worker, with the outputs wanted of it."""

    stream: CameraStream
    header: object
    rgb: np.ndarray
    t_received: float
    wanted: tuple


class SegmentationMixin:
    """What segmentation_node does, for a plain rclpy Node and for a managed (lifecycle) one.

    The steps map onto lifecycle transitions: load (configure: model, parameters), open_outputs
    (configure: publishers), open_inputs (activate: subscriptions, worker, timers), close_inputs
    (deactivate), close_outputs and unload (cleanup). The plain node runs them all at start.
    """

    #: A managed node lets the configure-time (read-only) parameters change while it is unconfigured.
    CONFIGURE_TIME_WRITABLE = False

    def _declare_parameters(self) -> None:
        for name, (ptype, default, extra) in PARAMETERS.items():
            if self.CONFIGURE_TIME_WRITABLE and extra.get("read_only"):
                extra = dict(extra, read_only=False,
                             description=extra["description"] + " (configure time: set it while unconfigured)")
            desc = _descriptor(ptype, **extra)
            value = default if default is not None else Parameter.Type(ptype)
            try:
                declared = self.declare_parameter(name, value, desc)
                if default is None and declared.type_ == Parameter.Type.NOT_SET:
                    # An empty array of the declared type, so that get_parameters (ros2 param get/dump,
                    # rqt) answers for it: rclpy cannot declare one directly (it types [] as bytes), and
                    # a read-only one can only be given its value the way declare_parameter gives it.
                    empty = Parameter(name, Parameter.Type(ptype), [])
                    if desc.read_only:
                        self._set_parameters_atomically_common([empty], {name: desc})
                    else:
                        self.set_parameters([empty])
            except (InvalidParameterTypeException, InvalidParameterValueException, ParameterException) as exc:
                raise StartupError(f"parameter '{name}': {_first_line(exc)}", self.get_logger().name) from None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._in_order = InOrder()
        self._busy = 0  # workers segmenting
        self._last_drop = -math.inf
        self._timers: list = []
        self._bad_input_log = ThrottledWarnings(lambda text: self.get_logger().warning(text),
                                                period=BAD_INPUT_LOG_PERIOD, max_kinds=BAD_INPUT_KINDS,
                                                repeats="more such frames skipped since the last report")
        self._namesake_reported = False
        self.segmenter = None
        self.settings: Settings | None = None
        self.streams: list[CameraStream] = []
        self._outputs: list = []
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    def _make_publisher(self, msg_type, topic: str, qos):
        """A publisher for an output (a managed node makes lifecycle publishers); its QoS can be
        overridden with ROS 2's standard qos_overrides.<topic>.publisher.<policy> parameters.
        """
        # a copy: rclpy writes the overrides into the profile it is given, which the next output shares
        return self.create_publisher(msg_type, topic, copy.copy(qos), qos_overriding_options=QOS_OVERRIDES)

    # -- parameters -----------------------------------------------------------
    def _value(self, name: str):
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # an array declared without a value: empty
            return None

    def _read_only_values(self) -> dict:
        values = {name: self._value(name) for name in PARAMETERS if PARAMETERS[name][2].get("read_only")}
        for name, choices in (("device", DEVICES), ("backend", BACKENDS), ("precision", PRECISIONS),
                              ("input_transport", TRANSPORTS), ("qos_reliability", RELIABILITIES),
                              ("output_qos_reliability", RELIABILITIES)):
            if values[name] not in choices:
                raise StartupError(f"parameter '{name}' is '{values[name]}'; choose one of {list(choices)}")
        try:
            values["cameras"] = parse_cameras(list(values["cameras"] or []))
            values["input_size"] = parse_input_size(values["input_size"])
        except ValueError as exc:
            raise StartupError(f"parameter {exc}") from None
        size = list(values["camera_resolution"] or [])
        if size and (len(size) != 2 or min(size) < 1 or max(size) > 16384):
            raise StartupError(f"parameter camera_resolution {size}: give [width, height] in pixels (or leave empty)")
        values["camera_resolution"] = tuple(size) or None
        return values

    def _runtime_values(self, overrides=()) -> dict:
        values = {name: self._value(name) for name in RUNTIME_PARAMETERS}
        for p in overrides:
            values[p.name] = p.value
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Reject invalid runtime values with a reason; read-only and ranges are checked by rclpy."""
        if self.segmenter is not None:
            fixed = [p.name for p in params if p.name in PARAMETERS and p.name not in RUNTIME_PARAMETERS]
            if fixed:
                return SetParametersResult(successful=False, reason=(
                    f"{', '.join(fixed)} can only change while the node is unconfigured (cleanup first)"))
        relevant = [p for p in params if p.name in RUNTIME_PARAMETERS]
        if not relevant or self.segmenter is None:
            return SetParametersResult(successful=True)
        try:
            build_settings(self._runtime_values(relevant), self.segmenter.classes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        if self.segmenter is None or not any(p.name in RUNTIME_PARAMETERS for p in params):
            return
        self.settings = build_settings(self._runtime_values(), self.segmenter.classes)
        self.get_logger().info("parameters changed: " + ", ".join(
            f"{p.name}={_readable(p.value)}" for p in params if p.name in RUNTIME_PARAMETERS))

    # -- lifecycle steps ----------------------------------------------------------
    def load(self) -> None:
        """Load and warm the model and validate every parameter against it (StartupError)."""
        ro = self._read_only_values()
        from ..inference.segmenter import (  # torch is imported here
            InputError,
            Segmenter,
        )
        self._InputError = InputError
        try:
            self.segmenter = Segmenter(ro["model"], device=ro["device"], backend=ro["backend"],
                                       precision=ro["precision"], input_size=ro["input_size"],
                                       threads=ro["threads"] or None, max_batch=max(1, len(ro["cameras"])),
                                       workers=ro["workers"],
                                       trt_cache_dir=ro["trt_cache_dir"] or None, trt_rebuild=ro["trt_rebuild"])
        except (ValueError, RuntimeError, OSError) as exc:  # CheckpointError is a ValueError
            raise StartupError(f"cannot load model: {_first_line(exc)}") from None
        for note in self.segmenter.notes:  # what was asked for and cannot be: a GPU (error), int8 speed (warning)
            if "requested" in note:
                self.get_logger().error(note)
            else:
                self.get_logger().warning(note)
        self._refuse_a_namesake(wait=1.0)  # after the model load: discovery has had seconds
        try:
            self.settings = build_settings(self._runtime_values(), self.segmenter.classes)
        except ValueError as exc:
            self.segmenter = None
            raise StartupError(f"invalid parameter: {exc} (model {Path(ro['model'] or 'driving').name})") from None
        try:  # before the node reports ready: TensorRT engines are built here, not on the first frame
            self._warmup_ms = self.segmenter.warm_up(ro["camera_resolution"], batch=max(1, len(ro["cameras"])))
        except Exception as exc:
            self.segmenter = None
            raise StartupError(f"cannot run the model: {_first_line(exc)}") from None
        self._ro = ro

    def open_outputs(self) -> None:
        ro = self._ro
        out_qos = _qos(ro["output_qos_reliability"], ro["output_qos_depth"])
        if ro["cameras"]:
            self.streams = [CameraStream(self, image_topic=topic, info_topic=camera_info_topic(topic),
                                         prefix=output_prefix(topic, self.get_name()), out_qos=out_qos,
                                         make_publisher=self._make_publisher, label=topic)
                            for topic in ro["cameras"]]
        else:
            self.streams = [CameraStream(self, image_topic="image", info_topic="camera_info", prefix="~/",
                                         out_qos=out_qos, make_publisher=self._make_publisher)]
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # label_info beside each camera's labels (the semantic layer reads it from the labels' namespace),
        # and under the node's own name as before.
        prefixes = ["~/"] + [output_prefix(t, self.get_name()) for t in ro["cameras"]]
        self.pub_label_info = [publish_label_info(self, self.segmenter.classes, prefix) for prefix in prefixes]
        self._outputs = [p for p in (self.pub_diagnostics, *self.pub_label_info) if p is not None]

    def open_inputs(self) -> None:
        ro = self._ro
        in_qos = _qos(ro["qos_reliability"], ro["qos_depth"])
        compressed = ro["input_transport"] == "compressed"
        self._stop.clear()
        for stream in self.streams:
            stream.open_input(compressed=compressed, in_qos=in_qos, info_qos=_qos(ro["qos_reliability"], 10),
                              qos_overrides=QOS_OVERRIDES,
                              on_image=lambda msg, stream=stream: self._on_image(stream, msg))
        if ro["stats_period"] > 0:
            self._timers.append(self.create_timer(float(ro["stats_period"]), self._log_stats))
        if ro["diagnostics_period"] > 0:
            self._timers.append(self.create_timer(float(ro["diagnostics_period"]), self._publish_diagnostics))
        self._workers = [threading.Thread(target=self._work, name=f"segmentation-worker-{i}", daemon=True)
                         for i in range(self.segmenter.workers)]
        for worker in self._workers:
            worker.start()
        s = self.settings
        if len(ro["cameras"]) > 1 and s.geometry.pose is not None:
            self.get_logger().warning(
                "camera_position and camera_rpy describe one camera but apply to all "
                f"{len(ro['cameras'])} cameras here: leave them empty to take each camera's pose from TF "
                "(its frames' frame_id), or run one node per camera (multi_camera.launch.py mode:=per_camera)")
        names = self.segmenter.classes.names
        topics = ", ".join(stream.topic for stream in self.streams)
        where = (self.resolve_topic_name("~") if not ro["cameras"] else
                 "each camera's namespace (" + ", ".join(
                     self.resolve_topic_name(output_prefix(t, self.get_name()) + "labels") for t in ro["cameras"])
                 + ")")
        self.get_logger().info(
            f"segmenting {topics} ({'CompressedImage' if compressed else 'Image'}, "
            f"{ro['qos_reliability']} depth {ro['qos_depth']}) with {self.segmenter.describe()}; "
            f"publishing under {where}; drivable "
            f"{[names[i] for i in s.drivable_ids]}, obstacle {[names[i] for i in s.obstacle_ids]}"
            + ("; flip TTA on" if s.flip_tta else ""))

    def close_inputs(self) -> None:
        """Stop taking frames: the worker finishes its frames, subscriptions and timers go."""
        self.stop()
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        with self._cond:
            for stream in self.streams:
                stream.close_input()

    def close_outputs(self) -> None:
        for pub in self._outputs:
            self.destroy_publisher(pub)
        self._outputs = []
        for stream in self.streams:
            stream.close_outputs()
        self.streams = []

    def unload(self) -> None:
        self.segmenter = None
        self.settings = None

    def namesakes(self) -> int:
        """Other nodes in the ROS graph with this node's name and namespace."""
        me = (self.get_name(), self.get_namespace())
        return sum(1 for node in self.get_node_names_and_namespaces() if tuple(node) == me) - 1

    def _refuse_a_namesake(self, wait: float) -> None:
        """Two nodes of one name would publish every output twice and share every parameter call."""
        deadline = time.monotonic() + wait
        while True:
            if self.namesakes() > 0:
                raise StartupError(
                    f"another node named {self.get_fully_qualified_name()} is already running: give this one its "
                    "own name (-r __node:=NAME; its outputs follow it, ~/labels) or namespace (-r __ns:=/NS)")
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for worker in self._workers:
            if worker is not threading.current_thread():
                worker.join(timeout=5.0)
        self._workers = []

    # -- input --------------------------------------------------------------------
    def _on_image(self, stream: CameraStream, msg) -> None:
        """Keep only each camera's newest frame; the worker takes them from here."""
        with self._cond:
            if stream.offer(msg):
                self._last_drop = time.monotonic()
            self._cond.notify_all()

    def _may_take(self) -> bool:
        """A frame is pending, and no worker is segmenting or the cameras outpace one (BEHIND_SECONDS)."""
        return any(s.pending is not None for s in self.streams) and (
            self._busy == 0 or time.monotonic() - self._last_drop < BEHIND_SECONDS)

    def _work(self) -> None:
        """One parallel worker: take the pending frames, segment them, publish them in their turn."""
        while not self._stop.is_set():
            with self._cond:
                while not self._may_take() and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                batch = [(stream, *stream.take()) for stream in self.streams if stream.pending is not None]
                ticket = self._in_order.ticket()
                self._busy += 1
            settings, segmented = self.settings, []  # one batch, one set of parameters
            try:
                segmented = self.segment(batch, settings)
            except Exception as exc:  # never let one batch end the worker
                self._failed(batch, exc)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
            with self._in_order.turn(ticket):  # every ticket takes its turn, or the later ones would wait forever
                try:
                    self.publish(segmented, settings)
                except Exception as exc:
                    self._failed(batch, exc)

    def _failed(self, batch: list, exc: Exception) -> None:
        if self._stop.is_set() or not self.context.ok():
            return
        for stream, _, _ in batch:
            self._skip(stream, "processing", f"processing failed: {type(exc).__name__}: {_first_line(exc)}")

    def _skip(self, stream: CameraStream, kind: str, reason: str) -> None:
        """Count a skipped frame; log it at most once per BAD_INPUT_LOG_PERIOD per kind of problem.

        A kind is the stage (decode, input, processing) and the message with its variable parts
        (quoted values, numbers) blanked: a text that changes every frame (a made-up encoding)
        cannot defeat the limit, and the table keeps at most BAD_INPUT_KINDS entries.
        """
        with stream.stats.lock:
            stream.stats.skipped += 1
        self._bad_input_log(f"{kind}: {_VARIABLE_PARTS.sub('#', reason)[:120]}",
                            f"skipped frame from {stream.topic}: {reason}")

    def segment(self, batch: list, s: Settings) -> list:
        """Decode and segment the newest frame of each camera as one batch (several workers at once);
        returns (frame, segmentation) pairs.
        """
        ready = []
        for stream, msg, t_received in batch:
            try:
                rgb = stream.decode(msg)
                self.segmenter.check_frame(rgb)
            except ImageFormatError as exc:
                self._skip(stream, "decode", str(exc))
                continue
            except self._InputError as exc:
                self._skip(stream, "input", str(exc))
                continue
            ready.append(_Frame(stream, msg.header, rgb, t_received, stream.wanted(s)))
        if not ready:
            return []
        segs = self.segmenter.segment_batch([f.rgb for f in ready], output_size=s.output_resolution,
                                            flip_tta=s.flip_tta,
                                            confidence=any(CameraStream.needs_confidence(f.wanted) for f in ready))
        return list(zip(ready, segs))

    def publish(self, segmented: list, s: Settings) -> None:
        """Each camera's outputs of one segmented batch (one worker at a time, in the frames' order)."""
        for f, seg in segmented:
            f.stream.publish(f.header, f.rgb, seg, s, f.wanted, f.t_received, batch=len(segmented))

    # -- reporting ------------------------------------------------------------------
    def _log_stats(self) -> None:
        for stream in self.streams:
            line = stream.log_line(NO_FRAMES_FIX)
            if line is not None:
                level, text = line
                if level == "warning":  # one call site per severity: rclpy refuses a site that changes it
                    self.get_logger().warning(text)
                else:
                    self.get_logger().info(text)

    def _publish_diagnostics(self) -> None:
        problem = None
        namesakes = self.namesakes()
        if namesakes > 0:
            problem = (DiagnosticStatus.ERROR, f"{namesakes} other node(s) named {self.get_fully_qualified_name()} "
                                               "in the graph")
            if not self._namesake_reported:
                self.get_logger().error(problem[1] + ": outputs and parameter calls are shared; stop one")
                self._namesake_reported = True
        elif self.segmenter.notes:
            problem = (DiagnosticStatus.WARN, "; ".join(self.segmenter.notes))
        name = f"{self.get_fully_qualified_name()}: semantic segmentation"
        extra = (("model", str(self.segmenter.model_path)),  # the provider is the hardware_id
                 ("workers", str(self.segmenter.workers)),
                 ("overlapping_runs_total", str(self.segmenter.overlapped)))
        statuses = [stream.diagnostic_status(name, self.segmenter.provider, extra, problem, NO_FRAMES_FIX)
                    for stream in self.streams]
        statuses += [stream.geometry.diagnostic_status(self.settings.geometry) for stream in self.streams]
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(msg)


class SegmentationNode(SegmentationMixin, Node):
    """segmentation_node: declares and validates parameters; `start()` loads the model and opens the topics."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        Node.__init__(self, node_name, **kwargs)
        self._declare_parameters()

    def start(self) -> None:
        self.load()
        self.open_outputs()
        self.open_inputs()


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                                   else ReliabilityPolicy.BEST_EFFORT),
                      durability=DurabilityPolicy.VOLATILE)


def publish_label_info(node: Node, classes: ClassTable, prefix: str = "~/"):
    """Latch the class table on segmentation/label_info (vision_msgs/LabelInfo, transient local), as
    Nav2's semantic segmentation layer reads it; only where vision_msgs is installed.
    """
    try:
        from vision_msgs.msg import LabelInfo, VisionClass
    except ImportError:
        return None
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(LabelInfo, prefix + "label_info", latched)
    msg = LabelInfo(class_map=[VisionClass(class_id=i, class_name=n) for i, n in enumerate(classes.names)])
    msg.header.stamp = node.get_clock().now().to_msg()
    pub.publish(msg)
    return pub


def _readable(value) -> str:
    """A parameter value as a user wrote it: [1, 2, 3], not array('q', [1, 2, 3])."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return repr(list(value))
    return repr(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(args=None) -> int:
    """Entry point of `segmentation_node`: returns 0 on a clean shutdown, 1 on a startup error."""
    return run_node(SegmentationNode, logger_name=NODE_NAME, expected=(StartupError,), args=args,
                    setup=lambda node: node.start(), teardown=lambda node: node.stop())


if __name__ == "__main__":
    sys.exit(main())
