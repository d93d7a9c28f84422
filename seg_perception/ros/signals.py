# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C handling shared by the package's node executables.

Ctrl-C reaches every process of the terminal's group and launch forwards one more SIGINT
(`timeout -s INT` does the same): only the first one may interrupt; later ones must not
break the node's cleanup, nor the interpreter's exit afterwards (exit code -2 under launch).
"""
from __future__ import annotations

import signal


def interrupt_once() -> None:
    """The first SIGINT raises KeyboardInterrupt; later ones are ignored. Install before rclpy.init()."""
    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def ignore_late_interrupts() -> None:
    """After cleanup: Python restores SIGINT's default action while it exits; ignore it instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
