# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Frames worth labelling, chosen from recorded drives (`seg-perception harvest`).

Re-training on new data starts from recordings, and labelling time is the cost: the frames the model
is least sure about teach it the most. Every frame of a bag's camera topic is segmented as it is and
mirrored, and scored by three signs of uncertainty: a low mean top-class confidence, a high entropy,
and disagreement between the frame's labels and the un-mirrored labels of its mirror image. The most
uncertain frames are picked, spread over the drive's time line and without near-duplicates, and
written in the generic dataset layout with the model's class table and its predictions as
pre-labels, ready for a labelling tool and then `train --init-from`.

Two passes over the bags keep memory flat on long drives: the first scores every frame and keeps
only its figures and a 32x24 thumbnail; the second decodes the picked frames again and writes them.
ROS-free: bags are read with `bags` (rosbags), inference runs through `Segmenter`.
"""
from __future__ import annotations

import csv
import math
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml

from ..bags import (
    IMAGE_TYPES,
    Bag,
    BagError,
    FrameError,
    cdr_stamp_ns,
    compressed_topic,
    decode_image,
    stamp_name,
    stamp_ns,
    typestore,
)
from .datasets import DatasetError

RANK_BY = ("combined", "confidence", "entropy", "flip")
#: uncertainty measure -> how the pick reason names it, and which end of it is uncertain
MEASURE_WORDS = {"confidence": ("low mean confidence", "lowest"), "entropy": ("high entropy", "highest"),
                 "flip": ("flip disagreement", "highest")}
#: a measure is named in the pick reason when at most this share of the scored frames is as uncertain
STANDOUT_SHARE = 0.25
THUMBNAIL_SIZE = (32, 24)
CSV_FIELDS = ("name", "bag", "topic", "stamp", "mean_confidence", "entropy", "flip_disagreement", "score", "rank",
              "reason")


class HarvestError(DatasetError):
    """Harvest options or an output folder that cannot be used."""


@dataclass(frozen=True)
class HarvestOptions:
    """How many frames to pick and how: see `select`."""

    count: int = 50
    bins: int | None = None        # time bins with one pick each before the rest; None: `count` bins, 1: no spreading
    min_gap_s: float = 1.0         # picks of one bag at least this far apart (header stamps)
    dedup_threshold: float = 3.0   # mean absolute grey-level difference of thumbnails below which frames are duplicates
    rank_by: str = "combined"
    stride: int = 1                # score every stride-th frame of the topic (long drives)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise HarvestError(f"--count must be at least 1, got {self.count}")
        if self.bins is not None and self.bins < 1:
            raise HarvestError(f"--bins must be at least 1, got {self.bins}")
        if not self.min_gap_s >= 0:
            raise HarvestError(f"--min-gap must be 0 or more seconds, got {self.min_gap_s}")
        if not self.dedup_threshold >= 0:
            raise HarvestError(f"--dedup-threshold must be 0 or more, got {self.dedup_threshold}")
        if self.rank_by not in RANK_BY:
            raise HarvestError(f"rank_by '{self.rank_by}' unknown; choose one of {list(RANK_BY)}")
        if self.stride < 1:
            raise HarvestError(f"--stride must be at least 1, got {self.stride}")

    @property
    def time_bins(self) -> int:
        return self.bins or self.count


@dataclass(frozen=True)
class Source:
    """One bag and the camera topic harvested from it."""

    path: Path
    topic: str

    @property
    def stem(self) -> str:
        """The bag's name, which prefixes its frames' names so drives stay apart."""
        return self.path.name if self.path.is_dir() else self.path.stem


@dataclass
class ScoredFrame:
    """One camera frame's uncertainty figures; `rank_frames` and `select` fill in the rest."""

    source: Source
    stamp_ns: int
    mean_confidence: float
    entropy: float
    flip_disagreement: float
    thumbnail: np.ndarray
    time_s: float = 0.0      # position on the harvest's time line: the bags end to end
    score: float = 0.0       # higher = more uncertain
    rank: int = 0            # 1 = most uncertain of all scored frames
    top_share: dict = field(default_factory=dict)  # measure -> share of scored frames at least as uncertain
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.source.stem}_{self.stamp_ns}"

    def uncertainty(self, measure: str) -> float:
        """The measure oriented so that higher is more uncertain."""
        return {"confidence": 1.0 - self.mean_confidence, "entropy": self.entropy,
                "flip": self.flip_disagreement}[measure]


# -- inputs -----------------------------------------------------------------

def camera_topic(bag: Bag, topic: str | None = None) -> str:
    """The topic asked for, or else the bag's only camera. A raw topic and its `/compressed` twin are
    one camera: read from the raw topic (lossless) when the bag has it, else from the twin.
    """
    if topic:
        topic = bag.recorded_image_topic(topic)
        bag.require(topic, IMAGE_TYPES, role="image topic")
        return topic
    images = [t.name for t in bag.topics.values() if t.msgtype in IMAGE_TYPES]
    cameras = sorted(t for t in images if not any(compressed_topic(other) == t for other in images))
    if not cameras:
        raise BagError(f"bag {bag.path} has no image topic (sensor_msgs/Image or CompressedImage); it has: "
                       f"{bag.describe_topics()}")
    if len(cameras) > 1:
        raise BagError(f"bag {bag.path} has several image topics ({', '.join(cameras)}); choose one with --topic")
    return cameras[0]


def open_sources(paths, topic: str | None = None) -> list[Source]:
    """Check every bag and its camera topic before any inference starts."""
    sources = []
    for path in paths:
        with Bag(path) as bag:
            sources.append(Source(Path(path), camera_topic(bag, topic)))
    stems = Counter(s.stem for s in sources)
    clash = [stem for stem, n in stems.items() if n > 1]
    if clash:
        raise HarvestError(f"several bags are named {clash[0]}; their frames' names (<bag>_<stamp>) would clash")
    return sources


def check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HarvestError(f"output {out} already exists and is not an empty folder; remove it or choose another path")


def camera_frames(bag: Bag, topic: str, skipped: Counter, *, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp ns, RGB) of every stride-th message on a camera topic, in record order.

    A frame that does not decode or repeats a stamp is counted in `skipped` and left out; an
    encoding that cannot be read at all raises BagError.
    """
    ts = typestore()
    seen: set[int] = set()
    for i, (_, msgtype, _, raw) in enumerate(bag.messages([topic])):
        if i % stride:
            continue
        try:
            msg = ts.deserialize_cdr(raw, msgtype)
            rgb = decode_image(msg, msgtype)
        except FrameError:
            skipped["undecodable"] += 1
            continue
        except BagError:
            raise
        except Exception:  # a message that does not deserialise as its type
            skipped["undecodable"] += 1
            continue
        stamp = stamp_ns(msg.header)
        if stamp in seen:
            skipped["repeated stamp"] += 1
            continue
        seen.add(stamp)
        yield stamp, rgb


def frames_at(bag: Bag, topic: str, stamps: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The frames with these header stamps (the first message of each), decoding nothing else."""
    ts = typestore()
    left = set(stamps)
    for _, msgtype, _, raw in bag.messages([topic]):
        if not left:
            return
        try:
            stamp = cdr_stamp_ns(raw)
        except BagError:
            continue
        if stamp in left:
            left.discard(stamp)
            yield stamp, decode_image(ts.deserialize_cdr(raw, msgtype), msgtype)


# -- scoring ----------------------------------------------------------------

def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """A 32x24 grey image, for telling near-duplicate frames (a car standing still) apart."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def frame_uncertainty(segmenter, rgb: np.ndarray) -> tuple[float, float, float]:
    """Mean top-class confidence, mean normalised entropy and flip disagreement of one frame.

    Both passes run without flip TTA (it would average the disagreement away), at the network's
    resolution. Confidence is the node's (the top probability as 8 bits); entropy is each pixel's
    over log(classes); flip disagreement is the share of pixels whose label differs between the
    frame and the un-mirrored labels of its mirror image.
    """
    probs = segmenter.probabilities(rgb, flip_tta=False)
    confidence = np.clip(probs.max(0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    entropy = -(probs * np.log(np.maximum(probs, 1e-12))).sum(0) / np.log(max(probs.shape[0], 2))
    mirrored = segmenter.segment(cv2.flip(rgb, 1), output_size="network", flip_tta=False)
    return (float(confidence.mean()) / 255.0, float(entropy.mean()),
            float(np.mean(probs.argmax(0) != cv2.flip(mirrored.labels, 1))))


def score_frames(sources: list[Source], segmenter, options: HarvestOptions, skipped: Counter, *,
                 progress: bool = True) -> list[ScoredFrame]:
    """Every (stride-th) frame of every bag, scored, with its place on the joint time line."""
    from tqdm import tqdm
    frames: list[ScoredFrame] = []
    offset = 0.0
    for src in sources:
        mine = []
        with Bag(src.path) as bag:
            total = math.ceil(bag.topics[src.topic].count / options.stride)
            for stamp, rgb in tqdm(camera_frames(bag, src.topic, skipped, stride=options.stride), total=total,
                                   desc=f"harvest: scoring {src.stem}", file=sys.stderr, disable=not progress,
                                   leave=False):
                mine.append(ScoredFrame(src, stamp, *frame_uncertainty(segmenter, rgb), thumbnail(rgb)))
        if mine:
            first = min(f.stamp_ns for f in mine)
            for f in mine:
                f.time_s = offset + (f.stamp_ns - first) / 1e9
            offset = max(f.time_s for f in mine)
        frames += mine
    return frames


def rank_frames(frames: list[ScoredFrame], rank_by: str = "combined") -> list[ScoredFrame]:
    """Set each frame's score, rank and top shares; returns the frames most uncertain first.

    'combined' scores a frame by the mean of its percentile ranks in the three measures (the share
    of frames at most as uncertain in each), so measures of different scales weigh the same; the
    other choices score by that one measure. Ties keep time order.
    """
    n = len(frames)
    percentile = {}
    for measure in MEASURE_WORDS:
        values = np.array([f.uncertainty(measure) for f in frames])
        ordered = np.sort(values)
        at_most = np.searchsorted(ordered, values, side="right") / n
        at_least = (n - np.searchsorted(ordered, values, side="left")) / n
        percentile[measure] = at_most
        for f, share in zip(frames, at_least):
            f.top_share[measure] = float(share)
    if rank_by == "combined":
        scores = np.mean([percentile[m] for m in MEASURE_WORDS], axis=0)
    else:
        scores = np.array([f.uncertainty(rank_by) for f in frames])
    order = np.argsort(-scores, kind="stable")
    for rank, i in enumerate(order, 1):
        frames[i].score, frames[i].rank = float(scores[i]), rank
    return [frames[i] for i in order]


# -- choosing ---------------------------------------------------------------

def _standouts(frame: ScoredFrame) -> str:
    """The measures in which the frame is among the most uncertain quarter, with its share."""
    parts = [f"{words} ({end} {max(1, round(100 * frame.top_share[m]))}%)"
             for m, (words, end) in MEASURE_WORDS.items() if frame.top_share[m] <= STANDOUT_SHARE]
    return "; " + ", ".join(parts) if parts else ""


def select(ranked: list[ScoredFrame], options: HarvestOptions) -> tuple[list[ScoredFrame], Counter]:
    """Up to `count` frames, most uncertain first, spread over time and without near-duplicates.

    The joint time line is cut into `time_bins` equal bins; the first round takes the most uncertain
    frame of each bin, the second fills the remaining places by rank regardless of bin. A frame is
    passed over when it lies within `min_gap_s` of a pick from the same bag, or when its thumbnail
    differs from a pick's by less than `dedup_threshold` grey levels (mean absolute difference).
    Returns the picks in rank order and the counts of frames passed over, by reason.
    """
    n, bins = len(ranked), options.time_bins
    start = min(f.time_s for f in ranked)
    span = max(f.time_s for f in ranked) - start
    gap_ns = options.min_gap_s * 1e9

    def time_bin(f: ScoredFrame) -> int:
        return min(int((f.time_s - start) / span * bins), bins - 1) if span > 0 else 0

    picked: list[ScoredFrame] = []
    used_bins: set[int] = set()
    out_of_play: set[int] = set()  # picked or passed over; picks only grow, so a pass-over is final
    passed = Counter()
    for spreading in ((True, False) if bins > 1 else (False,)):
        for i, f in enumerate(ranked):
            if len(picked) == options.count:
                break
            b = time_bin(f)
            if i in out_of_play or (spreading and b in used_bins):
                continue
            out_of_play.add(i)
            if any(p.source == f.source and abs(p.stamp_ns - f.stamp_ns) < gap_ns for p in picked):
                passed["within --min-gap of a pick"] += 1
                continue
            if any(float(np.abs(p.thumbnail - f.thumbnail).mean()) < options.dedup_threshold for p in picked):
                passed["near-duplicate of a pick"] += 1
                continue
            where = ("" if bins == 1 else f"; most uncertain in time bin {b + 1}/{bins}" if spreading
                     else f"; time bin {b + 1}/{bins} already had a pick")
            f.reason = f"rank {f.rank}/{n} by {options.rank_by} uncertainty{where}{_standouts(f)}"
            picked.append(f)
            used_bins.add(b)
    return sorted(picked, key=lambda f: f.rank), passed


# -- writing ----------------------------------------------------------------

def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise HarvestError(f"cannot write {path}")


def write_harvest(picked: list[ScoredFrame], out: Path, segmenter, *, progress: bool = True) -> None:
    """images/, labels/ (the model's class ids, mono8, the image's size), classes.yaml and harvest.csv.

    Written into OUT.partial and renamed at the end, so a failed run leaves no half-filled output.
    """
    from tqdm import tqdm
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "images").mkdir(parents=True)
    (partial / "labels").mkdir()
    try:
        with tqdm(total=len(picked), desc="harvest: writing", file=sys.stderr, disable=not progress,
                  leave=False) as bar:
            for src in dict.fromkeys(f.source for f in picked):
                wanted = {f.stamp_ns: f for f in picked if f.source == src}
                with Bag(src.path) as bag:
                    for stamp, rgb in frames_at(bag, src.topic, set(wanted)):
                        name = wanted[stamp].name
                        _imwrite(partial / "images" / f"{name}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                        _imwrite(partial / "labels" / f"{name}.png", segmenter.segment(rgb).labels)
                        bar.update()
        with open(partial / "classes.yaml", "w") as fh:
            fh.write(f"# class table of {segmenter.model_path.name}, written by seg-perception harvest\n")
            yaml.safe_dump(segmenter.classes.to_dict(), fh, sort_keys=False, default_flow_style=None)
        with open(partial / "harvest.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_FIELDS)
            for f in picked:
                writer.writerow([f.name, f.source.path, f.source.topic, stamp_name(f.stamp_ns),
                                 f"{f.mean_confidence:.6f}", f"{f.entropy:.6f}", f"{f.flip_disagreement:.6f}",
                                 f"{f.score:.6f}", f.rank, f.reason])
        if out.exists():
            out.rmdir()  # check_output allowed only an empty folder
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def harvest(sources: list[Source], out: str | Path, segmenter, options: HarvestOptions = HarvestOptions(), *,
            progress: bool = True) -> dict:
    """Score the sources' frames, pick the most uncertain ones and write them to `out`.

    Returns the picks (rank order) and the counts of frames scored, passed over and skipped.
    """
    out = Path(out)
    check_output(out)
    skipped = Counter()
    frames = score_frames(sources, segmenter, options, skipped, progress=progress)
    if not frames:
        where = ", ".join(f"{s.topic} of {s.path}" for s in sources)
        raise BagError(f"no decodable frame on {where}" + (f" ({dict(skipped)})" if skipped else ""))
    picked, passed = select(rank_frames(frames, options.rank_by), options)
    write_harvest(picked, out, segmenter, progress=progress)
    return {"out": out, "scored": len(frames), "picked": picked, "passed_over": passed, "skipped": skipped}
