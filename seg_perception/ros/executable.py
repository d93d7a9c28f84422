# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""How the package's node executables run a node: init, spin, one Ctrl-C, a clean exit.

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


def run_node(make_node, *, logger_name: str, expected=(), setup=None, teardown=None, args=None) -> int:
    """Run one node as every executable of the package does: one Ctrl-C stops it, a clean exit.

    `make_node()` builds it; `setup(node)` runs before spinning (returning False: exit 1); an
    exception of the `expected` kinds is logged as one error line (exit 1), under the node's
    logger or the exception's `logger` (namespace included) when the node could not be built;
    `teardown(node)` runs before the node is destroyed. Returns the exit status.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.logging import get_logger

    interrupt_once()
    rclpy.init(args=args)  # its SIGINT/SIGTERM handlers shut the context down, then call ours
    node = None
    code = 0
    try:
        node = make_node()
        if setup is not None and setup(node) is False:
            code = 1
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except expected as exc:
        name = node.get_logger().name if node is not None else (getattr(exc, "logger", None) or logger_name)
        get_logger(name).error(str(exc))
        code = 1
    finally:
        if node is not None:
            try:
                if teardown is not None:
                    teardown(node)
                node.destroy_node()
            except Exception:  # already torn down by a second signal
                pass
        rclpy.try_shutdown()
        ignore_late_interrupts()  # the interpreter's exit takes a while with torch loaded
    return code
