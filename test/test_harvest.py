# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""harvest: frames picked from a real bag (made from the bundled CamVid frames) by the shipped model's
uncertainty, checked against the model's own outputs, written in the generic layout, and trained on.
"""
from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest
from conftest import SAMPLES

from seg_perception import bags
from seg_perception.bags import make_bag
from seg_perception.classes import CAMVID, ClassTable
from seg_perception.cli.main import main
from seg_perception.inference.checkpoint import load_checkpoint
from seg_perception.inference.segmenter import Segmenter, shipped_model_path
from seg_perception.learning.datasets import open_dataset, read_label, read_rgb
from seg_perception.learning.harvest import HarvestOptions, harvest, open_sources
from seg_perception.learning.training import TrainConfig, Trainer

START_NS = 1_700_000_000 * 10**9
FRAME_NS = 100_000_000  # make-bag's default 10 frames/s
TOPIC = "/camera/image_raw"
#: every frame may be picked: no time bins, no minimum gap, no duplicate check
UNCONSTRAINED = dict(bins=1, min_gap_s=0.0, dedup_threshold=0.0)


def sample_dataset():
    return open_dataset("generic", images=SAMPLES / "images", labels=SAMPLES / "labels", classes=CAMVID)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("bags") / "drive"
    make_bag(sample_dataset(), out, start_time=START_NS / 1e9, progress=False)
    return out


@pytest.fixture(scope="module")
def seg():
    return Segmenter(shipped_model_path("camvid"))


@pytest.fixture(scope="module")
def truth(seg):
    """The model's own figures for each sample frame (frame i has stamp START + i/10 s in the bag)."""
    ds = sample_dataset()
    rows = []
    for i in range(len(ds)):
        rgb, _ = ds.read(i)
        plain, mirrored = seg.segment(rgb, flip_tta=False), seg.segment(cv2.flip(rgb, 1), flip_tta=False)
        probs = seg.probabilities(rgb, flip_tta=False).astype(np.float64)
        assert probs.shape[0] == seg.classes.num_classes and np.allclose(probs.sum(0), 1, atol=1e-4)
        entropy = -(probs * np.log(np.maximum(probs, 1e-12))).sum(0) / np.log(probs.shape[0])
        rows.append({"name": f"drive_{START_NS + i * FRAME_NS}", "rgb": rgb, "labels": plain.labels,
                     "confidence": plain.confidence.mean() / 255, "entropy": entropy.mean(),
                     "flip": np.mean(plain.labels != cv2.flip(mirrored.labels, 1))})
    return rows


def read_csv(out):
    with open(out / "harvest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def least_confident(bag, seg, tmp_path_factory):
    out = tmp_path_factory.mktemp("harvest") / "least_confident"
    result = harvest(open_sources([bag], TOPIC), out, seg,
                     HarvestOptions(count=3, rank_by="confidence", **UNCONSTRAINED), progress=False)
    return out, result


def test_picks_the_least_confident_frames(least_confident, truth, seg, bag):
    out, result = least_confident
    expected = sorted(truth, key=lambda t: t["confidence"])[:3]
    rows = read_csv(out)
    assert [r["name"] for r in rows] == [t["name"] for t in expected]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3] and result["scored"] == 12
    for row, t in zip(rows, expected):
        assert (row["bag"], row["topic"]) == (str(bag), TOPIC)
        assert float(row["mean_confidence"]) == pytest.approx(t["confidence"], abs=1e-6)
        assert float(row["entropy"]) == pytest.approx(t["entropy"], abs=1e-6)
        assert float(row["flip_disagreement"]) == pytest.approx(t["flip"], abs=1e-6)
        assert float(row["score"]) == pytest.approx(1 - t["confidence"], abs=1e-6)
        assert row["stamp"] == bags.stamp_name(int(row["name"].split("_")[1]))
        assert row["reason"].startswith(f"rank {row['rank']}/12 by confidence uncertainty")
        # the frame as recorded, and the model's labels as pre-labels (mono8, the image's size)
        np.testing.assert_array_equal(read_rgb(out / "images" / f"{t['name']}.png"), t["rgb"])
        np.testing.assert_array_equal(read_label(out / "labels" / f"{t['name']}.png"), t["labels"])
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(t["name"] for t in expected)
    assert ClassTable.from_yaml(out / "classes.yaml") == seg.classes


def test_combined_score_and_csv(bag, seg, truth, tmp_path):
    out = tmp_path / "all"
    harvest(open_sources([bag], TOPIC), out, seg, HarvestOptions(count=12, **UNCONSTRAINED), progress=False)
    rows = {r["name"]: r for r in read_csv(out)}
    assert len(rows) == 12
    uncertainty = {"confidence": np.array([1 - t["confidence"] for t in truth]),
                   "entropy": np.array([t["entropy"] for t in truth]), "flip": np.array([t["flip"] for t in truth])}
    # combined: the mean over the measures of the share of frames at most as uncertain
    expected = np.mean([[np.mean(v <= x) for x in v] for v in uncertainty.values()], axis=0)
    for t, score in zip(truth, expected):
        assert float(rows[t["name"]]["score"]) == pytest.approx(score, abs=1e-6)
    ranked = sorted(rows.values(), key=lambda r: int(r["rank"]))
    assert [float(r["score"]) for r in ranked] == sorted((float(r["score"]) for r in ranked), reverse=True)


def test_picks_are_spread_over_time(bag, seg, truth, tmp_path):
    # three equal time bins over the 1.1 s drive: frames 0-3, 4-7 and 8-11; each gives its least confident
    result = harvest(open_sources([bag], TOPIC), tmp_path / "spread", seg,
                     HarvestOptions(count=3, min_gap_s=0.0, dedup_threshold=0.0, rank_by="confidence"),
                     progress=False)
    expected = {min(truth[b * 4:(b + 1) * 4], key=lambda t: t["confidence"])["name"] for b in range(3)}
    assert {f.name for f in result["picked"]} == expected
    # a minimum gap keeps picks apart
    result = harvest(open_sources([bag], TOPIC), tmp_path / "gap", seg,
                     HarvestOptions(count=12, bins=1, min_gap_s=0.35, dedup_threshold=0.0), progress=False)
    stamps = sorted(f.stamp_ns for f in result["picked"])
    assert len(stamps) >= 3 and min(np.diff(stamps)) >= 350_000_000
    assert result["passed_over"]["within --min-gap of a pick"] == 12 - len(stamps)


def test_harvest_output_trains(least_confident, tmp_path):
    """The loop's next step: fine-tune the shipped model on old labelled frames plus the harvested ones."""
    out, _ = least_confident
    harvested = dict(layout="generic", images=str(out / "images"), labels=str(out / "labels"),
                     classes=str(out / "classes.yaml"))
    # frames are named <bag>_<stamp>, so the bag is the drive (for held-out drives in training)
    assert open_dataset(**harvested).drives == ["drive"] * 3
    cfg = TrainConfig.from_dict(dict(
        classes=str(out / "classes.yaml"), init_from=str(shipped_model_path("camvid")),
        datasets=[dict(name="camvid", layout="generic", images=str(SAMPLES / "images"),
                       labels=str(SAMPLES / "labels"), classes="camvid", max_images=2),
                  dict(name="harvested", **harvested)],
        max_steps=2, batch_size=2, crop=(128, 96), scale=(0.3, 0.3), hflip=0.0, jitter=0.0, warmup_epochs=0.0,
        lr=5e-4, threads=2, out=str(tmp_path / "run")))
    result = Trainer(cfg, progress=False, log=lambda *_: None).run()
    assert result["steps"] == 2
    assert all(math.isfinite(row["train_loss"]) for row in result["history"])
    _, info = load_checkpoint(tmp_path / "run" / "best.pt")
    assert info.classes.names == CAMVID.names and info.training["fine_tuned_from"]["checkpoint"] == "camvid_lraspp.pt"


def write_camera_bag(path, frames, topic="/cam/image"):
    """frames: (stamp ns, rgb) -> a bag with one raw camera topic and a CompressedImage twin."""
    from rosbags.rosbag2 import Writer
    ts = bags.typestore()
    with Writer(path, version=9) as w:
        raw = w.add_connection(topic, bags.IMAGE, typestore=ts)
        twin = w.add_connection(bags.compressed_topic(topic), bags.COMPRESSED, typestore=ts)
        for stamp, rgb in frames:
            w.write(raw, stamp, bytes(ts.serialize_cdr(bags.image_msg(ts, rgb, stamp, "cam"), bags.IMAGE)))
            w.write(twin, stamp, bytes(ts.serialize_cdr(bags.compressed_msg(ts, rgb, stamp, "cam", "jpeg"),
                                                        bags.COMPRESSED)))


def test_near_duplicate_is_picked_once(seg, tmp_path):
    ds = sample_dataset()
    a, b, c = (ds.read(i)[0] for i in (0, 6, 11))
    stamps = [10**18 + i * 10**9 for i in range(4)]
    write_camera_bag(tmp_path / "stop", list(zip(stamps, [a, b, a, c])))  # the car stood still: a again
    sources = open_sources([tmp_path / "stop"])  # the only camera; its /compressed twin is the same one
    assert [s.topic for s in sources] == ["/cam/image"]
    result = harvest(sources, tmp_path / "out", seg, HarvestOptions(count=4, bins=1, min_gap_s=0.0), progress=False)
    names = {f.name for f in result["picked"]}
    assert len(names) == 3 and {f"stop_{stamps[1]}", f"stop_{stamps[3]}"} <= names
    assert len(names & {f"stop_{stamps[0]}", f"stop_{stamps[2]}"}) == 1
    assert result["passed_over"] == {"near-duplicate of a pick": 1}
    assert sorted(p.stem for p in (tmp_path / "out" / "labels").iterdir()) == sorted(names)


def test_cli_harvest_and_bad_input(bag, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["harvest", str(bag), "--out", str(out), "--model", "camvid", "--topic", TOPIC, "--count", "2",
                 "--no-progress"]) == 0
    assert "picked 2 of 12 frames from 1 bag(s)" in capsys.readouterr().out
    assert len(read_csv(out)) == 2

    from rosbags.rosbag2 import Writer
    ts = bags.typestore()
    with Writer(tmp_path / "no_camera", version=9) as w:
        con = w.add_connection("/camera/camera_info", bags.CAMERA_INFO, typestore=ts)
        w.write(con, 10**18, bytes(ts.serialize_cdr(bags.camera_info_msg(ts, 4, 3, 10**18, "c"), bags.CAMERA_INFO)))
    fresh = str(tmp_path / "fresh")
    cases = [
        ([str(tmp_path / "nope"), "--out", fresh], "does not exist"),
        ([str(tmp_path / "no_camera"), "--out", fresh], "has no image topic"),
        ([str(bag), "--out", fresh], f"several image topics (/camera/ground_truth, {TOPIC}); choose one with --topic"),
        ([str(bag), "--out", fresh, "--topic", "/front/image"], "/front/image is not in bag"),
        ([str(bag), "--out", fresh, "--topic", TOPIC, "--count", "0"], "--count must be at least 1"),
        ([str(bag), "--out", str(out), "--topic", TOPIC], "already exists and is not an empty folder"),
    ]
    for args, message in cases:
        assert main(["harvest", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "fresh").exists()



def test_compressed_camera(seg, tmp_path):
    """--topic names the camera; a bag that holds only its /compressed twin is read from that."""
    make_bag(sample_dataset(), tmp_path / "png", compression="png", max_frames=2, start_time=START_NS / 1e9,
             progress=False)
    sources = open_sources([tmp_path / "png"], TOPIC)
    assert sources[0].topic == bags.compressed_topic(TOPIC)
    result = harvest(sources, tmp_path / "out", seg, HarvestOptions(count=2, **UNCONSTRAINED), progress=False)
    ds = sample_dataset()
    assert len(result["picked"]) == 2
    for f in result["picked"]:  # PNG is lossless: the frames as the folder holds them
        frame = ds.read((f.stamp_ns - START_NS) // FRAME_NS)[0]
        np.testing.assert_array_equal(read_rgb(tmp_path / "out" / "images" / f"{f.name}.png"), frame)
