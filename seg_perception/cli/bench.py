# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception bench`: per-stage and end-to-end latency and throughput, with the naive pipeline as reference.

1. stages, in one process on the bundled frames at each resolution: receive, resize, inference,
   post-processing, each output, publish (serialisation), whole frames; the node's and the naive
   pipeline's (seg_perception/benchmark/naive.py), then segment_batch of 1, 2 and 4 cameras'
   frames on every backend and precision this machine has;
2. end to end over DDS: the node and the naive pipeline as their own processes, fed 1, 2 and 4
   cameras at --rate Hz; outputs/s, frames answered and stamp-to-labels latency p50/p95/p99.

Ratios are to the naive pipeline measured in the same run. `--markdown docs/performance.md`
writes the tables with the machine they came from; `--json` everything measured.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..benchmark.measure import (
    DEFAULT_CAMERAS,
    DEFAULT_RESOLUTIONS,
    BenchError,
    machine,
    parse_counts,
    parse_resolutions,
    sample_frames,
)

#: --quick: what fits in about two minutes on two cores.
QUICK = dict(repeats=2, seconds=4.0, warmup=2.0, e2e_resolutions="1280x720", e2e_cameras="1,2")
FULL = dict(repeats=8, seconds=10.0, warmup=3.0)


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="per-stage and end-to-end latency and throughput, against a naive pipeline",
                       description="Per-stage and end-to-end latency and throughput of the node, with the naive "
                                   "pipeline a user writes first as the reference (ratios from the same run).",
                       epilog="The full run takes about 10 minutes on two cores; --quick about 2. Run it on an "
                              "otherwise idle machine: every process competes for the same cores.")
    p.add_argument("--resolutions", help="camera resolutions WxH, comma-separated (default "
                   + ",".join(f"{w}x{h}" for w, h in DEFAULT_RESOLUTIONS) + "; --quick: 1280x720 end to end)")
    p.add_argument("--cameras", help="camera counts, comma-separated (default 1,2,4; --quick: 1,2 end to end)")
    p.add_argument("--seconds", type=float, help="measured seconds per end-to-end window (default 10; --quick 4)")
    p.add_argument("--warmup", type=float, help="seconds of frames before each window (default 3; --quick 2)")
    p.add_argument("--rate", type=float, default=30.0, help="frames per second per camera (default 30)")
    p.add_argument("--saturation-rate", type=float, default=90.0,
                   help="also send one camera at this rate, more than either pipeline takes, so that outputs/s "
                        "is each one's throughput (default 90; 0 = off)")
    p.add_argument("--repeats", type=int, help="passes over the bundled frames per stage (default 8; --quick 2)")
    p.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True,
                   help="time each stage in one process (default on)")
    p.add_argument("--end-to-end", action=argparse.BooleanOptionalAction, default=True,
                   help="run the node and the naive pipeline over DDS (default on)")
    p.add_argument("--all-outputs", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure one camera end to end with every output subscribed (default on)")
    p.add_argument("--camera-phase", choices=("sync", "staggered"), default="sync",
                   help="several cameras' frames at once (sync, a triggered rig) or spread over the frame period")
    p.add_argument("--quick", action="store_true", help="fewer repeats, shorter windows, 1280x720 and 1 and 2 "
                                                        "cameras end to end: about two minutes")
    p.add_argument("--model", default="driving", help="a shipped model by name or a .pt checkpoint with its "
                                                      ".onnx next to it (default driving)")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra parameter for the node under test (repeatable), e.g. precision:=fp32")
    p.add_argument("--startup-timeout", type=float, default=120.0,
                   help="seconds a pipeline may take to come up and answer its first frame (default 120)")
    p.add_argument("--logs", metavar="DIR", help="keep the node's and the naive processes' logs (and ROS_HOME) "
                                                 "in DIR (default: a temporary folder, removed)")
    p.add_argument("--markdown", metavar="FILE", help="write the tables and the machine as Markdown (a "
                                                      "docs/performance.md)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _options(args) -> dict:
    base = QUICK if args.quick else FULL
    res = parse_resolutions(args.resolutions) if args.resolutions else list(DEFAULT_RESOLUTIONS)
    cams = parse_counts(args.cameras) if args.cameras else list(DEFAULT_CAMERAS)
    e2e_res = res if args.resolutions or not args.quick else parse_resolutions(base["e2e_resolutions"])
    e2e_cams = cams if args.cameras or not args.quick else parse_counts(base["e2e_cameras"])
    for param in args.node_param:
        if ":=" not in param:
            raise BenchError(f"node parameter '{param}' is not of the form name:=value")
    if not args.rate > 0:
        raise BenchError("--rate must be positive")
    return dict(resolutions=res, cameras=cams, e2e_resolutions=e2e_res, e2e_cameras=e2e_cams,
                repeats=args.repeats or base["repeats"], seconds=args.seconds or base["seconds"],
                warmup=args.warmup if args.warmup is not None else base["warmup"])


def run_stages(args, opts: dict, res: dict) -> None:
    from ..benchmark import report
    from ..benchmark.naive import NaivePipeline
    from ..benchmark.stages import backends, batch_rows, stage_table
    notes = res["notes"]
    default, all_backends = backends(args.model, max(opts["cameras"]), notes)
    naive = NaivePipeline(args.model)
    _say(f"stages: the bundled frames x {opts['repeats']} passes per stage; node default {default.name}; "
         f"backends {', '.join(b.name for b in all_backends)}")
    naive_fps = []
    backend_rows = res["backends"]
    for wh in opts["resolutions"]:
        frames = sample_frames(wh)
        t = stage_table(frames, default.segmenter, naive, opts["repeats"])
        res["stages"].append(t)
        _say(f"\n### {report.stage_title(t)}\n")
        for line in report.stage_lines(t):
            _say(line)
        seg_row = next(r for r in t["rows"] if r["stage"].startswith("segment"))
        naive_fps.append([list(wh), seg_row["naive"]["fps"]])
        res["naive_segment_fps"] = naive_fps
        _say("\n" + report.BACKEND_HEADER)
        for b in all_backends:
            for row in batch_rows(frames, b, opts["cameras"], opts["repeats"]):
                backend_rows.append(row)
                _say(report.backend_line(row, {tuple(k): v for k, v in naive_fps}))


def run_e2e(args, opts: dict, res: dict) -> None:
    from ..benchmark import report
    from ..benchmark.end_to_end import run_end_to_end
    printed = [False]
    notes: list[str] = []

    def on_result(row, rows):
        if not printed[0]:
            _say("\n" + report.E2E_HEADER)
            printed[0] = True
        _say(report.e2e_line(row, rows, notes))
        if row.get("note"):
            _say(f"  note {len(notes)}: {row['note']}")

    res["end_to_end"] = run_end_to_end(
        opts["e2e_resolutions"], opts["e2e_cameras"], seconds=opts["seconds"], rate=args.rate,
        warmup=opts["warmup"], model=args.model, node_params=args.node_param, all_outputs=args.all_outputs,
        phase=args.camera_phase, startup_timeout=args.startup_timeout, saturation_rate=args.saturation_rate,
        on_result=on_result, say=_say,
        logs=args.logs)


def run(args) -> int:
    """The subcommand; a BenchError is one line on stderr and exit status 2."""
    try:
        return _run(args)
    except BenchError as exc:
        print(f"seg-perception bench: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from ..benchmark import report
    t0 = time.monotonic()
    opts = _options(args)
    argv, skip = [], False
    for a in getattr(args, "argv", None) or sys.argv[1:]:  # the command to reproduce, without output files
        if skip or a in ("--json", "--markdown") or a.startswith(("--json=", "--markdown=")):
            skip = a in ("--json", "--markdown")
            continue
        argv.append(a)
    res = {"machine": machine(), "settings": {**{k: v for k, v in opts.items()}, "rate": args.rate,
                                              "model": args.model, "node_params": args.node_param,
                                              "camera_phase": args.camera_phase,
                                              "command": "seg-perception " + shlex.join(argv)},
           "notes": [], "stages": [], "backends": [], "end_to_end": []}
    m = res["machine"]
    _say(f"seg-perception bench on {m['cpu']} ({m['cores']} cores{', ' + m['gpu'] if m['gpu'] else ''}), load "
         f"average {m['load_average'][0]}; model {args.model}")
    if m["load_average"][0] > 0.5 * (m["cores"] or 1):
        _say("warning: the machine is busy (load average above half its cores): the figures will be slower and "
             "noisier than on an idle one")
    try:
        if args.stages:
            run_stages(args, opts, res)
        if args.end_to_end:
            run_e2e(args, opts, res)
    finally:
        res["wall_s"] = time.monotonic() - t0
        for note in res["notes"]:
            _say(f"note: {note}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
            _say(f"wrote {args.json}")
        if args.markdown:
            Path(args.markdown).write_text(report.merged(report.document(res), Path(args.markdown)))
            _say(f"wrote {args.markdown}")
    _say(f"done in {res['wall_s'] / 60:.1f} min")
    measured = [r for r in res["end_to_end"] if not r.get("note")]
    return 0 if (res["stages"] or measured) else 1


def main(argv=None) -> int:
    """`python -m seg_perception.cli.bench` / benchmarks/pipeline.py: the bench without the other subcommands."""
    parser = argparse.ArgumentParser(prog="seg-perception")
    add_bench(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["bench", *argv])
    args.argv = ["bench", *argv]
    try:
        return run(args)
    except KeyboardInterrupt:
        print("seg-perception bench: interrupted", file=sys.stderr)
        return 130


BENCH_COMMANDS = {"bench": (add_bench, run)}

if __name__ == "__main__":
    sys.exit(main())
