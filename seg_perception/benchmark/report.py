# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The benchmark's tables (Markdown, printed as the run goes and written whole to --markdown) and its text."""
from __future__ import annotations

from pathlib import Path


def ms(v) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def triple(s) -> str:
    """p50 / p95 / p99 of a measure.summary, or a dash."""
    if not s or not s.get("n"):
        return "–"
    return f"{ms(s['p50'])} / {ms(s['p95'])} / {ms(s['p99'])}"


def rate(v) -> str:
    return "–" if v is None else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def ratio(a, b) -> str:
    """The ratio a ÷ b, or a dash where either is missing or too small to mean anything (a skipped step)."""
    return "–" if not a or not b or min(a, b) < 0.01 else f"{a / b:.1f}×"


def size(wh) -> str:
    return f"{wh[0]}x{wh[1]}"


# -- stages ------------------------------------------------------------------------------------

STAGE_HEADER = ("| stage | node ms p50 / p95 / p99 | node frames/s | naive ms p50 / p95 / p99 | naive frames/s "
                "| naive ÷ node (p50) |\n|---|---|---|---|---|---|")


def stage_title(t: dict) -> str:
    return (f"{size(t['resolution'])}: node on {t['provider']}, network input {size(t['network_size'])}; "
            f"naive on ONNX Runtime fp32, fixed {size(t['naive_size'])} input")


def stage_lines(t: dict) -> list[str]:
    lines = [STAGE_HEADER]
    for r in t["rows"]:
        a, b = r["node"], r["naive"]
        ra = ratio(b["p50"], a["p50"]) if a and b and a.get("n") and b.get("n") else "–"
        lines.append(f"| {r['stage']} | {triple(a)} | {rate(a and a['fps'])} | {triple(b)} | "
                     f"{rate(b and b['fps'])} | {ra} |")
    return lines


# -- backends ----------------------------------------------------------------------------------

BACKEND_HEADER = ("| provider | resolution | network input | cameras (batch) | ms per batch p50 / p95 / p99 "
                  "| ms per frame (p50) | frames/s | × naive frames/s |\n|---|---|---|---|---|---|---|---|")


def backend_line(r: dict, naive_fps: dict) -> str:
    s = r["batch_ms"]
    per_frame = s["p50"] / r["cameras"] if s.get("n") else None
    name = r["provider"] + (" (node default)" if r["default"] else "")
    return (f"| {name} | {size(r['resolution'])} | {size(r['network_size'])} | {r['cameras']} | {triple(s)} | "
            f"{ms(per_frame)} | {rate(s['fps'])} | {ratio(s['fps'], naive_fps.get(tuple(r['resolution'])))} |")


# -- end to end --------------------------------------------------------------------------------

E2E_HEADER = ("| pipeline | outputs subscribed | resolution | cameras | frames sent/s | outputs/s | frames answered "
              "| stamp-to-labels ms p50 / p95 / p99 | CPU cores busy | × naive outputs/s "
              "| naive ÷ node latency (p50) |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _naive_row(r: dict, rows: list[dict]) -> dict | None:
    return next((n for n in rows if n["pipeline"] == "naive" and n["cameras"] == r["cameras"]
                 and n["resolution"] == r["resolution"] and n.get("rate") == r.get("rate") and not n.get("note")),
                None)


def e2e_line(r: dict, rows: list[dict], notes: list[str]) -> str:
    what = "labels only" if r["subscribed"] == "labels" else "all five"
    if r["pipeline"] == "naive":
        what = "all five (always made)"
    head = f"| {r['pipeline']} | {what} | {size(r['resolution'])} | {r['cameras']} |"
    if r.get("note"):
        notes.append(r["note"])
        return head + f" not measured: note {len(notes)} | | | | | | |"
    naive = _naive_row(r, rows) if r["pipeline"] == "node" else None
    lat = r["latency_ms"]
    return (head + f" {rate(r['sent_per_s'])} | {rate(r['outputs_per_s'])} | "
            f"{100 * (r['answered_fraction'] or 0):.0f} % | {triple(lat)} | {r['cpu_cores']:.2f} | "
            f"{ratio(r['outputs_per_s'], naive and naive['outputs_per_s'])} | "
            f"{ratio(naive and naive['latency_ms']['p50'], lat['p50'])} |")


def e2e_lines(rows: list[dict], notes: list[str]) -> list[str]:
    return [E2E_HEADER] + [e2e_line(r, rows, notes) for r in rows]


# -- the whole document ------------------------------------------------------------------------------

def machine_lines(m: dict) -> list[str]:
    gpu = m.get("gpu") or "none"
    int8 = f" ({m['int8_dot_product']})" if m.get("int8_dot_product") else " (no int8 dot product)"
    return [
        "| | |", "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores{int8} |",
        f"| GPU | {gpu} |",
        f"| memory | {m['memory_gb']} GB |",
        f"| OS | {m['os']}, Python {m['python']}, ROS 2 {m['ros_distro']} ({m['rmw']}) |",
        f"| libraries | ONNX Runtime {m['onnxruntime']} ({', '.join(m['onnxruntime_providers'])}), "
        f"PyTorch {m['torch']}, OpenCV {m['opencv']}, numpy {m['numpy']} |",
        f"| load average at the start | {' / '.join(str(v) for v in m['load_average'])} |",
        f"| date | {m['date']} |",
    ]


def _own_cpu(rows: list[dict]) -> str:
    used = [r["bench_cpu_cores"] for r in rows if r.get("bench_cpu_cores") is not None]
    return f" ({min(used):.2f} to {max(used):.2f} cores here)" if used else ""


def document(res: dict) -> str:
    """docs/performance.md: the machine, the end-to-end table, the stage tables, the backends, the notes."""
    s = res["settings"]
    notes = list(res.get("notes", []))
    out = ["# Performance", "",
           f"Measured with `{s['command']}` ({res['wall_s'] / 60:.0f} min). The reference every ratio is taken "
           "to is the naive pipeline measured in the same run: the segmentation node a user writes first with the "
           "same model (`seg_perception/benchmark/naive.py`: ONNX Runtime per frame in the subscription callback, "
           "fixed 480x360 resize, numpy normalisation, softmax and argmax, every output made and published on "
           "every frame). Figures depend on the machine; rerun `seg-perception bench` on yours.", "",
           "## Machine", ""] + machine_lines(res["machine"])
    if res.get("end_to_end"):
        out += ["", f"## End to end over DDS, {s['rate']:g} Hz per camera", "",
                f"Each camera publishes rgb8 frames at {s['rate']:g} Hz (best effort, stamped when sent); the "
                "latency is the labels' receipt time minus that stamp (same host, same clock), over "
                f"{s['seconds']:g} s after a warm-up. The node runs with the shipped parameters "
                "(`config/drive.yaml`: backend, precision and input size auto) and makes only the outputs that "
                "have subscribers; the naive pipeline makes all five whatever is subscribed, one process per "
                "camera. A frame is answered when its labels arrive; the rest were dropped as the pipeline fell "
                "behind (both keep only the newest frame). CPU cores busy: the pipeline's processes' CPU time over "
                "the window; the camera publishers and the receiving run in the benchmark's own process"
                + _own_cpu(res["end_to_end"]) + ". Rows sent faster than the camera rate (frames sent/s) feed one "
                "camera more frames than either pipeline can take: their outputs/s is the pipeline's throughput, "
                "which the camera's own rate does not cap.", ""]
        out += e2e_lines(res["end_to_end"], notes)
    if res.get("stages"):
        out += ["", "## Stages per frame, in one process", "",
                "Each stage timed alone on the bundled frames resized to the resolution. Receiving is rclpy's "
                "deserialisation and the conversion to numpy; publishing is the serialisation rclpy's publish "
                "does in the publishing process. `segment` is resize, inference and post-processing together; a "
                "whole frame is receive to publish."]
        for t in res["stages"]:
            out += ["", f"### {stage_title(t)}", ""] + stage_lines(t)
    if res.get("backends"):
        naive_fps = res.get("naive_segment_fps", {})
        out += ["", "## Inference by backend and number of cameras", "",
                "`segment_batch` on one frame per camera (camera-size frames in, labels at camera size out), as "
                "the node runs several cameras; × naive is the frames/s over the naive pipeline's resize, "
                "inference and post-processing of one frame at that resolution.", "", BACKEND_HEADER]
        out += [backend_line(r, {tuple(k): v for k, v in naive_fps}) for r in res["backends"]]
    if notes:
        out += ["", "## Notes", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def merged(generated: str, path: Path) -> str:
    """The file's text with what lies between its bench markers replaced by `generated` (whose own
    title is dropped); a file without the markers is replaced whole. So a hand-written page can
    carry the measured tables and be brought up to date by running the benchmark again.
    """
    old = path.read_text() if path.is_file() else ""
    if BEGIN not in old or END not in old:
        return generated
    body = generated.split("\n", 1)[1].lstrip("\n") if generated.startswith("# ") else generated
    head, rest = old.split(BEGIN, 1)
    return head + BEGIN + "\n" + body + END + rest.split(END, 1)[1]
