# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""evaluate-bag over many bags: finding them, the same figures in this process and as Ray tasks, pooled
figures from one confusion matrix, failing bags reported in their rows while the others finish, time limits,
and clear errors for an unreachable cluster. One local Ray instance serves the whole session (ray_local).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from seg_perception.bags import BagError, make_bag
from seg_perception.classes import CAMVID
from seg_perception.cli import main as cli
from seg_perception.evaluation import fleet
from seg_perception.evaluation.bag_evaluation import evaluate_offline
from seg_perception.evaluation.metrics import scores
from seg_perception.learning.datasets import open_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
START = 1_700_000_000.0
GOOD = {"drive_a": range(0, 3), "drive_b": range(3, 7), "drive_c": range(7, 10)}
FIGURES = ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy", "confusion_matrix", "frames_total",
           "frames_evaluated", "frames_dropped", "frames_skipped", "skipped")


def frames(indices):
    ds = open_dataset("generic", images=SAMPLES / "images", labels=SAMPLES / "labels", classes=CAMVID)
    return ds.subset(indices, ds.description)


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory):
    """Three small real bags in nested folders, a truncated one and one without the label topic."""
    root = tmp_path_factory.mktemp("fleet")
    for k, (name, idx) in enumerate(GOOD.items()):
        make_bag(frames(idx), root / f"car{k % 2}" / name, fps=2, start_time=START + 100 * k, progress=False)
    trunc = root / "car1" / "truncated"
    shutil.copytree(root / "car0" / "drive_a", trunc)
    data = next(trunc.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:-5000])
    make_bag(frames(range(10, 12)), root / "car0" / "no_labels", fps=2, start_time=START, label_topic="/other",
             progress=False)
    return root


def run_cli(*args) -> int:
    return cli.main(["evaluate-bag", *map(str, args)])


def common(report_dir, *extra) -> list:
    return ["--model", "camvid", "--device", "cpu", "--threads", "1", "--report", report_dir, "--no-progress",
            *extra]


def test_find_bags(fleet_dir, tmp_path):
    found = fleet.find_bags([fleet_dir])
    names = [Path(p).name for p in found]
    assert sorted(names) == ["drive_a", "drive_b", "drive_c", "no_labels", "truncated"]
    assert not any(p.endswith(".mcap") for p in found)  # a bag's data file is not a bag of its own
    bag_list = tmp_path / "bags.txt"
    rel = os.path.relpath(fleet_dir / "car0" / "drive_a", tmp_path)
    bag_list.write_text(f"# drives of today\n{rel}\n\n{fleet_dir / 'car1'}  # a folder of bags\n"
                        f"{fleet_dir / 'car0' / 'drive_a'}\nmissing_drive\n")
    listed = fleet.find_bags([bag_list])
    assert [Path(p).name for p in listed] == ["drive_a", "drive_b", "truncated", "missing_drive"]
    single = next((fleet_dir / "car0" / "drive_a").glob("*.mcap"))
    assert fleet.find_bags([single]) == [str(single)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="holds no bag"):
        fleet.find_bags([tmp_path / "empty"])
    (tmp_path / "none.txt").write_text("# nothing\n")
    with pytest.raises(BagError, match="names no bag"):
        fleet.find_bags([tmp_path / "none.txt"])


def _check_fleet_report(report: dict, fleet_dir: Path) -> None:
    rows = report["bags"]
    assert report["bags_total"] == 6 and report["bags_failed"] == 3
    failed = {Path(r["bag"]).name: r["reason"] for r in rows if r["status"] == "failed"}
    assert "corrupt or truncated" in failed["truncated"]
    assert "label topic /camera/ground_truth is not in bag" in failed["no_labels"]
    assert "does not exist" in failed["missing_drive"]
    assert [r["status"] for r in rows] == ["failed"] * 3 + ["ok"] * 3  # failed first, then worst mIoU first
    ok = rows[3:]
    assert [r["miou"] for r in ok] == sorted(r["miou"] for r in ok)
    assert {Path(r["bag"]).name: r["frames_evaluated"] for r in ok} == {n: len(i) for n, i in GOOD.items()}
    # pooled over all frames: one confusion matrix, not a mean of the bags' mIoUs
    pooled = sum(np.asarray(r["confusion_matrix"]) for r in ok)
    assert report["confusion_matrix"] == pooled.tolist()
    assert report["miou"] == pytest.approx(scores(pooled)["miou"], abs=1e-12)
    assert report["miou"] != pytest.approx(np.mean([r["miou"] for r in ok]), abs=1e-6)
    assert report["frames_evaluated"] == 10 and report["latency_ms"]["count"] == 10
    for r in ok:
        assert r["latency_ms"]["count"] == r["frames_evaluated"] and r["sha256"]


def test_local_and_ray_give_the_same_figures(ray_local, fleet_dir, tmp_path, capsys):
    """The same bags (three good, three failing) in this process and as Ray tasks: identical figures, every
    failure in its row, exit status 1; each Ray worker loaded the model once for all its bags.
    """
    bag_list = tmp_path / "bags.txt"
    bag_list.write_text(f"{fleet_dir}\n{tmp_path / 'missing_drive'}\n")
    assert run_cli(bag_list, *common(tmp_path / "local")) == 1
    err = capsys.readouterr().err
    assert "3 of 6 bags failed" in err and "truncated failed: bag" in err
    assert run_cli(bag_list, *common(tmp_path / "ray", "--engine", "ray")) == 1
    local = json.loads((tmp_path / "local" / "report.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "report.json").read_text())
    _check_fleet_report(local, fleet_dir)
    _check_fleet_report(on_ray, fleet_dir)
    for key in FIGURES:
        assert on_ray[key] == local[key], key
    for a, b in zip(local["bags"], on_ray["bags"]):
        assert a["bag"] == b["bag"] and a["reason"] == b["reason"]
        for key in FIGURES[:-1]:
            assert a.get(key) == b.get(key), (a["bag"], key)
    assert local["engine"]["name"] == "local" and on_ray["engine"]["name"] == "ray"
    ok = [r for r in on_ray["bags"] if r["status"] == "ok"]
    workers = {(r["worker"]["host"], r["worker"]["pid"]) for r in ok}
    assert sum(not r["worker"]["model_cached"] for r in ok) == len(workers)  # one load per worker
    for name in ("report.md", "failed_bags.txt", "per_bag_miou.png", "samples.png", "confusion_matrix.png"):
        assert (tmp_path / "ray" / name).is_file(), name
    assert (tmp_path / "ray" / "failed_bags.txt").read_text().splitlines() == [r["bag"] for r in on_ray["bags"][:3]]
    md = (tmp_path / "ray" / "report.md").read_text()
    assert "## Bags, worst first" in md and "corrupt or truncated" in md


def test_one_bag_report_keeps_its_keys(fleet_dir, tmp_path):
    """A single bag gives the report a single-bag run always gave, plus its row under `bags`."""
    from seg_perception.evaluation.report import FLEET_KEYS, REPORT_KEYS
    bag = fleet_dir / "car0" / "drive_a"
    assert run_cli(bag, *common(tmp_path / "one")) == 0
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert set(REPORT_KEYS) | set(FLEET_KEYS) <= set(report)
    assert report["bag"]["path"] == str(bag) and len(report["bags"]) == 1
    assert report["bags"][0]["confusion_matrix"] == report["confusion_matrix"]
    # and a single bad bag is an error of the command, as before
    assert run_cli(fleet_dir / "car1" / "truncated", *common(tmp_path / "bad")) == 2
    assert not (tmp_path / "bad" / "report.json").exists()


def test_bag_timeout(fleet_dir):
    seg, _ = fleet.segmenter_for(fleet.EvalJob(model="camvid", device="cpu", threads=1))
    with pytest.raises(BagError, match=r"timed out after 1e-09 s \(0 of 3 frames done\)"):
        evaluate_offline(fleet_dir / "car0" / "drive_a", "/camera/image_raw", "/camera/ground_truth", seg,
                         progress=False, timeout=1e-9)


def test_a_hung_ray_task_is_stopped_and_the_others_finish(ray_local, fleet_dir, tmp_path):
    """A 'bag' that blocks on open (a FIFO, as a dead network mount would) cannot see its time limit; its task
    is cancelled and its worker killed after the grace period, and the good bag still comes back.
    """
    from seg_perception.evaluation import ray_engine
    fifo = tmp_path / "stuck.mcap"
    os.mkfifo(fifo)
    job = fleet.EvalJob(model="camvid", device="cpu", threads=1, timeout=5.0, samples=0)
    t0 = time.monotonic()
    runs, interrupted = ray_engine.run_ray([str(fifo), str(fleet_dir / "car0" / "drive_a")], job,
                                           progress=False, grace_s=1.0)
    assert not interrupted and time.monotonic() - t0 < 60
    assert not runs[0].ok and "timed out after 5 s and did not stop by itself" in runs[0].reason
    assert runs[1].ok and runs[1].frames == 3


def test_ray_failure_reasons():
    from ray import exceptions as rx

    from seg_perception.evaluation.ray_engine import ray_failure
    assert "worker died" in ray_failure(rx.WorkerCrashedError(), stopped=False, timeout=None)
    assert "timed out after 5 s" in ray_failure(rx.TaskCancelledError(), stopped=True, timeout=5.0)
    assert "left the cluster" in ray_failure(rx.NodeDiedError("node gone"), stopped=False, timeout=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_is_a_clear_error(fleet_dir, tmp_path, capsys):
    t0 = time.monotonic()
    assert run_cli(fleet_dir, *common(tmp_path / "rep", "--engine", "ray", "--address",
                                      f"127.0.0.1:{_free_port()}")) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot reach the Ray cluster at 127.0.0.1:" in line and "ray start --head" in line
    assert time.monotonic() - t0 < 30 and not (tmp_path / "rep").exists()
    assert run_cli(fleet_dir, *common(tmp_path / "rep", "--address", "10.0.0.1:6379")) == 2
    assert "--address belong to --engine ray" in capsys.readouterr().err
