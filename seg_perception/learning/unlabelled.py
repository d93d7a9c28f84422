# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Camera frames without labels: folders of images and rosbag2 camera topics.

Self-training (`train` with `unlabelled` sources) and label-free adaptation (`adapt`) learn from
what a team records in plenty and never labels. A source is a folder (searched recursively; each
sub-folder is one drive, as IDD and harvested frames are laid out) or a rosbag2 bag (a folder with
metadata.yaml, or a bare .mcap / .db3 file) with an Image or CompressedImage topic (one bag, one
drive). Frames that do not decode are counted and skipped; a source with no readable frame is an
error naming it, before any training step.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..bags import Bag
from .datasets import IMAGE_SUFFIXES, DatasetError, read_rgb
from .training_data import check_common, check_entry


class UnlabelledError(DatasetError):
    """An unlabelled source that cannot be used: missing, empty, no such topic, no readable frame."""


@dataclass
class UnlabelledSpec:
    """One entry of a training config's `unlabelled` list (the keys of its YAML mapping)."""

    name: str
    path: str | None = None            # folder of images or rosbag2 bag; --data-root NAME=PATH sets it
    topic: str | None = None           # bags: the camera topic (default: the bag's only camera)
    weight: float = 0.5                # share of training samples drawn from these frames, as datasets' weights
    resize: tuple[int, int] | None = None  # (width, height) every frame is resized to when loaded
    stride: int = 1                    # every stride-th frame (long recordings)
    max_frames: int | None = None      # at most this many frames
    exclude_drives: list | None = None  # drives (sub-folders, bags) left out, e.g. to keep them for scoring

    @classmethod
    def from_dict(cls, data: dict, index: int) -> "UnlabelledSpec":
        check_entry(cls, data, f"unlabelled[{index}]", UnlabelledError)
        spec = cls(**{"name": data.get("name") or f"unlabelled{index}", **data})
        check_common(spec, f"unlabelled[{index}]", UnlabelledError)
        if spec.stride < 1 or (spec.max_frames is not None and spec.max_frames < 1):
            raise UnlabelledError(f"unlabelled[{index}] ({spec.name}): stride and max_frames must be at least 1")
        return spec


@dataclass
class UnlabelledFrames:
    """Decoded RGB frames with the drive each came from, and what was skipped."""

    images: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    drives: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices) -> "UnlabelledFrames":
        indices = list(indices)
        return UnlabelledFrames([self.images[i] for i in indices], [self.names[i] for i in indices],
                                [self.drives[i] for i in indices], Counter(self.skipped))

    def sizes(self) -> Counter:
        """(width, height) -> how many frames have it."""
        return Counter((img.shape[1], img.shape[0]) for img in self.images)


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix.lower() in (".mcap", ".db3"))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _resized(img: np.ndarray, resize) -> np.ndarray:
    if resize is None or img.shape[:2] == (resize[1], resize[0]):
        return img if img.flags.writeable else img.copy()  # a bag's frame may view the message's bytes
    shrink = resize[0] < img.shape[1]
    return cv2.resize(img, tuple(resize), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _folder_frames(folder: Path, out: UnlabelledFrames, *, resize, stride, limit, exclude, progress) -> None:
    from tqdm import tqdm
    files = [f for f in _image_files(folder) if _drive_of(f, folder) not in exclude][::stride][:limit]
    if not files:
        raise UnlabelledError(f"unlabelled source {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}), "
                              "searched recursively" + (f", drives {sorted(exclude)} left out" if exclude else ""))
    grey, colour = None, None
    for f in tqdm(files, desc=f"reading {folder.name}", leave=False, file=sys.stderr, disable=not progress):
        try:
            img = read_rgb(f)
        except DatasetError:
            out.skipped[f"undecodable image in {folder}"] += 1
            continue
        if is_grey(img):
            grey = grey or f
        else:
            colour = colour or f
        if grey and colour:
            raise UnlabelledError(f"unlabelled source {folder} holds colour images ({colour}) and single-channel "
                                  f"ones ({grey}): label images? Give the folder of camera images only")
        out.images.append(_resized(img, resize))
        out.names.append(str(f.relative_to(folder)))
        out.drives.append(_drive_of(f, folder))


def is_grey(img: np.ndarray) -> bool:
    """A frame whose three channels are equal (a single-channel file read as RGB), checked on a sparse grid."""
    sample = img[::7, ::7]
    return bool((sample[..., 0] == sample[..., 1]).all() and (sample[..., 1] == sample[..., 2]).all())


def _drive_of(file: Path, folder: Path) -> str:
    """A frame's drive: the sub-folder it lies in (the folder itself for frames at its top)."""
    rel = file.relative_to(folder)
    return f"{folder.name}/{rel.parts[0]}" if len(rel.parts) > 1 else folder.name


def _bag_frames(path: Path, topic, out: UnlabelledFrames, *, resize, stride, limit, progress) -> None:
    from tqdm import tqdm

    from .harvest import camera_frames, camera_topic
    with Bag(path) as bag:
        topic = camera_topic(bag, topic)
        total = bag.topics[topic].count // stride
        n = 0
        for stamp, rgb in tqdm(camera_frames(bag, topic, out.skipped, stride=stride), total=total,
                               desc=f"reading {path.name}", leave=False, file=sys.stderr, disable=not progress):
            if limit is not None and n >= limit:
                break
            out.images.append(_resized(rgb, resize))
            out.names.append(f"{path.name}{topic}@{stamp}")
            out.drives.append(path.name)
            n += 1


def read_unlabelled(paths, *, topic: str | None = None, resize=None, stride: int = 1, max_frames: int | None = None,
                    exclude_drives=None, progress: bool = True) -> UnlabelledFrames:
    """Every readable frame of the sources, in order; a source without one is an UnlabelledError."""
    out = UnlabelledFrames()
    exclude = {str(d) for d in (exclude_drives or [])}
    for raw in paths:
        path = Path(raw).expanduser()
        before = len(out)
        limit = None if max_frames is None else max_frames - before
        if limit is not None and limit <= 0:
            break
        if not path.exists():
            raise UnlabelledError(f"unlabelled source {path} does not exist")
        if is_bag(path):
            if path.name in exclude:
                continue
            _bag_frames(path, topic, out, resize=resize, stride=stride, limit=limit, progress=progress)
        elif path.is_dir():
            _folder_frames(path, out, resize=resize, stride=stride, limit=limit, exclude=exclude, progress=progress)
        else:
            raise UnlabelledError(f"unlabelled source {path} is neither a folder of images nor a rosbag2 bag "
                                  "(a folder with metadata.yaml, or a .mcap / .db3 file)")
        if len(out) == before:
            skipped = f" ({dict(out.skipped)})" if out.skipped else ""
            raise UnlabelledError(f"unlabelled source {path} holds no readable frame{skipped}")
    return out


def read_spec(spec: UnlabelledSpec, *, progress: bool = True) -> UnlabelledFrames:
    if not spec.path:
        raise UnlabelledError(f"unlabelled source {spec.name} has no path; give path: or --data-root "
                              f"{spec.name}=PATH")
    return read_unlabelled([spec.path], topic=spec.topic, resize=spec.resize, stride=spec.stride,
                           max_frames=spec.max_frames, exclude_drives=spec.exclude_drives, progress=progress)
