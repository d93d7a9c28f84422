# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Bag evaluation as Ray tasks, on a local Ray instance or on an existing cluster.

Ray does the scheduling: one task per bag, placed wherever the CPUs and GPUs it
asks for are free. Here we only submit the tasks, take each outcome as it
comes back, and stop a task that overruns its time limit. A worker process
keeps its model for every later bag it receives (fleet.segmenter_for caches it
in the worker; max_calls=0 keeps GPU workers alive too). Each task is a
streaming generator that first reports that it started, so a time limit counts
from the bag's start, not from when it was queued.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import time

from ..bags import BagError
from .fleet import BagRun, EvalJob, FleetProgress, in_order_of, this_worker

CONNECT_TIMEOUT_S = 10.0
#: beyond the per-bag limit, for a task stuck where the per-frame check cannot see it; then its worker is killed
HARD_STOP_GRACE_S = 30.0
#: live tasks started here each get a DDS domain of their own (1..LIVE_DOMAINS, localhost discovery)
LIVE_DOMAINS = 100
DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray Client server, GCS


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BagError("--engine ray needs the ray package (pip install ray)") from None
    return ray


def _probe(address: str) -> None:
    """Fail fast where nobody answers: ray.init itself retries an unreachable address for minutes."""
    scheme, _, rest = address.rpartition("://")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(DEFAULT_PORTS.get(scheme, 6379))
    if not host or not port.isdigit():
        raise BagError(f"--address {address}: expected HOST:PORT (the head node's GCS, e.g. 10.0.0.5:6379) or "
                       "ray://HOST:10001")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise BagError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one there with "
                       "`ray start --head`, or leave out --address for a local Ray instance") from None


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """Connected to Ray for the block: the cluster at address, else a new local instance (shut down after).

    A connection that already exists in this process (ray.init called before) is used as it is and left open.
    Yields a dict describing the cluster for the report.
    """
    ray = _import_ray()
    started = False
    if address and address != "auto":
        _probe(address)
    if not ray.is_initialized():
        try:
            ray.init(address=address or None, log_to_driver=False, logging_level=logging.WARNING,
                     **({} if address else {"include_dashboard": False}))
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean no cluster for us
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise BagError(f"cannot connect to {where}: {' '.join(str(exc).split())[:300]}") from None
        started = True
    try:
        res = ray.cluster_resources()
        yield {"name": "ray", "address": address or ("local" if started else "existing connection"),
               "nodes": len([n for n in ray.nodes() if n.get("Alive")]), "cpus": res.get("CPU", 0.0),
               "gpus": res.get("GPU", 0.0)}
    finally:
        if started:
            ray.shutdown()


def _bag_task(path: str, job: EvalJob, ros_domain: int | None):
    """One bag in a Ray worker: reports its start, then its outcome (a bad bag is an outcome, not a crash)."""
    from .fleet import evaluate_bag, failure_reason
    worker = this_worker()
    yield {"started": True, "worker": worker}
    try:
        outcome = evaluate_bag(path, job, ros_domain=ros_domain)
    except Exception as exc:  # noqa: BLE001  the bag's reason goes into its row; the worker lives on
        yield {"error": failure_reason(exc), "worker": worker}
    else:
        yield outcome


_REMOTE = None


def _remote():
    global _REMOTE
    if _REMOTE is None:
        # max_calls=0: GPU workers would otherwise exit after each task and load the model again
        _REMOTE = _import_ray().remote(max_calls=0)(_bag_task)
    return _REMOTE


def ray_failure(exc: BaseException, *, stopped: bool, timeout: float | None) -> str:
    """The row's reason for a task that Ray could not bring back."""
    from ray import exceptions as rx
    if stopped or isinstance(exc, rx.TaskCancelledError):
        return (f"timed out after {timeout:g} s and did not stop by itself: the task was cancelled and its worker "
                "killed" if timeout else "cancelled")
    if isinstance(exc, rx.OutOfMemoryError):
        return "the worker was killed by Ray's memory monitor (its machine ran out of memory)"
    if isinstance(exc, rx.NodeDiedError):
        return "the machine running this bag left the cluster"
    if isinstance(exc, rx.WorkerCrashedError):
        return "the worker died while evaluating this bag (killed, out of memory or crashed in native code)"
    if isinstance(exc, rx.RayTaskError):
        cause = exc.cause
        return f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    text = " ".join(str(exc).split()).split(". ")[0]
    return f"{type(exc).__name__}" + (f": {text}" if text else "")


def run_ray(paths: list[str], job: EvalJob, *, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0,
            retries: int = 0, progress: bool = True, poll_s: float = 0.5,
            grace_s: float = HARD_STOP_GRACE_S) -> tuple[list[BagRun], bool]:
    """Every bag as a Ray task (within ray_session); returns the runs in the given order and whether Ctrl-C
    cut the run short (bags not done then are rows saying so).
    """
    ray = _import_ray()
    remote = _remote().options(num_returns="streaming", num_cpus=cpus_per_task, num_gpus=gpus_per_task,
                               max_retries=retries)
    live_started = job.live and job.start_node
    pending = {remote.remote(path, job, 1 + i % LIVE_DOMAINS if live_started else None): (i, path)
               for i, path in enumerate(paths)}
    started: dict = {}
    stopped: set = set()
    runs: dict[int, BagRun] = {}
    bar = FleetProgress(len(paths), progress)
    interrupted = False
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_s)
            for gen in ready:
                i, path = pending[gen]
                try:
                    value = ray.get(next(gen))
                except StopIteration:
                    run = BagRun(i, path, reason="the task ended without an outcome")
                except Exception as exc:  # noqa: BLE001  Ray's errors: a crashed or cancelled worker, a lost node
                    run = BagRun(i, path, reason=ray_failure(exc, stopped=gen in stopped, timeout=job.timeout),
                                 worker=started.get(gen, (0, {}))[1])
                else:
                    if "started" in value:
                        started[gen] = (time.monotonic(), value["worker"])
                        continue
                    if "error" in value:
                        run = BagRun(i, path, reason=value["error"], worker=value["worker"])
                    else:
                        run = BagRun.from_outcome(i, path, value)
                del pending[gen]
                runs[i] = run
                bar.done(run)
            if job.timeout:
                now = time.monotonic()
                for gen, (t0, _) in started.items():
                    if gen in pending and gen not in stopped and now - t0 > job.timeout + grace_s:
                        ray.cancel(gen, force=True)
                        stopped.add(gen)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for gen in pending:
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
        bar.close()
    return in_order_of(paths, runs), interrupted
