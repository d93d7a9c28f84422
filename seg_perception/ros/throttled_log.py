# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Warnings about recurring problems, at most one line per kind of problem every `period` seconds.

The first occurrence of a kind is logged at once; repeats within the period are counted and the
count goes with the next line. At most `max_kinds` kinds are remembered (the oldest is forgotten),
so kinds made from changing input cannot grow without bound.
"""
from __future__ import annotations

import math
import time


class ThrottledWarnings:
    def __init__(self, warn, *, period: float, max_kinds: int = 64, repeats: str = "more since the last report"):
        self.warn = warn
        self.repeats = repeats
        self.period = period
        self.max_kinds = max_kinds
        self._kinds: dict[str, list] = {}  # kind -> [time of the last line, repeats since]

    def __call__(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if kind not in self._kinds and len(self._kinds) >= self.max_kinds:
            self._kinds.pop(next(iter(self._kinds)))
        entry = self._kinds.setdefault(kind, [-math.inf, 0])
        if now - entry[0] >= self.period:
            more = f" ({entry[1]} {self.repeats})" if entry[1] else ""
            self.warn(message + more)
            entry[0], entry[1] = now, 0
        else:
            entry[1] += 1
