"""Labelled image folders: CamVid, Cityscapes and a generic layout.

Each layout resolves to a sorted list of (image path, label path) pairs plus a
class table; reading a pair validates it so bad data fails naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .classes import CAMVID, CITYSCAPES, CITYSCAPES_LABEL_TO_TRAIN, ClassTable

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUTS = ("camvid", "cityscapes", "generic")


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

    def __len__(self) -> int:
        return len(self.pairs)

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
    return LabelledFolder(pairs, CITYSCAPES, label_map=lut, description=f"Cityscapes {split} ({root})")


def generic(images: str | Path, labels: str | Path, classes: str | Path | ClassTable) -> LabelledFolder:
    table = classes if isinstance(classes, ClassTable) else ClassTable.from_yaml(classes)
    return LabelledFolder(pair_folders(images, labels), table, description=f"{images} + {labels}")


def open_dataset(layout: str, *, root=None, split="train", images=None, labels=None,
                 classes=None) -> LabelledFolder:
    """Open a dataset by layout name, with errors that say which argument is missing."""
    if layout == "camvid":
        if root is None:
            raise DatasetError("camvid layout needs a root folder")
        return camvid(root, split)
    if layout == "cityscapes":
        if root is None:
            raise DatasetError("cityscapes layout needs a root folder")
        return cityscapes(root, split)
    if layout == "generic":
        if images is None or labels is None or classes is None:
            raise DatasetError("generic layout needs images, labels and classes (a class YAML)")
        return generic(images, labels, classes)
    raise DatasetError(f"unknown dataset layout '{layout}'; choose one of {list(LAYOUTS)}")
