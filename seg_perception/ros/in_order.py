# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Turns in the order tickets were drawn: parallel workers segment at once but publish one at a
time, oldest frames first, so that every output topic's stamps only move forward.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager


class InOrder:
    """Draw a ticket when taking work (under the caller's own lock), take the turn to finish it.

    Every ticket drawn must take its turn exactly once, even when its work failed: the next one
    waits for it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._drawn = 0
        self._serving = 0

    def ticket(self) -> int:
        with self._cond:
            self._drawn += 1
            return self._drawn - 1

    @contextmanager
    def turn(self, ticket: int):
        with self._cond:
            self._cond.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._cond:
                self._serving = ticket + 1
                self._cond.notify_all()
