# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""evaluate-bag: offline scores equal `evaluate` on the same frames; live mode over real DDS into the
segmentation node; mappings; report folder; errors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import dds_env

from seg_perception import bags
from seg_perception.bags import BagError, make_bag
from seg_perception.class_mapping import load_mapping
from seg_perception.classes import CAMVID, DRIVING
from seg_perception.evaluation.bag_evaluation import LabelMapper, evaluate_offline
from seg_perception.evaluation.labelled_images import dataset_frames, evaluate_frames
from seg_perception.evaluation.report import REPORT_KEYS, write_report
from seg_perception.inference.segmenter import Segmenter
from seg_perception.learning.datasets import open_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
START = 1_700_000_000.0
N_FRAMES = 5
CAMVID_TO_DRIVING = REPO / "config" / "mappings" / "camvid_to_driving.yaml"


def sample_dataset(n=None):
    ds = open_dataset("generic", images=SAMPLES / "images", labels=SAMPLES / "labels", classes=CAMVID)
    return ds if n is None else ds.subset(range(n), ds.description)


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "seg_perception.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout,
                          env=env or {**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def segmenter():
    return Segmenter("camvid", device="cpu", threads=2)


@pytest.fixture(scope="module")
def folder_result(segmenter):
    ds = sample_dataset(N_FRAMES)
    return evaluate_frames(segmenter, dataset_frames(ds), classes=ds.classes, total=len(ds), progress=False)


@pytest.fixture(scope="module")
def bag_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "camvid5"
    make_bag(sample_dataset(), out, max_frames=N_FRAMES, fps=2, start_time=START, progress=False)
    return out


@pytest.mark.parametrize("storage,compression", [("mcap", "none"), ("sqlite3", "png")])
def test_offline_equals_folder_evaluation(tmp_path, segmenter, folder_result, storage, compression):
    out = tmp_path / "bag"
    summary = make_bag(sample_dataset(), out, storage=storage, compression=compression, max_frames=N_FRAMES,
                       start_time=START, progress=False)
    result, samples = evaluate_offline(out, summary["image_topic"], summary["label_topic"], segmenter,
                                       progress=False, samples=3)
    assert result["confusion_matrix"] == folder_result["confusion_matrix"]
    assert result["miou"] == folder_result["miou"]
    assert result["per_class_iou"] == folder_result["per_class_iou"]
    assert (result["frames_total"], result["frames_evaluated"], result["frames_dropped"],
            result["frames_skipped"]) == (N_FRAMES, N_FRAMES, 0, 0)
    assert len(samples) == 3
    assert result["latency_ms"]["count"] == N_FRAMES
    assert result["bag"]["storage"] == storage and result["bag"]["sha256"]


def test_report_folder(tmp_path, segmenter, bag_path):
    result, samples = evaluate_offline(bag_path, "/camera/image_raw", "/camera/ground_truth", segmenter,
                                       progress=False)
    files = write_report(result, tmp_path / "report", CAMVID, samples)
    for name in ("report.json", "report.md", "confusion_matrix.png", "per_class_iou.png",
                 "latency_histogram.png", "latency_over_time.png", "samples.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    report = json.loads(files["json"].read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert set(report["per_class_iou"]) == set(CAMVID.names)
    assert report["mode"] == "offline" and report["model"]["sha256"] and report["bag"]["path"] == str(bag_path)
    assert "mIoU" in files["markdown"].read_text()


def test_mapping(tmp_path, segmenter, folder_result):
    """A bag whose label ids differ (id + 100) scores the same once mapped back; unmapped it is refused."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts = bags.typestore()
    path = tmp_path / "other_ids"
    ds = sample_dataset(N_FRAMES)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ic = w.add_connection("/img", bags.IMAGE, typestore=ts)
        lc = w.add_connection("/gt", bags.IMAGE, typestore=ts)
        for i in range(len(ds)):
            rgb, label = ds.read(i)
            st = 10**18 + i * 10**8
            w.write(ic, st, bytes(ts.serialize_cdr(bags.image_msg(ts, rgb, st, "c"), bags.IMAGE)))
            w.write(lc, st, bytes(ts.serialize_cdr(bags.image_msg(ts, label + 100, st, "c", "mono8"), bags.IMAGE)))
    with pytest.raises(BagError, match="--mapping"):
        evaluate_offline(path, "/img", "/gt", segmenter, progress=False)
    mapping = tmp_path / "mapping.yaml"
    entries = "\n".join(f"  {100 + i}: {name}" for i, name in enumerate(CAMVID.names))
    mapping.write_text(f"mapping:\n{entries}\n  111: ignore\n")
    result, _ = evaluate_offline(path, "/img", "/gt", segmenter, mapping=mapping, progress=False)
    assert result["confusion_matrix"] == folder_result["confusion_matrix"]
    assert result["mapping"] == str(mapping)
    # an id the mapping does not list is an error, not a silent ignore
    mapping.write_text(f"mapping:\n{entries}\n")
    with pytest.raises(BagError, match=r"ids \[111\].*does not list"):
        evaluate_offline(path, "/img", "/gt", segmenter, mapping=mapping, progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mapping:\n  3: Lamppost\n")
    with pytest.raises(BagError, match="Lamppost"):
        LabelMapper.load(bad, CAMVID)


def test_cli_offline_and_errors(tmp_path, bag_path):
    # the default (driving) model on CamVid-labelled frames needs a mapping: the class mapping file serves
    r = cli("evaluate-bag", bag_path, "--report", tmp_path / "rep0", "--no-progress")
    assert r.returncode == 2 and "give a --mapping file" in r.stderr.strip().splitlines()[-1]
    r = cli("evaluate-bag", bag_path, "--report", tmp_path / "rep", "--no-progress", "--device", "cpu",
            "--mapping", CAMVID_TO_DRIVING)
    assert r.returncode == 0, r.stderr
    assert "offline: mIoU" in r.stdout
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["frames_evaluated"] == N_FRAMES and set(report["per_class_iou"]) == set(DRIVING.names)
    # the same figure as scoring the folder through the same mapping
    mapping = load_mapping(CAMVID_TO_DRIVING, target=DRIVING)
    ds = sample_dataset(N_FRAMES).mapped(mapping.lut(), DRIVING)
    folder = evaluate_frames(Segmenter("driving", device="cpu", threads=2), dataset_frames(ds), classes=DRIVING,
                             total=len(ds), progress=False)
    assert report["confusion_matrix"] == folder["confusion_matrix"]
    r = cli("evaluate-bag", bag_path, "--report", tmp_path / "rep2", "--label-topic", "/labels", "--no-progress")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "label topic /labels is not in bag" in lines[-1] and "/camera/ground_truth" in lines[-1]
    r = cli("evaluate-bag", tmp_path / "missing", "--report", tmp_path / "rep3")
    assert r.returncode == 2 and "does not exist" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "rep2").exists() and not (tmp_path / "rep3").exists()


def test_cli_corrupt_bag(tmp_path, bag_path):
    import shutil
    trunc = tmp_path / "trunc"
    shutil.copytree(bag_path, trunc)
    f = next(trunc.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[:-5000])
    r = cli("evaluate-bag", trunc, "--report", tmp_path / "rep", "--no-progress")
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr.strip().splitlines()[-1]


def _check_live_report(report: dict, offline: dict) -> None:
    assert report["mode"] == "live"
    assert report["frames_total"] == N_FRAMES
    assert report["frames_received"] == N_FRAMES and report["frames_dropped"] == 0
    assert report["frames_evaluated"] == N_FRAMES
    lat = report["latency_ms"]
    assert lat["count"] == N_FRAMES and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < 30_000
    assert report["fps"] > 0
    # the node runs the same Segmenter: its labels agree with offline inference on (nearly) every pixel
    a, b = np.asarray(report["confusion_matrix"]), np.asarray(offline["confusion_matrix"])
    assert a.sum() == b.sum()
    assert np.abs(a - b).sum() <= 1e-3 * a.sum()


@pytest.mark.parametrize("compression", ["none", "png"])
def test_live_evaluation_over_dds(tmp_path, bag_path, folder_result, monkeypatch, compression):
    """The started node receives every frame replayed at 1 frame/s (a 2 frames/s bag at rate 0.5) and its
    outputs are scored (raw Image, and CompressedImage through the node's compressed input).
    """
    env = dds_env(tmp_path, monkeypatch)
    if compression != "none":
        bag_path = tmp_path / "compressed"
        make_bag(sample_dataset(), bag_path, max_frames=N_FRAMES, fps=2, start_time=START,
                 compression=compression, progress=False)
    rep = tmp_path / "live"
    r = cli("evaluate-bag", bag_path, "--live", "--model", "camvid", "--report", rep, "--no-progress",
            "--startup-timeout", 180,
            "--rate", 0.5, "--node-param", "threads:=2", env=env)
    assert r.returncode == 0, r.stderr + (rep / "node.log").read_text() if (rep / "node.log").exists() else r.stderr
    report = json.loads((rep / "report.json").read_text())
    _check_live_report(report, folder_result)
    assert report["node"]["started"] is True
    for name in ("latency_histogram.png", "latency_over_time.png", "samples.png", "report.md", "node.log"):
        assert (rep / name).is_file(), name


def test_live_with_running_node(tmp_path, bag_path, folder_result, monkeypatch):
    """--no-start-node: evaluate a node someone else started (here: the `segmentation_node` module)."""
    env = dds_env(tmp_path, monkeypatch)
    log = open(tmp_path / "node.log", "wb")
    node = subprocess.Popen([sys.executable, "-m", "seg_perception.ros.node", "--ros-args", "-r",
                             "image:=/camera/image_raw", "-p", "qos_reliability:=reliable", "-p", "threads:=2",
                             "-p", "model:=camvid"],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        r = cli("evaluate-bag", bag_path, "--live", "--no-start-node", "--model", "camvid", "--report",
                tmp_path / "live", "--no-progress", "--startup-timeout", 180, "--rate", 0.5, env=env)
        assert r.returncode == 0, r.stderr
        report = json.loads((tmp_path / "live" / "report.json").read_text())
        _check_live_report(report, folder_result)
        assert report["node"]["started"] is False
        assert node.poll() is None  # left running
    finally:
        node.terminate()
        node.wait(20)
        log.close()


def test_live_node_failure_is_reported(tmp_path, bag_path, monkeypatch):
    env = dds_env(tmp_path, monkeypatch)
    t0 = time.monotonic()
    r = cli("evaluate-bag", bag_path, "--live", "--model", "camvid", "--report", tmp_path / "live", "--no-progress",
            "--node-param", "backend:=nonsense", env=env)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert "segmentation node exited" in line and "nonsense" in line
    assert time.monotonic() - t0 < 120
