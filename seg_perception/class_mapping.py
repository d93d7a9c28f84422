# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Class mappings: translate a dataset's class ids into a model's class table.

Datasets with different taxonomies train one model when each brings a mapping
file (YAML) from its own classes onto the model's: many source classes may map
onto one target class, and a source class may be ignored. Every source class
must be named, so a typo cannot silently drop a class from training.

    source: camvid            # the dataset's class table: camvid, cityscapes, driving or a class YAML
    target: driving           # the model's class table, the same choices
    map:                      # source class (name or id) -> target class name, or ignore
      Road: drivable
      Pavement: non-drivable
      ...
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import ClassTable, ClassTableError, class_table, read_yaml

IGNORE = "ignore"


class MappingError(ValueError):
    """A mapping file that cannot be applied as it is."""


@dataclass(frozen=True)
class ClassMapping:
    """A lookup from source ids to target ids (ignore ids stay ignored)."""

    source: ClassTable
    target: ClassTable
    pairs: dict[str, str]  # source class name -> target class name or 'ignore'
    origin: str = "mapping"

    def lut(self) -> np.ndarray:
        """256-entry uint8 table: source id -> target id; unknown values and ignored classes -> the ignore id."""
        lut = np.full(256, self.target.ignore_index, np.uint8)
        for src, dst in self.pairs.items():
            if dst != IGNORE:
                lut[self.source.names.index(src)] = self.target.names.index(dst)
        return lut

    def apply(self, label: np.ndarray) -> np.ndarray:
        return self.lut()[label]


def _source_name(key, source: ClassTable, origin: str) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        if not 0 <= key < source.num_classes:
            raise MappingError(f"{origin}: source id {key} is not a class of the source table "
                               f"(ids 0..{source.num_classes - 1})")
        return source.names[key]
    if str(key) not in source.names:
        raise MappingError(f"{origin}: source class '{key}' unknown; source classes: {list(source.names)}")
    return str(key)


def mapping_from_dict(data: dict, *, origin: str = "mapping", target: ClassTable | None = None) -> ClassMapping:
    """Validate a mapping; `target`, when given, is the model's table the mapping must lead into."""
    if not isinstance(data, dict):
        raise MappingError(f"{origin}: expected a mapping with keys source, target, map")
    unknown = sorted(set(data) - {"source", "target", "map"})
    missing = [k for k in ("source", "target", "map") if k not in data]
    if unknown or missing:
        raise MappingError(f"{origin}: " + "; ".join(
            ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else []))
            + " (keys: source, target, map)")
    try:
        source, declared = class_table(data["source"]), class_table(data["target"])
    except ClassTableError as exc:
        raise MappingError(f"{origin}: {exc}") from None
    if target is not None and declared.names != target.names:
        raise MappingError(f"{origin} maps into {list(declared.names)}, but the model's classes are "
                           f"{list(target.names)}")
    if not isinstance(data["map"], dict) or not data["map"]:
        raise MappingError(f"{origin}: 'map' must be a non-empty mapping of source class -> target class")
    pairs: dict[str, str] = {}
    for key, value in data["map"].items():
        src = _source_name(key, source, origin)
        dst = str(value)
        if dst != IGNORE and dst not in declared.names:
            raise MappingError(f"{origin}: '{src}' maps to '{dst}', which the target table lacks; target classes: "
                               f"{list(declared.names)} (or '{IGNORE}')")
        if src in pairs:
            raise MappingError(f"{origin}: source class '{src}' is mapped twice")
        pairs[src] = dst
    unmapped = [n for n in source.names if n not in pairs]
    if unmapped:
        raise MappingError(f"{origin}: source classes {unmapped} are not mapped (map each to a target class or "
                           f"'{IGNORE}')")
    return ClassMapping(source=source, target=target or declared, pairs=pairs, origin=origin)


def load_mapping(path: str | Path, *, target: ClassTable | None = None) -> ClassMapping:
    return mapping_from_dict(read_yaml(path, "class mapping", MappingError), origin=str(path), target=target)
