# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Parallel workers finish in the order they took their work, even when a later one is faster or an
earlier one fails.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from seg_perception.ros.in_order import InOrder


def test_turns_follow_the_tickets_whatever_finishes_first():
    order = InOrder()
    take = threading.Lock()
    done: list[int] = []
    rng = random.Random(3)
    delays = [rng.uniform(0.0, 0.01) for _ in range(200)]
    items = iter(range(200))

    def worker() -> None:
        while True:
            with take:
                item = next(items, None)
                if item is None:
                    return
                ticket = order.ticket()
            time.sleep(delays[item])  # the work: later items often finish first
            with order.turn(ticket):
                done.append(item)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert done == list(range(200))


def test_a_failed_turn_lets_the_next_one_go():
    order = InOrder()
    first, second = order.ticket(), order.ticket()
    done = []

    def second_worker() -> None:
        with order.turn(second):
            done.append(second)

    waiter = threading.Thread(target=second_worker)
    waiter.start()
    time.sleep(0.05)
    assert not done  # waits for the first
    with pytest.raises(RuntimeError), order.turn(first):
        raise RuntimeError("the first frame's publishing failed")
    waiter.join(timeout=5)
    assert done == [second]
