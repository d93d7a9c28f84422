# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The `evaluate-bag` report folder: report.json, report.md and PNG plots.

report.json            every figure (see REPORT_KEYS), machine-readable
report.md              the same for people: summary, per-class table, skips, plots
confusion_matrix.png   row-normalised confusion matrix
per_class_iou.png      per-class IoU bars with the mIoU line
latency_histogram.png  distribution of per-frame latency
latency_over_time.png  latency of each frame against its time in the replay
samples.png            a few frames: camera | ground truth | prediction (class colours over the frame)

With several bags also (their figures pooled over all frames, `bags` holding a row per bag, worst first):
per_bag_miou.png       the worst bags' mIoU
failed_bags.txt        the bags that could not be evaluated, one per line (a bag list to run them again)
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
import sys
from pathlib import Path

import cv2
import numpy as np

from ..classes import ClassTable
from ..inference.masks import overlay
from .metrics import format_table
from .plots import plot_confusion, plot_per_bag_miou, plot_per_class_iou

REPORT_KEYS = ("mode", "miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy", "confusion_matrix",
               "frames_total", "frames_evaluated", "frames_dropped", "frames_skipped", "skipped", "fps",
               "latency_ms", "latency_kind", "model", "bag", "mapping")
#: what evaluate-bag adds, for one bag or many: a row per bag (worst first), counts, the engine, the run's wall time
FLEET_KEYS = ("bags", "bags_total", "bags_failed", "engine", "wall_s")
SAMPLE_WIDTH = 320
OVERLAY_ALPHA = 0.6


def _clean(value):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(report: dict) -> str:
    """Indented JSON with each list of numbers (matrix rows, latency points) on one line."""
    text = json.dumps(report, indent=1)
    return re.sub(r"\[\s+([-+\w.,\s]*?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def plot_latency(series, path_hist: Path, path_time: Path, *, kind: str = "", x_label: str = "time (s)") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = np.asarray([s[0] for s in series], np.float64)
    ms = np.asarray([s[1] for s in series], np.float64)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if ms.size:
        ax.hist(ms, bins=min(50, max(5, ms.size // 2)), color="#4878a8", edgecolor="black")
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(ms, q))
            ax.axvline(v, color="red", ls=style, label=f"p{q} {v:.1f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no frames", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title("Latency" + (f": {kind}" if kind else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path_hist, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if ms.size:
        ax.plot(xs, ms, marker=".", lw=0.8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency over time", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path_time, dpi=110)
    plt.close(fig)


def _tile(img: np.ndarray, text: str) -> np.ndarray:
    h, w = img.shape[:2]
    out = cv2.resize(img, (SAMPLE_WIDTH, max(1, round(h * SAMPLE_WIDTH / w))), interpolation=cv2.INTER_AREA)
    out = np.ascontiguousarray(out)
    cv2.rectangle(out, (0, 0), (SAMPLE_WIDTH, 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def sample_grid(samples: list, classes: ClassTable, path: Path) -> bool:
    """Rows of frame | ground truth | prediction; ignore pixels of the ground truth show the frame."""
    if not samples:
        return False
    lut = classes.palette_array()
    rows = []
    for s in samples:
        rgb, gt, pred = s["rgb"], s["label"], s["pred"]
        if pred.shape != rgb.shape[:2]:
            pred = cv2.resize(pred, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        gt_img = overlay(rgb, gt, lut, OVERLAY_ALPHA)
        void = gt == classes.ignore_index
        gt_img[void] = rgb[void]
        pr_img = overlay(rgb, pred, lut, OVERLAY_ALPHA)
        rows.append(np.hstack([_tile(rgb, s["name"]), _tile(gt_img, "ground truth"),
                               _tile(pr_img, "prediction")]))
    width = max(r.shape[1] for r in rows)
    grid = np.vstack([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows])
    return bool(cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)))


def _fmt(v, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * scale:.{digits}f}{unit}"


def several_bags(report: dict) -> bool:
    """A report pooled over several bags (one bag's report has a single row)."""
    return len(report.get("bags") or ()) > 1


def _header(report: dict) -> list[str]:
    bag = report.get("bag") or {}
    model = report.get("model") or {}
    if several_bags(report):
        engine = report.get("engine") or {}
        where = (f"Ray ({engine.get('address')}, {engine.get('nodes')} node(s), {engine.get('cpus', 0):g} CPUs, "
                 f"{engine.get('gpus', 0):g} GPUs; {engine.get('cpus_per_task', 1):g} CPUs and "
                 f"{engine.get('gpus_per_task', 0):g} GPUs per task)" if engine.get("name") == "ray"
                 else "this process, one bag after another")
        first = [f"# Bag evaluation ({report['mode']}, {report['bags_total']} bags)", "",
                 f"- bags: {report['bags_total']}, {report['bags_failed']} failed"
                 + (" (listed in `failed_bags.txt`)" if report["bags_failed"] else "")
                 + f"; {bag.get('size_bytes', 0) / 1e6:.1f} MB scored",
                 f"- engine: {where}; wall time {_fmt(report.get('wall_s'), ' s')}"]
    else:
        first = [f"# Bag evaluation ({report['mode']})", "",
                 f"- bag: `{bag.get('path')}` ({bag.get('storage')}, {bag.get('size_bytes', 0) / 1e6:.1f} MB"
                 + (f", sha256 {bag['sha256'][:16]}…" if bag.get("sha256") else "") + ")"]
    return first + [
        f"- topics: image `{bag.get('image_topic')}`, labels `{bag.get('label_topic')}`",
        f"- model: `{model.get('path')}`" + (f" ({model['arch']})" if model.get("arch") else "")
        + (f" on {model['backend']}" if model.get("backend") else ""),
        f"- label mapping: {report.get('mapping') or 'none (bag ids are the model class ids)'}",
        f"- created: {report.get('created')}",
        "",
    ]


def bags_table(rows: list[dict]) -> list[str]:
    """One line per bag, worst first, failed bags with their reason."""
    lines = ["| bag | mIoU | pixel accuracy | frames evaluated / in bag | dropped | skipped | latency p50 / p95 (ms) "
             "| frames/s | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["bag"].replace("|", "\\|")
        if r["status"] != "ok":
            reason = str(r.get("reason") or "").replace("|", "\\|")
            lines.append(f"| `{name}` | failed | | | | | | | {reason} |")
            continue
        lat = r.get("latency_ms") or {}
        lines.append(f"| `{name}` | {_fmt(r.get('miou'), ' %', 100)} | {_fmt(r.get('pixel_accuracy'), ' %', 100)} "
                     f"| {r.get('frames_evaluated')} / {r.get('frames_total')} | {r.get('frames_dropped')} "
                     f"| {r.get('frames_skipped')} | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} "
                     f"| {_fmt(r.get('fps'))} | |")
    return lines


def markdown(report: dict, files: dict) -> str:
    lat = report.get("latency_ms") or {}
    lines = _header(report) + [
        "| figure | value |",
        "|---|---|",
        f"| mIoU | {_fmt(report.get('miou'), ' %', 100)} |",
        f"| pixel accuracy | {_fmt(report.get('pixel_accuracy'), ' %', 100)} |",
        f"| frames in bag / evaluated | {report.get('frames_total')} / {report.get('frames_evaluated')} |",
        f"| frames dropped (sent, no output) | {report.get('frames_dropped')} |",
        f"| frames skipped | {report.get('frames_skipped')} |",
        f"| throughput | {_fmt(report.get('fps'), ' frames/s')} |",
        f"| latency p50 / p95 / p99 / max | {_fmt(lat.get('p50'))} / {_fmt(lat.get('p95'))} / "
        f"{_fmt(lat.get('p99'))} / {_fmt(lat.get('max'))} ms |",
        "",
        f"Latency is the {report.get('latency_kind', '')}.",
        "",
        "## Per-class IoU",
        "",
        format_table(report),
        "",
    ]
    skipped = report.get("skipped") or {}
    counts = {k: v for k, v in skipped.items() if k not in ("images", "labels", "pairs", "examples") and v}
    lines += ["## Skipped frames", ""]
    if counts:
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in counts.items()]
        if skipped.get("examples"):
            lines += ["", "Examples:", ""] + [f"- {e}" for e in skipped["examples"]]
    else:
        lines.append("None.")
    if several_bags(report):
        lines += ["", "## Bags, worst first", ""] + bags_table(report["bags"])
        if report.get("fps_kind"):
            lines += ["", f"Throughput above: {report['fps_kind']}; per bag: that bag's own frames/s."]
    lines += ["", "## Plots", ""]
    for title, key in (("Per-bag mIoU", "per_bag"), ("Confusion matrix", "confusion"), ("Per-class IoU", "per_class"),
                       ("Latency histogram", "latency_hist"), ("Latency over time", "latency_time"),
                       ("Samples: frame | ground truth | prediction", "samples")):
        if files.get(key):
            lines += [f"### {title}", "", f"![{title}]({Path(files[key]).name})", ""]
    return "\n".join(lines)


def write_report(result: dict, out_dir: str | Path, classes: ClassTable, samples: list | None = None) -> dict:
    """Write the report folder; returns {name: path} of what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(result)
    report.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    series = report.get("latency_series") or []
    files = {"json": out / "report.json", "markdown": out / "report.md",
             "confusion": out / "confusion_matrix.png", "per_class": out / "per_class_iou.png",
             "latency_hist": out / "latency_histogram.png", "latency_time": out / "latency_over_time.png",
             "samples": out / "samples.png", "per_bag": None, "failed": None}
    rows = report.get("bags") or []
    many = several_bags(report)
    if many:
        files["per_bag"] = out / "per_bag_miou.png"
        plot_per_bag_miou(rows, files["per_bag"], miou=report["miou"])
    failed = [r["bag"] for r in rows if r["status"] != "ok"]
    if failed:
        files["failed"] = out / "failed_bags.txt"
        files["failed"].write_text("".join(f"{b}\n" for b in failed))
    plot_confusion(report["confusion_matrix"], classes.names, files["confusion"])
    plot_per_class_iou(report["per_class_iou"], files["per_class"], miou=report["miou"], palette=classes.palette)
    plot_latency(series, files["latency_hist"], files["latency_time"], kind=report.get("latency_kind", ""),
                 x_label=("frame (bags one after another, worst first)" if many else
                          "time since first frame sent (s)" if report.get("mode") == "live" else "frame"))
    if not sample_grid(samples or [], classes, files["samples"]):
        files["samples"] = None
    files["json"].write_text(_dumps(_clean(report)))
    files["markdown"].write_text(markdown(report, files))
    return files


def print_summary(report: dict, out_dir, file=None) -> None:
    file = file or sys.stdout  # looked up at call time: the stream may have been replaced since import
    lat = report.get("latency_ms") or {}
    print(f"{report['mode']}: mIoU {_fmt(report.get('miou'), ' %', 100)}, pixel accuracy "
          f"{_fmt(report.get('pixel_accuracy'), ' %', 100)} on {report['frames_evaluated']} of "
          f"{report['frames_total']} frames ({report['frames_dropped']} dropped, {report['frames_skipped']} "
          f"skipped); {_fmt(report.get('fps'), ' frames/s')}, latency p50 {_fmt(lat.get('p50'))} ms p95 "
          f"{_fmt(lat.get('p95'))} ms; report in {out_dir}", file=file)
    if several_bags(report):
        worst = next((r for r in report["bags"] if r["status"] == "ok"), None)
        print(f"{report['bags_total']} bags, {report['bags_failed']} failed" + (
              f"; worst: {worst['bag']} (mIoU {_fmt(worst.get('miou'), ' %', 100)})" if worst else ""), file=file)
