# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""What a training run learns from and is judged on: one or several datasets in one class table.

A run's `datasets` list names each source (its layout and folders), the mapping
from its classes onto the model's, its sampling weight, and how its validation
frames are chosen: whole drives held out of its training split (`val_drives`),
or a separate split. Every dataset is validated on its own, so the training log
shows how the model does on each kind of street.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields

import cv2
import numpy as np
from tqdm import tqdm

from ..class_mapping import MappingError, load_mapping
from ..classes import ClassTable, ClassTableError, class_table
from .datasets import (
    LAYOUTS,
    DatasetError,
    LabelledFolder,
    open_dataset,
    split_by_drive,
)


def check_entry(cls, data, where: str, error=DatasetError) -> None:
    """A config list entry (`datasets[0]`, `unlabelled[1]`): a mapping with only the dataclass's keys."""
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping of keys to values")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")


def check_common(spec, where: str, error=DatasetError) -> None:
    """The keys every source shares: a positive weight, and resize as two positive ints (width, height)."""
    if not spec.weight > 0:
        raise error(f"{where} ({spec.name}): weight must be positive")
    if spec.resize is not None:
        spec.resize = tuple(int(v) for v in spec.resize)
        if len(spec.resize) != 2 or min(spec.resize) <= 0:
            raise error(f"{where} ({spec.name}): resize must be two positive ints (width, height)")


@dataclass
class DatasetSpec:
    """One entry of a training config's `datasets` list (the keys of its YAML mapping)."""

    name: str
    layout: str = "camvid"
    root: str | None = None
    split: str = "train"
    images: str | None = None          # generic layout
    labels: str | None = None
    classes: str | None = None         # the labels' class table (generic layout): built-in name or YAML
    mapping: str | None = None         # YAML mapping the dataset's classes onto the model's
    weight: float = 1.0                # share of training samples drawn from this dataset
    val_drives: list | int | None = None  # drives held out of `split` for validation (names, or how many)
    val_split: str | None = None       # or a separate split for validation
    val_images: str | None = None      # or separate folders (generic layout)
    val_labels: str | None = None
    resize: tuple[int, int] | None = None  # (width, height) every frame is resized to when loaded
    max_images: int | None = None      # only the first N training pairs (smoke runs)

    @classmethod
    def from_dict(cls, data: dict, index: int) -> "DatasetSpec":
        check_entry(cls, data, f"datasets[{index}]")
        spec = cls(**{"name": data.get("name") or data.get("layout", f"dataset{index}"), **data})
        if spec.layout not in LAYOUTS:
            raise DatasetError(f"datasets[{index}] ({spec.name}): layout '{spec.layout}' unknown; "
                               f"choose one of {list(LAYOUTS)}")
        check_common(spec, f"datasets[{index}]")
        if sum(v is not None for v in (spec.val_drives, spec.val_split, spec.val_images)) > 1:
            raise DatasetError(f"datasets[{index}] ({spec.name}): give one of val_drives, val_split, val_images")
        return spec


@dataclass
class DatasetSplits:
    """A dataset's training and validation frames, already in the model's class table."""

    spec: DatasetSpec
    train: LabelledFolder
    val: LabelledFolder | None


def open_spec(spec: DatasetSpec, classes: ClassTable | None, seed: int = 0) -> DatasetSplits:
    """Open, map and split one dataset; `classes` is the model's table (None: the dataset's own)."""
    def opened(split=None, images=None, labels=None):
        return open_dataset(spec.layout, root=spec.root, split=split or spec.split, images=images or spec.images,
                            labels=labels or spec.labels, classes=spec.classes)

    train = opened()
    val = (opened(split=spec.val_split) if spec.val_split else
           opened(images=spec.val_images, labels=spec.val_labels) if spec.val_images else None)
    if spec.mapping:
        try:
            mapping = load_mapping(spec.mapping, target=classes)
        except (MappingError, ClassTableError) as exc:
            raise DatasetError(f"dataset {spec.name}: {exc}") from None
        if mapping.source.names != train.classes.names:
            raise DatasetError(f"dataset {spec.name}: mapping {spec.mapping} maps from {list(mapping.source.names)}, "
                               f"but the dataset's classes are {list(train.classes.names)}")
        lut = mapping.lut()
        train = train.mapped(lut, mapping.target, f"{train.description} mapped by {spec.mapping}")
        val = val.mapped(lut, mapping.target, f"{val.description} mapped by {spec.mapping}") if val else None
    elif classes is not None and train.classes.names != classes.names:
        raise DatasetError(f"dataset {spec.name} has classes {list(train.classes.names)}, the model "
                           f"{list(classes.names)}: give it a mapping (see config/mappings/)")
    if spec.val_drives is not None:
        train, val = split_by_drive(train, spec.val_drives, seed=seed)
    return DatasetSplits(spec, train, val)


def open_specs(specs: list[DatasetSpec], classes: str | ClassTable | None, seed: int = 0) -> list[DatasetSplits]:
    """Every dataset of a run in the model's class table (the first dataset's when none is named)."""
    table = class_table(classes) if classes is not None else None
    out = []
    for spec in specs:
        splits = open_spec(spec, table, seed)
        table = table or splits.train.classes
        out.append(splits)
    names = [s.spec.name for s in out]
    if len(set(names)) != len(names):
        raise DatasetError(f"dataset names must differ (they label the validation figures): {names}")
    return out


def load_frames(ds: LabelledFolder, *, limit: int | None = None, resize=None, desc: str = "loading",
                progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Decode (and resize) every pair once; training augments these in memory."""
    n = len(ds) if limit is None else min(limit, len(ds))
    images, labels = [], []
    for i in tqdm(range(n), desc=desc, leave=False, file=sys.stderr, disable=not progress):
        img, lab = ds.read(i)
        if resize is not None and img.shape[:2] != (resize[1], resize[0]):
            shrink = resize[0] < img.shape[1]
            img = cv2.resize(img, resize, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            lab = cv2.resize(lab, resize, interpolation=cv2.INTER_NEAREST)
        images.append(img)
        labels.append(lab)
    return images, labels


@dataclass
class TrainingFrames:
    """All training frames in memory, which dataset each came from, and each dataset's validation frames."""

    classes: ClassTable
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    source: list[int] = field(default_factory=list)      # dataset index of each training frame
    weights: list[float] = field(default_factory=list)   # sampling weight of each dataset
    names: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    val: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)

    def sample_weights(self) -> list[float]:
        """Per-frame weights so that each dataset is drawn in proportion to its weight, whatever its size."""
        counts = np.bincount(self.source, minlength=len(self.names))
        return [self.weights[s] / counts[s] for s in self.source]


def load_training_frames(splits: list[DatasetSplits], *, progress: bool = True) -> TrainingFrames:
    frames = TrainingFrames(classes=splits[0].train.classes)
    for k, s in enumerate(splits):
        imgs, labs = load_frames(s.train, limit=s.spec.max_images, resize=s.spec.resize,
                                 desc=f"loading {s.spec.name} train", progress=progress)
        frames.images += imgs
        frames.labels += labs
        frames.source += [k] * len(imgs)
        frames.weights.append(float(s.spec.weight))
        frames.names.append(s.spec.name)
        frames.descriptions.append(s.train.description)
        if s.val is not None and len(s.val):
            frames.val[s.spec.name] = load_frames(s.val, resize=s.spec.resize, desc=f"loading {s.spec.name} val",
                                                  progress=progress)
    return frames
