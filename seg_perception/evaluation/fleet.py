# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Many bags as one evaluation: finding them, scoring each on its own, pooling the figures.

A fleet replays hundreds of drives after each model change. A bag that is
corrupt, lacks a topic or overruns its time must not cost the others, so each
bag is scored on its own (`evaluate_bag`: what one worker does for one bag)
and a failure becomes that bag's row with its reason. `combine` pools what
finished into one report: one confusion matrix over all frames (not a mean of
per-bag mIoUs), with a row per bag, worst first. `run_local` scores the bags
in this process, `ray_engine.run_ray` as Ray tasks; both go through
`evaluate_bag` and `combine`, so they give the same figures.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..bags import BagError
from ..learning.datasets import DatasetError
from .bag_evaluation import latency_summary
from .metrics import scores

BAG_SUFFIXES = (".mcap", ".db3")
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
NODE_LOG_LIMIT = 64 * 1024  # bytes of a started node's log that come back with a bag's outcome
EXAMPLES_KEPT = 10


# -- which bags -----------------------------------------------------------------

def _is_bag_dir(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").is_file()


def _search(folder: Path) -> list[Path]:
    """Bag folders (holding metadata.yaml) and loose .mcap/.db3 files under folder, in name order."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if (here / "metadata.yaml").is_file():
            found.append(here)
            dirs[:] = []  # a bag's own data files are not bags of their own
            continue
        dirs.sort()
        found += [here / f for f in sorted(files) if Path(f).suffix.lower() in BAG_SUFFIXES]
    return sorted(found)


def _expand(path: Path, origin: str) -> list[Path]:
    if _is_bag_dir(path) or (path.is_file() and path.suffix.lower() in BAG_SUFFIXES) or not path.exists():
        return [path]  # a missing bag stays in the list: its row says so, the others still run
    if path.is_dir():
        found = _search(path)
        if not found:
            raise BagError(f"{origin} {path} holds no bag (no folder with metadata.yaml, no .mcap or .db3 file)")
        return found
    return _read_list(path)


def _read_list(path: Path) -> list[Path]:
    """A text file naming one bag (or folder of bags) per line; '#' starts a comment; relative to the file."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BagError(f"bag list {path} cannot be read ({exc})") from None
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            named = Path(entry).expanduser()
            out += _expand(named if named.is_absolute() else path.parent / named, f"{path} line {number}:")
    if not out:
        raise BagError(f"bag list {path} names no bag")
    return out


def find_bags(paths) -> list[str]:
    """The bags that `paths` name: bags, folders searched recursively, text files listing bags; no repeats."""
    seen, out = set(), []
    for p in paths:
        for bag in _expand(Path(p), "folder"):
            key = os.path.realpath(bag)
            if key not in seen:
                seen.add(key)
                out.append(str(bag))
    if not out:
        raise BagError("no bag given")
    return out


# -- one bag --------------------------------------------------------------------

@dataclass(frozen=True)
class EvalJob:
    """What every bag of a run is scored with: plain values, so that it travels to Ray workers as it is."""

    label_topic: str = "/camera/ground_truth"
    image_topic: str | None = None  # None: /camera/image_raw, or its /compressed twin when only that is recorded
    mapping: str | None = None
    samples: int = 6
    model: str | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    input_size: str = "auto"
    threads: int | None = None
    flip_tta: bool = False
    timeout: float | None = None    # seconds per bag
    live: bool = False
    start_node: bool = True
    node_params: tuple = ()
    output_topic: str = "/segmentation/labels"
    rate: float = 1.0
    startup_timeout: float = 120.0
    drain_timeout: float = 10.0


_SEGMENTERS: dict = {}


def segmenter_for(job: EvalJob):
    """The job's Segmenter, loaded once per process and kept for every later bag; returns (segmenter, cached)."""
    from ..inference.segmenter import Segmenter
    key = (job.model, job.device, job.backend, job.precision, job.input_size, job.threads, job.flip_tta)
    if key in _SEGMENTERS:
        return _SEGMENTERS[key], True
    seg = Segmenter(job.model, device=job.device, backend=job.backend, precision=job.precision,
                    input_size=job.input_size, threads=job.threads, flip_tta=job.flip_tta)
    _SEGMENTERS[key] = seg
    return seg, False


@contextlib.contextmanager
def _ros_domain(domain: int | None):
    """This process (and the node it starts) on its own DDS domain, seen from this host only."""
    if domain is None:
        yield
        return
    from ..ros.environment import ros_environment
    with ros_environment({"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}):
        yield


def this_worker() -> dict:
    """Which process ran a bag (a row's `worker`)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def evaluate_bag(path: str, job: EvalJob, *, log_dir: str | Path | None = None, ros_domain: int | None = None,
                 progress: bool = False) -> dict:
    """Score one bag; a bad bag raises (BagError and kin). Returns the report dict, sample frames, the
    worker that ran it and (live, without log_dir) the tail of the started node's log.
    """
    from ..bags import Bag
    from .bag_evaluation import evaluate_live, evaluate_offline
    t0 = time.perf_counter()
    worker = this_worker()
    image_topic = job.image_topic
    if not image_topic:
        with Bag(path) as bag:
            image_topic = bag.recorded_image_topic(DEFAULT_IMAGE_TOPIC)
    node_log = None
    if job.live:
        with contextlib.ExitStack() as stack:
            folder = log_dir or (stack.enter_context(tempfile.TemporaryDirectory(prefix="bag_eval_"))
                                 if job.start_node else None)
            stack.enter_context(_ros_domain(ros_domain))
            try:
                result, samples = evaluate_live(
                    path, image_topic, job.label_topic, model=job.model, mapping=job.mapping,
                    start_node=job.start_node, node_params=job.node_params, output_topic=job.output_topic,
                    rate=job.rate, startup_timeout=job.startup_timeout, drain_timeout=job.drain_timeout,
                    progress=progress, samples=job.samples, log_dir=folder, timeout=job.timeout)
            finally:
                if folder is not None and log_dir is None and (Path(folder) / "node.log").is_file():
                    with open(Path(folder) / "node.log", "rb") as f:
                        f.seek(max(0, f.seek(0, os.SEEK_END) - NODE_LOG_LIMIT))
                        node_log = f.read().decode(errors="replace")
    else:
        seg, worker["model_cached"] = segmenter_for(job)
        result, samples = evaluate_offline(path, image_topic, job.label_topic, seg, mapping=job.mapping,
                                           progress=progress, samples=job.samples, timeout=job.timeout)
    return {"result": result, "samples": samples, "worker": worker, "node_log": node_log,
            "wall_s": time.perf_counter() - t0}


def failure_reason(exc: BaseException) -> str:
    """One line for a bag's row: our own errors say what is wrong with the bag; others name their type."""
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, (BagError, DatasetError)):
        return text
    return f"{type(exc).__name__}: {text}"


@dataclass
class BagRun:
    """What became of one bag: its report dict and samples, or the reason it has none."""

    index: int
    path: str
    result: dict | None = None
    samples: list = field(default_factory=list)
    reason: str | None = None
    worker: dict = field(default_factory=dict)
    wall_s: float | None = None
    node_log: str | None = None
    error: BaseException | None = None  # the exception itself, in-process runs only (not sent anywhere)

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def frames(self) -> int:
        return int(self.result["frames_evaluated"]) if self.ok else 0

    @classmethod
    def from_outcome(cls, index: int, path: str, outcome: dict) -> "BagRun":
        return cls(index, path, result=outcome["result"], samples=outcome["samples"], worker=outcome["worker"],
                   wall_s=outcome["wall_s"], node_log=outcome.get("node_log"))


def in_order_of(paths: list[str], runs: dict[int, BagRun]) -> list[BagRun]:
    """A run per path in the given order; the bags an interruption left undone say so."""
    return [runs.get(i) or BagRun(i, p, reason="not run: interrupted") for i, p in enumerate(paths)]


class FleetProgress:
    """Bags done / total and frames/s over the whole run on one bar; each failure on its own line."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="bag", desc="bags", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True)
        self.t0 = time.perf_counter()
        self.frames = 0
        self.failed = 0

    def done(self, run: BagRun) -> None:
        self.frames += run.frames
        self.failed += not run.ok
        if not run.ok:
            tqdm.write(f"bag {run.path} failed: {run.reason}", file=sys.stderr)
        elapsed = time.perf_counter() - self.t0
        self.bar.set_postfix_str(f"{self.frames / max(elapsed, 1e-9):.1f} frames/s, {self.failed} failed",
                                 refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_local(paths: list[str], job: EvalJob, *, progress: bool = True,
              log_dir: str | Path | None = None) -> tuple[list[BagRun], bool]:
    """Every bag in this process, one after another; returns the runs and whether Ctrl-C cut it short.

    log_dir: where a started node writes node.log (one bag only; with several, each log comes back in its run).
    """
    runs: list[BagRun] = []
    one = len(paths) == 1
    bar = FleetProgress(len(paths), progress and not one)
    interrupted = False
    try:
        for i, path in enumerate(paths):
            try:
                run = BagRun.from_outcome(i, path, evaluate_bag(path, job, log_dir=log_dir if one else None,
                                                                progress=progress and one))
            except KeyboardInterrupt:
                interrupted = True
                break
            except Exception as exc:  # noqa: BLE001  one bag's failure, whatever it is, must not stop the fleet
                run = BagRun(i, path, reason=failure_reason(exc), error=exc, worker=this_worker())
            runs.append(run)
            bar.done(run)
    finally:
        bar.close()
    return in_order_of(paths, {r.index: r for r in runs}), interrupted


# -- the report -----------------------------------------------------------------

def _row(run: BagRun) -> dict:
    row = {"bag": run.path, "status": "ok" if run.ok else "failed", "reason": run.reason, "wall_s": run.wall_s,
           "worker": run.worker or None}
    if run.ok:
        r = run.result
        bag = r.get("bag") or {}
        row.update({k: r.get(k) for k in ("miou", "pixel_accuracy", "mean_class_accuracy", "frames_total",
                                          "frames_evaluated", "frames_dropped", "frames_skipped", "fps",
                                          "latency_ms", "per_class_iou", "confusion_matrix")})
        row.update({"image_topic": bag.get("image_topic"), "storage": bag.get("storage"),
                    "size_bytes": bag.get("size_bytes"), "sha256": bag.get("sha256"),
                    "duration_s": bag.get("duration_s")})
    return row


def _worst_first(row: dict):
    """Failed bags first (they need a look), then by mIoU from the lowest."""
    miou = row.get("miou")
    bad = miou is None or (isinstance(miou, float) and math.isnan(miou))
    return (row["status"] == "ok", not bad, miou if not bad else 0.0, row["bag"])


def _merge_skipped(runs: list[BagRun]) -> dict:
    out: dict = {}
    examples = []
    for run in runs:
        for k, v in (run.result.get("skipped") or {}).items():
            if k == "examples":
                examples += [f"{Path(run.path).name}: {e}" for e in v or ()]
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
    out["examples"] = examples[:EXAMPLES_KEPT]
    return out


def combine(runs: list[BagRun], *, engine: dict, wall_s: float, samples: int = 6) -> tuple[dict, list]:
    """One report over the bags that finished, with every bag's row (failed ones with their reason).

    One bag: that bag's report as a single-bag run always gave it. Several: figures of all frames pooled
    (confusion matrices summed, counts added, latencies of every frame), fps over the whole run's wall
    time, and the sample frames of the worst bags.
    """
    ok = [r for r in runs if r.ok]
    if not ok:
        raise BagError("no bag could be evaluated")
    rows = sorted((_row(r) for r in runs), key=_worst_first)
    fleet = {"bags": rows, "bags_total": len(runs), "bags_failed": len(runs) - len(ok), "engine": engine,
             "wall_s": wall_s}
    if len(runs) == 1:
        return {**ok[0].result, **fleet}, ok[0].samples
    first = ok[0].result
    cm = sum(np.asarray(r.result["confusion_matrix"], np.int64) for r in ok)
    report = scores(cm, list(first["per_class_iou"]))
    lat = [(r, ms) for r in ok for _, ms in r.result.get("latency_series") or ()]
    frames = sum(r.frames for r in ok)
    report.update({
        "confusion_matrix": cm.tolist(),
        "frames": frames,
        "mode": first["mode"],
        "frames_total": sum(int(r.result["frames_total"]) for r in ok),
        "frames_evaluated": frames,
        "frames_dropped": sum(int(r.result["frames_dropped"]) for r in ok),
        "frames_skipped": sum(int(r.result["frames_skipped"]) for r in ok),
        "skipped": _merge_skipped(ok),
        "fps": frames / wall_s if wall_s > 0 else None,
        "fps_kind": "frames evaluated over the whole run's wall time (all workers together)",
        "latency_ms": latency_summary(ms for _, ms in lat),
        "latency_kind": first.get("latency_kind"),
        "latency_series": [[k, ms] for k, (_, ms) in enumerate(lat)],
        "model": first.get("model"),
        "bag": {"count": len(runs), "image_topic": (first.get("bag") or {}).get("image_topic"),
                "label_topic": (first.get("bag") or {}).get("label_topic"),
                "size_bytes": sum(int((r.result.get("bag") or {}).get("size_bytes") or 0) for r in ok)},
        "mapping": first.get("mapping"),
    })
    report.update(fleet)
    order = {row["bag"]: k for k, row in enumerate(rows)}
    worst = sorted(ok, key=lambda r: order[r.path])[:samples]
    picked = []
    for run in worst:
        for s in run.samples[:1]:
            picked.append({**s, "name": f"{Path(run.path).name} {s['name']}"})
    return report, picked

