# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Labelled image folders: CamVid, Cityscapes, IDD-Lite and a generic layout.

Each layout resolves to a sorted list of (image path, label path) pairs, the
drive each pair was recorded on, and a class table; reading a pair validates it
so bad data fails naming the file. Drives matter because frames of one drive
look alike: held-out frames must come from drives that training never saw.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from ..classes import (
    CAMVID,
    CITYSCAPES,
    CITYSCAPES_LABEL_TO_TRAIN,
    DRIVING,
    ClassTable,
    class_table,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("camvid", "cityscapes", "idd_lite", "generic")


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used as it is."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, with a clear error when it is unreadable."""
    path = Path(path)
    data = np.fromfile(str(path), np.uint8) if path.is_file() else None
    if data is None:
        raise DatasetError(f"image file {path} does not exist")
    if data.size == 0:
        raise DatasetError(f"image file {path} is empty")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"image file {path} is corrupt or not an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label image as HxW uint8."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist")
    data = np.fromfile(str(path), np.uint8)
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if lab is None:
        raise DatasetError(f"label file {path} is corrupt or not an image")
    if lab.ndim == 3:
        raise DatasetError(f"label file {path} has {lab.shape[2]} channels; expected a single-channel class-id image")
    if lab.dtype != np.uint8:
        if lab.max() > 255:
            raise DatasetError(f"label file {path} holds ids above 255")
        lab = lab.astype(np.uint8)
    return lab


@dataclass
class LabelledFolder:
    """Image/label pairs of one split with the class table that explains the ids."""

    pairs: list[tuple[Path, Path]]
    classes: ClassTable
    label_map: np.ndarray | None = None  # 256-entry lookup applied to raw label values
    description: str = ""
    drives: list[str] = field(default_factory=list)  # the drive (sequence) of each pair

    def __post_init__(self) -> None:
        if not self.drives:
            self.drives = [stem_drive(img) for img, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices, description: str) -> "LabelledFolder":
        """The same dataset restricted to some pairs."""
        indices = list(indices)
        return replace(self, pairs=[self.pairs[i] for i in indices], drives=[self.drives[i] for i in indices],
                       description=description)

    def mapped(self, lut: np.ndarray, classes: ClassTable, description: str | None = None) -> "LabelledFolder":
        """The same pairs with their ids translated by a 256-entry lookup into another class table."""
        lut = np.asarray(lut, np.uint8)
        combined = lut if self.label_map is None else lut[self.label_map]
        return replace(self, label_map=combined, classes=classes,
                       description=description or f"{self.description} -> {len(classes.names)} classes")

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (RGB) and label (class ids, ignore id elsewhere) of one pair, validated."""
        img_path, lab_path = self.pairs[index]
        image = read_rgb(img_path)
        label = read_label(lab_path)
        if self.label_map is not None:
            label = self.label_map[label]
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"size mismatch: image {img_path} is {image.shape[1]}x{image.shape[0]} but "
                f"label {lab_path} is {label.shape[1]}x{label.shape[0]}")
        bad = (label >= self.classes.num_classes) & (label != self.classes.ignore_index)
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))
            raise DatasetError(
                f"label file {lab_path} holds ids {values[:10]} outside the class table "
                f"(0..{self.classes.num_classes - 1}, ignore {self.classes.ignore_index})")
        return image, label

    def names(self) -> list[str]:
        return [p[0].name for p in self.pairs]


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def stem_drive(image: Path) -> str:
    """The drive of a frame named `<drive>_<frame>.<ext>` (CamVid, harvested frames): the part before the last '_'."""
    stem = image.stem
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def pair_folders(images: str | Path, labels: str | Path) -> list[tuple[Path, Path]]:
    """Pair images with labels of the same stem; an image without a label is an error."""
    images, labels = Path(images), Path(labels)
    label_files = {p.stem: p for p in _images_in(labels)}
    pairs = []
    missing = []
    for img in _images_in(images):
        lab = label_files.get(img.stem)
        if lab is None:
            missing.append(img.name)
        else:
            pairs.append((img, lab))
    if missing:
        raise DatasetError(
            f"{len(missing)} images in {images} have no label in {labels}, e.g. {missing[:3]}")
    return pairs


def camvid(root: str | Path, split: str = "train") -> LabelledFolder:
    root = Path(root)
    return LabelledFolder(pair_folders(root / split, root / f"{split}annot"), CAMVID,
                          description=f"CamVid {split} ({root})")


def cityscapes(root: str | Path, split: str = "train") -> LabelledFolder:
    """Cityscapes leftImg8bit/gtFine layout; labelIds are mapped to the 19 train ids."""
    root = Path(root)
    img_root = root / "leftImg8bit" / split
    if not img_root.is_dir():
        raise DatasetError(f"folder {img_root} does not exist")
    pairs = []
    for img in sorted(img_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not lab.is_file():
            raise DatasetError(f"image {img} has no label {lab}")
        pairs.append((img, lab))
    if not pairs:
        raise DatasetError(f"no *_leftImg8bit.png images under {img_root}")
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return LabelledFolder(pairs, CITYSCAPES, label_map=lut, description=f"Cityscapes {split} ({root})",
                          drives=[img.parent.name for img, _ in pairs])


def idd_lite(root: str | Path, split: str = "train") -> LabelledFolder:
    """IDD-Lite as downloaded: leftImg8bit/<split>/<drive>/<frame>_image.jpg with gtFine/.../<frame>_label.png.

    Labels are IDD's level-1 ids (the driving table); one folder is one drive.
    """
    root = Path(root)
    img_root = root / "leftImg8bit" / split
    if not img_root.is_dir():
        raise DatasetError(f"folder {img_root} does not exist (expected IDD-Lite's leftImg8bit/<split>/<drive>/)")
    pairs, missing = [], []
    for img in sorted(img_root.glob("*/*_image.*"), key=lambda p: (p.parent.name.zfill(8), p.name)):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        lab = root / "gtFine" / split / img.parent.name / (img.name[: -len("_image" + img.suffix)] + "_label.png")
        if lab.is_file():
            pairs.append((img, lab))
        else:
            missing.append(str(lab))
    if missing:
        raise DatasetError(f"{len(missing)} IDD-Lite images have no label, e.g. {missing[:3]}")
    if not pairs:
        raise DatasetError(f"no <frame>_image.jpg images under {img_root}/<drive>/")
    return LabelledFolder(pairs, DRIVING, description=f"IDD-Lite {split} ({root})",
                          drives=[img.parent.name for img, _ in pairs])


def split_by_drive(ds: LabelledFolder, held_out, *, seed: int = 0) -> tuple[LabelledFolder, LabelledFolder]:
    """(train, held-out) with whole drives on one side: `held_out` names drives or gives how many to draw."""
    drives = sorted(set(ds.drives))
    if isinstance(held_out, int):
        if not 0 < held_out < len(drives):
            raise DatasetError(f"{ds.description}: cannot hold out {held_out} of its {len(drives)} drives")
        chosen = set(random.Random(seed).sample(drives, held_out))
    else:
        chosen = {str(d) for d in held_out}
        unknown = sorted(chosen - set(drives))
        if unknown:
            raise DatasetError(f"{ds.description}: no drive {unknown}; its drives: {drives[:20]}"
                               + (" ..." if len(drives) > 20 else ""))
        if chosen == set(drives):
            raise DatasetError(f"{ds.description}: holding out every drive leaves nothing to train on")
    train = [i for i, d in enumerate(ds.drives) if d not in chosen]
    val = [i for i, d in enumerate(ds.drives) if d in chosen]
    names = sorted(chosen)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (ds.subset(train, f"{ds.description} without drives {shown}"),
            ds.subset(val, f"{ds.description}, held-out drives {shown}"))


def generic(images: str | Path, labels: str | Path, classes: str | Path | ClassTable) -> LabelledFolder:
    table = class_table(classes)
    return LabelledFolder(pair_folders(images, labels), table, description=f"{images} + {labels}")


def open_dataset(layout: str, *, root=None, split="train", images=None, labels=None,
                 classes=None) -> LabelledFolder:
    """Open a dataset by layout name, with errors that say which argument is missing."""
    rooted = {"camvid": camvid, "cityscapes": cityscapes, "idd_lite": idd_lite}
    if layout in rooted:
        if root is None:
            raise DatasetError(f"{layout} layout needs a root folder")
        return rooted[layout](root, split)
    if layout == "generic":
        if images is None or labels is None or classes is None:
            raise DatasetError("generic layout needs images, labels and classes (a class YAML)")
        return generic(images, labels, classes)
    raise DatasetError(f"unknown dataset layout '{layout}'; choose one of {list(LAYOUTS)}")
