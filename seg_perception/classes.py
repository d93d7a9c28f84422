# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The class table: names, palette, ignore id and the drivable/obstacle groups.

One object carries everything that gives meaning to a class id, so the model
checkpoint, the node, the evaluator and the bag tools agree on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml


class ClassTableError(ValueError):
    """A class table that is inconsistent or cannot be read."""


@dataclass(frozen=True)
class ClassTable:
    """Class names and colours indexed by class id, plus the class groups."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    drivable: tuple[str, ...] = ()
    obstacle: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ClassTableError("class table has no classes")
        if len(self.names) > 255:
            raise ClassTableError(f"{len(self.names)} classes do not fit in a mono8 label image")
        if len(set(self.names)) != len(self.names):
            raise ClassTableError(f"duplicate class names in {list(self.names)}")
        if len(self.palette) != len(self.names):
            raise ClassTableError(
                f"palette has {len(self.palette)} colours for {len(self.names)} classes")
        for colour in self.palette:
            if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
                raise ClassTableError(f"palette colour {colour} is not an RGB triple in 0..255")
        if 0 <= self.ignore_index < len(self.names):
            raise ClassTableError(
                f"ignore id {self.ignore_index} collides with class '{self.names[self.ignore_index]}'")
        for group in ("drivable", "obstacle"):
            unknown = [n for n in getattr(self, group) if n not in self.names]
            if unknown:
                raise ClassTableError(f"{group} classes {unknown} are not in {list(self.names)}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def ids(self, names: Sequence[str]) -> list[int]:
        """Class ids for names; unknown names raise with the list of known ones."""
        out = []
        for name in names:
            if name not in self.names:
                raise ClassTableError(f"unknown class '{name}'; known: {list(self.names)}")
            out.append(self.names.index(name))
        return out

    def palette_array(self) -> np.ndarray:
        """A 256x3 uint8 lookup table; ids without a class map to black."""
        lut = np.zeros((256, 3), np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, np.uint8)
        return lut

    def with_overrides(self, *, palette=None, drivable=None, obstacle=None) -> "ClassTable":
        """A copy with some fields replaced (used for node parameters)."""
        return ClassTable(
            names=self.names,
            palette=tuple(tuple(int(v) for v in c) for c in palette) if palette is not None else self.palette,
            ignore_index=self.ignore_index,
            drivable=tuple(drivable) if drivable is not None else self.drivable,
            obstacle=tuple(obstacle) if obstacle is not None else self.obstacle,
        )

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": int(self.ignore_index),
            "drivable": list(self.drivable),
            "obstacle": list(self.obstacle),
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "class table") -> "ClassTable":
        if not isinstance(data, dict):
            raise ClassTableError(f"{source}: expected a mapping, got {type(data).__name__}")
        known = {"names", "palette", "ignore_index", "drivable", "obstacle"}
        unknown = set(data) - known
        if unknown:
            raise ClassTableError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        if "names" not in data:
            raise ClassTableError(f"{source}: missing key 'names'")
        names = tuple(str(n) for n in data["names"])
        palette = data.get("palette")
        if palette is None:
            palette = default_palette(len(names))
        try:
            return cls(
                names=names,
                palette=tuple(tuple(int(v) for v in c) for c in palette),
                ignore_index=int(data.get("ignore_index", 255)),
                drivable=tuple(data.get("drivable", ())),
                obstacle=tuple(data.get("obstacle", ())),
            )
        except ClassTableError as exc:
            raise ClassTableError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ClassTableError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ClassTable":
        return cls.from_dict(read_yaml(path, "class table", ClassTableError), source=str(path))


def read_yaml(path: str | Path, what: str, error: type[Exception]):
    """A YAML file's content; an unreadable or invalid file raises `error` naming the file and what it is."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def default_palette(n: int) -> list[list[int]]:
    """The PASCAL VOC bit-interleaved palette, for tables that give no colours."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i + 1
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append([r, g, b])
    return out


#: CamVid, SegNet's 11-class version; ids 0..10, 11 is void.
CAMVID = ClassTable(
    names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
           "Fence", "Car", "Pedestrian", "Bicyclist"),
    palette=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128),
             (60, 40, 222), (128, 128, 0), (192, 128, 128), (64, 64, 128),
             (64, 0, 128), (64, 64, 0), (0, 128, 192)),
    ignore_index=11,
    drivable=("Road",),
    obstacle=("Car", "Pedestrian", "Bicyclist"),
)

#: Cityscapes' 19 training classes (train ids 0..18, 255 ignored).
CITYSCAPES = ClassTable(
    names=("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
           "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
           "truck", "bus", "train", "motorcycle", "bicycle"),
    palette=((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
             (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
             (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
             (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
             (0, 0, 230), (119, 11, 32)),
    ignore_index=255,
    drivable=("road",),
    obstacle=("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"),
)

#: The driving table: IDD's seven level-1 classes, into which CamVid and Cityscapes map without conflict.
DRIVING = ClassTable(
    names=("drivable", "non-drivable", "living things", "vehicles", "roadside objects", "far objects", "sky"),
    palette=((128, 64, 128), (244, 35, 232), (220, 20, 60), (0, 0, 142), (190, 153, 153),
             (107, 142, 35), (70, 130, 180)),
    ignore_index=255,
    drivable=("drivable",),
    obstacle=("living things", "vehicles"),
)

#: Tables known by name wherever a class table is asked for (a YAML path works too).
BUILTIN_TABLES = {"camvid": CAMVID, "cityscapes": CITYSCAPES, "driving": DRIVING}


def table_name(table: ClassTable) -> str | None:
    """The built-in name of a table with these classes, if it has one."""
    return next((name for name, t in BUILTIN_TABLES.items() if t.names == table.names), None)


def class_table(value: "str | Path | ClassTable") -> ClassTable:
    """A built-in table by name ('camvid', 'cityscapes', 'driving') or a class YAML file."""
    if isinstance(value, ClassTable):
        return value
    builtin = BUILTIN_TABLES.get(str(value).lower())
    if builtin is not None:
        return builtin
    if not Path(value).is_file():
        raise ClassTableError(f"class table '{value}' is neither a built-in table ({', '.join(BUILTIN_TABLES)}) "
                              "nor a class YAML file")
    return ClassTable.from_yaml(value)


#: Cityscapes labelId -> trainId (255 = ignore), from cityscapesScripts' labels.py.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
