# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Rosbag2 files (mcap or sqlite3) for evaluation: writing labelled frames, reading them back.

`make_bag` turns a labelled image folder into a bag with three topics that
share header stamps: the camera image (raw rgb8 `sensor_msgs/Image`, or a
JPEG/PNG `sensor_msgs/CompressedImage` on `<topic>/compressed`), its
`sensor_msgs/CameraInfo`, and the ground truth as a mono8 class-id image.

`Bag` opens a bag for reading with one-line errors for what goes wrong with
real files (missing, truncated, not a bag, topic absent); `paired_frames`
yields image/label pairs matched by header stamp and counts what it skips.

Pure Python (the `rosbags` library): no ROS installation needed.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from . import image_codec
from .learning.datasets import DatasetError

STORAGES = ("mcap", "sqlite3")
COMPRESSIONS = ("none", "jpeg", "png")
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
DEFAULT_INFO_TOPIC = "/camera/camera_info"
DEFAULT_LABEL_TOPIC = "/camera/ground_truth"
DEFAULT_FRAME_ID = "camera"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE, COMPRESSED)
#: custom_data keys written into metadata.yaml by make_bag
META_LABEL_CLASSES = "seg_perception.label_classes"
META_SOURCE = "seg_perception.source"
#: bags up to this size get a SHA-256 in reports; bigger ones only their size
SHA_LIMIT_BYTES = 1 << 30
#: an image waits this long (bag time) for its label, and vice versa, before counting as unmatched
PAIR_WINDOW_NS = 10 * 10**9


class BagError(DatasetError):
    """A bag that cannot be used as asked: missing, corrupt, wrong topic, unsupported data."""


class FrameError(BagError):
    """One frame that cannot be decoded (counted and skipped, not fatal)."""


def typestore():
    """The rosbags type store for ROS 2 messages (Kilted; sensor_msgs are the same in every release)."""
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(getattr(Stores, "ROS2_KILTED", Stores.LATEST))


# -- writing ----------------------------------------------------------------

def _header(ts, stamp_ns: int, frame_id: str):
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)), frame_id=frame_id)


def image_msg(ts, rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str = "rgb8"):
    """A rosbags `sensor_msgs/Image` of an HxWx3 (rgb8/bgr8) or HxW (mono8) uint8 array."""
    arr = np.ascontiguousarray(rgb)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return ts.types[IMAGE](header=_header(ts, stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                           is_bigendian=0, step=w * channels, data=arr.reshape(-1))


def compressed_msg(ts, rgb: np.ndarray, stamp_ns: int, frame_id: str, fmt: str, jpeg_quality: int = 95):
    """A `sensor_msgs/CompressedImage` the way image_transport's compressed plugin writes it."""
    try:
        data = image_codec.encode_compressed(rgb, fmt, quality=jpeg_quality)
    except image_codec.ImageFormatError as exc:
        raise BagError(str(exc)) from None
    return ts.types[COMPRESSED](header=_header(ts, stamp_ns, frame_id),
                                format=f"rgb8; {fmt} compressed bgr8", data=np.frombuffer(data, np.uint8))


def camera_info_msg(ts, width: int, height: int, stamp_ns: int, frame_id: str, camera=None):
    """CameraInfo with the image size and the intrinsics of `camera` (a geometry.CameraModel, scaled to
    the image); without one K, P and D stay zero (K[0] == 0 is how ROS marks an uncalibrated camera).
    """
    zeros = lambda n: np.zeros(n, np.float64)  # noqa: E731
    RegionOfInterest = ts.types["sensor_msgs/msg/RegionOfInterest"]
    model, d, k, r, p = "", zeros(0), zeros(9), zeros(9), zeros(12)
    if camera is not None:
        camera = camera.scaled(width, height)
        model, d, k, r, p = (camera.distortion_model, np.asarray(camera.D, np.float64),
                             camera.K.reshape(-1).astype(np.float64), np.eye(3).reshape(-1),
                             camera.P.reshape(-1).astype(np.float64))
    return ts.types[CAMERA_INFO](
        header=_header(ts, stamp_ns, frame_id), height=height, width=width, distortion_model=model,
        d=d, k=k, r=r, p=p, binning_x=0, binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def compressed_topic(topic: str) -> str:
    return topic.rstrip("/") + "/compressed"


def make_bag(dataset, out: str | Path, *, storage: str = "mcap", compression: str = "none",
             fps: float = 10.0, frame_id: str = DEFAULT_FRAME_ID, image_topic: str = DEFAULT_IMAGE_TOPIC,
             info_topic: str = DEFAULT_INFO_TOPIC, label_topic: str = DEFAULT_LABEL_TOPIC,
             max_frames: int | None = None, start_time: float | None = None, jpeg_quality: int = 95,
             progress: bool = True, camera=None) -> dict:
    """Write the frames of a `LabelledFolder` (in its file-name order) into a new bag.

    `camera` (a geometry.CameraModel) gives the CameraInfo its intrinsics; without it they are zero.

    Frame i gets the stamp start_time + i / fps (start_time: seconds since the epoch, default now)
    on all three topics; the bag's record time equals the header stamp. Returns a summary dict.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    if storage not in STORAGES:
        raise BagError(f"storage '{storage}' unknown; choose one of {list(STORAGES)}")
    if compression not in COMPRESSIONS:
        raise BagError(f"compression '{compression}' unknown; choose one of {list(COMPRESSIONS)}")
    if not fps > 0:
        raise BagError(f"fps must be positive, got {fps}")
    if not 1 <= jpeg_quality <= 100:
        raise BagError(f"JPEG quality must be 1..100, got {jpeg_quality}")
    out = Path(out)
    if out.exists():
        raise BagError(f"output {out} already exists; remove it or choose another path")
    n = len(dataset) if max_frames is None else min(len(dataset), max(0, int(max_frames)))
    if n == 0:
        raise BagError("no frames to write")
    start_ns = int(round((time.time() if start_time is None else float(start_time)) * 1e9))
    ts = typestore()
    cam_topic = compressed_topic(image_topic) if compression != "none" else image_topic
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(out, version=9, storage_plugin=plugin)
    size = None
    try:
        writer.open()
        img_con = writer.add_connection(cam_topic, COMPRESSED if compression != "none" else IMAGE, typestore=ts)
        info_con = writer.add_connection(info_topic, CAMERA_INFO, typestore=ts)
        lab_con = writer.add_connection(label_topic, IMAGE, typestore=ts)
        classes = dataset.classes
        writer.set_custom_data(META_LABEL_CLASSES, json.dumps(
            {"names": list(classes.names), "ignore_index": int(classes.ignore_index)}))
        writer.set_custom_data(META_SOURCE, str(getattr(dataset, "description", "")))
        for i in tqdm(range(n), desc="make-bag", file=sys.stderr, disable=not progress, leave=False):
            rgb, label = dataset.read(i)
            if size is None:
                size = (rgb.shape[1], rgb.shape[0])
            stamp = start_ns + int(round(i * 1e9 / fps))
            if compression == "none":
                msg, mtype = image_msg(ts, rgb, stamp, frame_id), IMAGE
            else:
                msg, mtype = compressed_msg(ts, rgb, stamp, frame_id, compression, jpeg_quality), COMPRESSED
            writer.write(img_con, stamp, bytes(ts.serialize_cdr(msg, mtype)))
            info = camera_info_msg(ts, rgb.shape[1], rgb.shape[0], stamp, frame_id, camera)
            writer.write(info_con, stamp, bytes(ts.serialize_cdr(info, CAMERA_INFO)))
            writer.write(lab_con, stamp, bytes(ts.serialize_cdr(image_msg(ts, label, stamp, frame_id, "mono8"),
                                                                 IMAGE)))
        writer.close()
    except BaseException:
        try:
            writer.abort()
        except Exception:
            pass
        shutil.rmtree(out, ignore_errors=True)  # it did not exist before: no half-written bag stays behind
        raise
    return {"path": str(out), "storage": storage, "frames": n, "image_topic": cam_topic,
            "info_topic": info_topic, "label_topic": label_topic, "start_ns": start_ns, "fps": fps,
            "compression": compression, "size": size}


# -- reading ----------------------------------------------------------------

@dataclass
class TopicSummary:
    name: str
    msgtype: str
    count: int


def _reader_error(path: Path, exc: BaseException) -> BagError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BagError(f"bag {path} is corrupt or truncated ({text})")


class Bag:
    """A rosbag2 directory (or a bare .mcap / .db3 file) opened for reading."""

    def __init__(self, path: str | Path):
        from rosbags.rosbag2 import Reader
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagError(f"{self.path} is not a rosbag2 folder (no metadata.yaml)")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises ReaderError, but sqlite/yaml/struct errors leak too
            raise _reader_error(self.path, exc) from None
        self.topics = {name: TopicSummary(name, info.msgtype, int(info.msgcount))
                       for name, info in self._reader.topics.items()}
        self._metadata = self._read_metadata()
        self.storage = self._storage()
        self.start_ns = int(self._reader.start_time) if self._reader.message_count else 0
        self.duration_ns = int(self._reader.duration) if self._reader.message_count else 0

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._reader.close()
        except Exception:
            pass

    def recorded_image_topic(self, topic: str) -> str:
        """The topic, or its `/compressed` twin when only the twin is recorded (one camera, two transports)."""
        if topic not in self.topics and compressed_topic(topic) in self.topics:
            return compressed_topic(topic)
        return topic

    def _read_metadata(self) -> dict:
        meta = self.path / "metadata.yaml" if self.path.is_dir() else None
        if meta is None or not meta.is_file():
            return {}
        import yaml
        try:
            return (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {}) or {}
        except Exception:
            return {}

    def _storage(self) -> str:
        ident = self._metadata.get("storage_identifier")
        if ident:
            return str(ident)
        return {".mcap": "mcap", ".db3": "sqlite3"}.get(self.path.suffix.lower(), "unknown")

    @property
    def custom_data(self) -> dict:
        return dict(self._metadata.get("custom_data") or {})

    def label_classes(self) -> dict | None:
        """The class names of the label topic, when make_bag recorded them."""
        raw = self.custom_data.get(META_LABEL_CLASSES)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def data_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = [self.path / f for f in self._metadata.get("relative_file_paths", [])]
        return [f for f in files if f.is_file()]

    def identity(self, *, sha: bool = True) -> dict:
        """Path, storage, size and (for bags up to 1 GiB) SHA-256 of the data files, for reports."""
        files = self.data_files()
        size = sum(f.stat().st_size for f in files)
        digest = None
        if sha and size <= SHA_LIMIT_BYTES:
            h = hashlib.sha256()
            for f in files:
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            digest = h.hexdigest()
        return {"path": str(self.path), "storage": self.storage, "size_bytes": size, "sha256": digest,
                "messages": int(self._reader.message_count), "duration_s": self.duration_ns / 1e9,
                "topics": {t.name: {"type": t.msgtype, "count": t.count} for t in self.topics.values()}}

    def describe_topics(self) -> str:
        if not self.topics:
            return "(the bag has no topics)"
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in sorted(self.topics.values(),
                                                                                   key=lambda t: t.name))

    def require(self, topic: str, types=None, *, role: str = "topic") -> TopicSummary:
        """The topic's summary; a missing topic or wrong type is a BagError listing what the bag has."""
        info = self.topics.get(topic)
        if info is None:
            raise BagError(f"{role} {topic} is not in bag {self.path}; it has: {self.describe_topics()}")
        if types and info.msgtype not in types:
            raise BagError(f"{role} {topic} in bag {self.path} is {info.msgtype}; expected "
                           f"{' or '.join(types)}")
        return info

    def messages(self, topics=None) -> Iterator[tuple[str, str, int, bytes]]:
        """(topic, msgtype, record time ns, raw CDR) in record-time order; read errors become BagError."""
        conns = [c for c in self._reader.connections if topics is None or c.topic in topics]
        it = self._reader.messages(connections=conns)
        while True:
            try:
                con, t, raw = next(it)
            except StopIteration:
                return
            except BagError:
                raise
            except Exception as exc:
                raise _reader_error(self.path, exc) from None
            yield con.topic, con.msgtype, int(t), bytes(raw)


# -- decoding ---------------------------------------------------------------

def cdr_stamp_ns(raw: bytes) -> int:
    """Header stamp of a serialised message that starts with std_msgs/Header (Image, CameraInfo, ...)."""
    if len(raw) < 12:
        raise BagError("message too short to hold a header")
    endian = "<" if raw[1] == 1 else ">"
    sec, nsec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 10**9 + nsec


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _rows(msg, channels: int, dtype=np.uint8) -> np.ndarray:
    """The pixel array of a raw Image, honouring step (row padding) and byte order."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    data = np.asarray(msg.data, np.uint8)
    row = w * channels * itemsize
    if h == 0 or w == 0:
        raise FrameError(f"image is empty ({w}x{h})")
    if step < row or data.size < step * (h - 1) + row:
        raise FrameError(f"image data holds {data.size} bytes, too few for {w}x{h} {msg.encoding} (step {step})")
    if data.size < step * h:
        data = np.concatenate([data, np.zeros(step * h - data.size, np.uint8)])
    arr = data[: step * h].reshape(h, step)[:, :row].copy()
    out = arr.view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")).reshape(h, w, channels)
    return out.astype(dtype) if itemsize > 1 else out


def decode_image(msg, msgtype: str) -> np.ndarray:
    """HxWx3 uint8 RGB of a rosbags Image or CompressedImage.

    An encoding this code cannot read raises BagError (the whole topic is unusable); a single
    malformed frame raises FrameError (counted and skipped by the callers).
    """
    if msgtype == COMPRESSED:
        try:
            image_codec.compressed_kind(str(msg.format))
        except image_codec.ImageFormatError as exc:
            raise BagError(f"image topic: {exc}") from None
        try:
            return image_codec.decode_compressed(str(msg.format), np.asarray(msg.data, np.uint8))
        except image_codec.ImageFormatError as exc:
            raise FrameError(f"compressed image: {exc}") from None
    enc = str(msg.encoding)
    if enc not in image_codec.SUPPORTED_ENCODINGS:
        raise BagError(f"image encoding '{enc}' is not supported; supported: "
                       f"{', '.join(image_codec.SUPPORTED_ENCODINGS)} and CompressedImage (jpeg/png)")
    try:
        rgb = image_codec.decode_raw(enc, int(msg.width), int(msg.height), int(msg.step), np.asarray(msg.data),
                                     is_bigendian=bool(msg.is_bigendian))
    except image_codec.ImageFormatError as exc:
        raise FrameError(f"image: {exc}") from None
    return np.ascontiguousarray(rgb)


def decode_label(msg, msgtype: str) -> np.ndarray:
    """HxW uint8 class ids of a label Image (mono8/8UC1, or 16-bit with ids <= 255) or a PNG
    CompressedImage. Lossy (JPEG) labels are refused: their ids would be wrong at edges.
    """
    if msgtype == COMPRESSED:
        fmt = str(msg.format).lower()
        if "jpeg" in fmt or "jpg" in fmt:
            raise BagError(f"label topic is JPEG ('{msg.format}'); lossy labels cannot be scored")
        data = np.asarray(msg.data, np.uint8)
        lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if lab is None:
            raise FrameError(f"compressed label ('{msg.format}') does not decode")
        if lab.ndim == 3:
            raise BagError(f"label images have {lab.shape[2]} channels; expected single-channel class ids")
        return _ids_u8(lab)
    enc = str(msg.encoding).lower()
    if enc in ("mono8", "8uc1"):
        return _rows(msg, 1)[:, :, 0]
    if enc in ("mono16", "16uc1"):
        return _ids_u8(_rows(msg, 1, np.uint16)[:, :, 0])
    raise BagError(f"label encoding '{msg.encoding}' is not supported; expected mono8/8UC1 class ids "
                   "(or mono16/16UC1 with ids up to 255)")


def _ids_u8(lab: np.ndarray) -> np.ndarray:
    if lab.dtype != np.uint8:
        if lab.size and int(lab.max()) > 255:
            raise BagError(f"label image holds ids up to {int(lab.max())}; mono8 class ids stop at 255")
        lab = lab.astype(np.uint8)
    return lab


# -- pairing ----------------------------------------------------------------

@dataclass
class PairStats:
    """What pairing images with labels by header stamp found."""

    images: int = 0
    labels: int = 0
    pairs: int = 0
    images_without_label: int = 0
    labels_without_image: int = 0
    size_mismatch: int = 0
    undecodable: int = 0
    duplicate_stamps: int = 0
    examples: list = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    @property
    def skipped(self) -> int:
        return (self.images_without_label + self.labels_without_image + self.size_mismatch + self.undecodable
                + self.duplicate_stamps)

    def to_dict(self) -> dict:
        return {"images": self.images, "labels": self.labels, "pairs": self.pairs,
                "images_without_label": self.images_without_label,
                "labels_without_image": self.labels_without_image, "size_mismatch": self.size_mismatch,
                "undecodable": self.undecodable, "duplicate_stamps": self.duplicate_stamps,
                "examples": list(self.examples)}

    def summary(self) -> str:
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in self.to_dict().items()
                 if k not in ("images", "labels", "pairs", "examples") and v]
        return ", ".join(parts) if parts else "none"


@dataclass
class Frame:
    index: int
    stamp_ns: int
    rgb: np.ndarray
    label: np.ndarray

    @property
    def name(self) -> str:
        return stamp_name(self.stamp_ns)


def stamp_name(stamp: int) -> str:
    return f"{stamp // 10**9}.{stamp % 10**9:09d}"


def check_frame_topics(bag: Bag, image_topic: str, label_topic: str) -> tuple[TopicSummary, TopicSummary]:
    img = bag.require(image_topic, IMAGE_TYPES, role="image topic")
    lab = bag.require(label_topic, IMAGE_TYPES, role="label topic")
    if image_topic == label_topic:
        raise BagError("image and label topics are the same topic")
    return img, lab


def read_labels(bag: Bag, label_topic: str, stats: PairStats | None = None) -> dict[int, np.ndarray]:
    """All label images of a topic by header stamp (for live evaluation, where outputs arrive later)."""
    ts = typestore()
    out: dict[int, np.ndarray] = {}
    for _, mtype, _, raw in bag.messages([label_topic]):
        try:
            msg = ts.deserialize_cdr(raw, mtype)
        except Exception as exc:
            raise BagError(f"label message on {label_topic} does not deserialise as {mtype} ({exc})") from None
        st = stamp_ns(msg.header)
        if stats is not None:
            stats.labels += 1
        try:
            lab = decode_label(msg, mtype)
        except FrameError as exc:
            if stats is not None:
                stats.undecodable += 1
                stats.note(f"label {stamp_name(st)}: {exc}")
            continue
        if st in out and stats is not None:
            stats.duplicate_stamps += 1
            stats.note(f"label {stamp_name(st)}: stamp appears twice; the first is kept")
            continue
        out[st] = lab
    return out


def paired_frames(bag: Bag, image_topic: str, label_topic: str, stats: PairStats,
                  window_ns: int = PAIR_WINDOW_NS) -> Iterator[Frame]:
    """Image/label pairs with equal header stamps, in record order.

    Messages are decoded only once paired; a message whose partner has not come within
    `window_ns` of record time is counted unmatched. Size mismatches and undecodable
    frames are counted skips; unsupported encodings raise BagError.
    """
    check_frame_topics(bag, image_topic, label_topic)
    ts = typestore()
    pending = {image_topic: OrderedDict(), label_topic: OrderedDict()}  # stamp -> (record t, msgtype, raw)
    seen = {image_topic: set(), label_topic: set()}
    index = 0

    def expire(now: int) -> None:
        for topic, queue in pending.items():
            while queue:
                st, (t, _, _) = next(iter(queue.items()))
                if now - t <= window_ns:
                    break
                queue.popitem(last=False)
                _count_unmatched(topic, st)

    def _count_unmatched(topic: str, st: int) -> None:
        if topic == image_topic:
            stats.images_without_label += 1
            stats.note(f"image {stamp_name(st)}: no label with this stamp")
        else:
            stats.labels_without_image += 1
            stats.note(f"label {stamp_name(st)}: no image with this stamp")

    for topic, mtype, t, raw in bag.messages([image_topic, label_topic]):
        is_image = topic == image_topic
        if is_image:
            stats.images += 1
        else:
            stats.labels += 1
        try:
            st = cdr_stamp_ns(raw)
        except BagError:
            stats.undecodable += 1
            stats.note(f"{topic} message at {stamp_name(t)}: too short to hold a header")
            continue
        if st in seen[topic]:
            stats.duplicate_stamps += 1
            stats.note(f"{topic} {stamp_name(st)}: stamp appears twice; the first is kept")
            continue
        seen[topic].add(st)
        other = label_topic if is_image else image_topic
        partner = pending[other].pop(st, None)
        if partner is None:
            pending[topic][st] = (t, mtype, raw)
            expire(t)
            continue
        img_raw = (mtype, raw) if is_image else partner[1:]
        lab_raw = partner[1:] if is_image else (mtype, raw)
        try:
            img_msg = ts.deserialize_cdr(img_raw[1], img_raw[0])
            lab_msg = ts.deserialize_cdr(lab_raw[1], lab_raw[0])
        except Exception as exc:
            stats.undecodable += 1
            stats.note(f"{stamp_name(st)}: message does not deserialise ({str(exc)[:80]})")
            continue
        try:
            rgb = decode_image(img_msg, img_raw[0])
            label = decode_label(lab_msg, lab_raw[0])
        except FrameError as exc:
            stats.undecodable += 1
            stats.note(f"{stamp_name(st)}: {exc}")
            continue
        if label.shape != rgb.shape[:2]:
            stats.size_mismatch += 1
            stats.note(f"{stamp_name(st)}: label is {label.shape[1]}x{label.shape[0]}, image is "
                       f"{rgb.shape[1]}x{rgb.shape[0]}")
            continue
        stats.pairs += 1
        yield Frame(index, st, rgb, label)
        index += 1
    for topic, queue in pending.items():
        for st in queue:
            _count_unmatched(topic, st)
        queue.clear()
