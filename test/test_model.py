# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The shipped models and the inference core: accuracy on real CamVid and IDD-Lite frames,
models by name, checkpoint metadata and its errors, ONNX export against PyTorch, metrics.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_perception.classes import CAMVID, DRIVING
from seg_perception.cli import main as cli
from seg_perception.evaluation.metrics import confusion_matrix, scores
from seg_perception.inference.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from seg_perception.inference.export import export_onnx
from seg_perception.inference.segmenter import (
    InputError,
    Segmenter,
    default_model_path,
    model_info,
    resolve_model,
    shipped_model_path,
)
from seg_perception.learning.datasets import read_label, read_rgb
from seg_perception.learning.losses import DiceLoss, SegmentationLoss

CAMVID_MODEL = shipped_model_path("camvid")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
FRAMES = sorted((SAMPLES / "images").glob("*.png"))


@pytest.fixture(scope="module")
def shipped():
    return Segmenter(CAMVID_MODEL, device="cpu", precision="fp32")  # the fp32 graph, as PyTorch computes it


def test_shipped_model_carries_its_metadata():
    info = model_info(CAMVID_MODEL)
    assert info.arch == "lraspp_mobilenet_v3_large"
    assert info.classes.names == CAMVID.names and info.classes.ignore_index == 11
    assert info.classes.drivable == ("Road",) and "Pedestrian" in info.classes.obstacle
    assert info.input_size == (480, 360)
    assert info.training["dataset"].startswith("CamVid train")
    assert info.training["val_miou"] > 0
    assert CAMVID_MODEL.stat().st_size < 20e6
    assert CAMVID_MODEL.with_suffix(".onnx").stat().st_size < 20e6


def test_shipped_model_reaches_85_percent_pixel_accuracy_on_val_frames(shipped, tmp_path):
    hits = total = 0
    for path in FRAMES:
        pred = shipped.segment(read_rgb(path)).labels
        gt = read_label(SAMPLES / "labels" / path.name)
        valid = gt != CAMVID.ignore_index
        hits += int((pred[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert hits / total >= 0.85, f"pixel accuracy {hits / total:.3f}"
    # the evaluate command reports the same figure
    assert cli.main(["evaluate", "--model", "camvid", "--precision", "fp32", "--images", str(SAMPLES / "images"),
                     "--labels", str(SAMPLES / "labels"), "--output", str(tmp_path), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pixel_accuracy"] == pytest.approx(hits / total)
    assert metrics["frames"] == len(FRAMES)
    for png in ("confusion_matrix.png", "per_class_iou.png"):
        assert cv2.imread(str(tmp_path / png)) is not None


def test_flip_tta_is_mirror_symmetric_on_both_backends(shipped, tmp_path):
    rgb = read_rgb(FRAMES[2])
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    tta = Segmenter(CAMVID_MODEL, device="cpu", precision="fp32", flip_tta=True)
    a, b = tta.segment(rgb).labels, tta.segment(mirrored).labels
    # Averaging a frame with its mirror image makes the labels mirror-symmetric; the model alone is not.
    assert (a == b[:, ::-1]).mean() > 0.9999
    plain, plain_mirrored = shipped.segment(rgb).labels, shipped.segment(mirrored).labels
    assert (plain != plain_mirrored[:, ::-1]).sum() > 100
    assert (a != plain).any()
    torch_tta = Segmenter(CAMVID_MODEL, device="cpu", backend="torch", flip_tta=True)
    assert tta.backend == "onnxruntime" and torch_tta.backend == "torch"
    assert (torch_tta.segment(rgb).labels == a).mean() > 0.999
    np.testing.assert_array_equal(shipped.segment(rgb, flip_tta=True).labels, a)  # per-frame override
    # evaluate --flip-tta scores the TTA labels
    hits = total = 0
    for path in FRAMES:
        gt = read_label(SAMPLES / "labels" / path.name)
        valid = gt != CAMVID.ignore_index
        hits += int((tta.segment(read_rgb(path)).labels[valid] == gt[valid]).sum())
        total += int(valid.sum())
    assert cli.main(["evaluate", "--model", "camvid", "--precision", "fp32", "--flip-tta", "--images",
                     str(SAMPLES / "images"), "--labels",
                     str(SAMPLES / "labels"), "--output", str(tmp_path), "--no-progress"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["pixel_accuracy"] == pytest.approx(hits / total)


def test_torch_and_onnx_backends_agree_on_real_frames(shipped):
    torch_seg = Segmenter(CAMVID_MODEL, device="cpu", backend="torch")
    assert shipped.backend == "onnxruntime" and torch_seg.backend == "torch"
    rgb = read_rgb(FRAMES[1])
    a, b = shipped.segment(rgb), torch_seg.segment(rgb)
    assert (a.labels == b.labels).mean() > 0.999
    assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 2


def test_any_frame_size_comes_back_at_its_own_size(shipped):
    rgb = read_rgb(FRAMES[0])
    for w, h in ((640, 480), (97, 61), (1920, 1080)):
        seg = shipped.segment(cv2.resize(rgb, (w, h)))
        assert seg.labels.shape == (h, w) and seg.confidence.shape == (h, w)
    assert shipped.segment(rgb, output_size="network").labels.shape == (360, 480)
    for bad in (np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(InputError):
            shipped.segment(bad)


def test_predict_writes_mono8_labels_with_same_names_and_sizes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rgb = read_rgb(FRAMES[0])
    cv2.imwrite(str(src / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(src / "b.jpg"), cv2.cvtColor(cv2.resize(rgb, (320, 200)), cv2.COLOR_RGB2BGR))
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = cli.main(["predict", "--model", "camvid", "--input", str(src), "--output", str(out), "--overlay",
                     "--no-progress"])
    assert code == 1  # one unreadable input is reported, the others are written
    a = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED)
    assert a.dtype == np.uint8 and a.ndim == 2 and a.shape == (360, 480) and a.max() < 11
    assert b.shape == (200, 320)
    assert cv2.imread(str(out / "overlay" / "a.png")).shape == (360, 480, 3)
    assert not (out / "broken.png").exists()


def test_onnx_export_matches_pytorch(tmp_path):
    out = tmp_path / "m.onnx"
    res = export_onnx(CAMVID_MODEL, out)
    assert res["max_abs_diff"] < 1e-3 and res["label_agreement"] > 0.999
    seg = Segmenter(out)
    assert seg.backend == "onnxruntime" and seg.classes.names == CAMVID.names
    model, _ = load_checkpoint(CAMVID_MODEL)
    rgb = read_rgb(FRAMES[2])
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - torch.tensor(seg.info.mean).view(1, 3, 1, 1)) \
        / torch.tensor(seg.info.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(x).argmax(1)[0].numpy()
    assert (seg.segment(rgb).labels == ref).mean() > 0.999


IDD_SAMPLES = REPO / "sample_data" / "idd_lite"
CAMVID_TO_DRIVING = REPO / "config" / "mappings" / "camvid_to_driving.yaml"


def test_driving_model_carries_its_metadata():
    info = model_info("driving")
    assert info.arch == "lraspp_mobilenet_v3_large" and info.classes == DRIVING
    assert info.input_size == (480, 360)
    assert {d["name"] for d in info.training["datasets"]} == {"camvid", "idd"}
    assert info.training["fine_tuned_from"]["checkpoint"]  # its start: the CamVid model, a new head
    for suffix in (".pt", ".onnx"):
        assert shipped_model_path("driving").with_suffix(suffix).stat().st_size < 20e6


@pytest.mark.parametrize("name,args,frames,floor", [
    ("camvid", ["--images", str(SAMPLES / "images"), "--labels", str(SAMPLES / "labels")], 12, 0.85),
    # IDD frames from drives the model never trained on: 85 % is the target, not yet reached (docs/model_driving.md)
    ("driving", ["--layout", "idd_lite", "--root", str(IDD_SAMPLES), "--split", "train"], 8, 0.80),
    ("driving", ["--images", str(SAMPLES / "images"), "--labels", str(SAMPLES / "labels"), "--classes", "camvid",
                 "--mapping", str(CAMVID_TO_DRIVING)], 12, 0.85),
], ids=["camvid-on-camvid", "driving-on-held-out-idd", "driving-on-camvid-mapped"])
def test_each_shipped_model_by_name_on_its_kind_of_frames(name, args, frames, floor, tmp_path, capsys):
    assert cli.main(["evaluate", "--model", name, *args, "--output", str(tmp_path), "--no-progress"]) == 0
    assert shipped_model_path(name).name in capsys.readouterr().err  # the model it says it runs
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["frames"] == frames
    assert metrics["pixel_accuracy"] >= floor, f"{name}: pixel accuracy {metrics['pixel_accuracy']:.3f}"


def test_unknown_model_names_are_refused_everywhere(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="unknown model 'drivng': not a shipped model"):
        Segmenter("drivng")
    assert cli.main(["predict", "--model", "drivng", "--input", str(FRAMES[0]), "--output", str(tmp_path)]) == 2
    assert "unknown model 'drivng'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    # a model on the wrong labels without a mapping: told to give one
    assert cli.main(["evaluate", "--model", "driving", "--images", str(SAMPLES / "images"), "--labels",
                     str(SAMPLES / "labels"), "--classes", "camvid", "--output", str(tmp_path / "e")]) == 2
    assert "give it a mapping" in capsys.readouterr().err
    # a path is a path, a name is a name
    assert resolve_model(str(CAMVID_MODEL)) == CAMVID_MODEL
    # the default serves planners: the driving model
    assert resolve_model("") == default_model_path() == resolve_model(None) == shipped_model_path("driving")


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(CAMVID_MODEL.read_bytes()[:100000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    model, info = load_checkpoint(CAMVID_MODEL)
    obj = read_checkpoint(CAMVID_MODEL)
    del obj["classes"]
    torch.save(obj, tmp_path / "nometa.pt")
    with pytest.raises(CheckpointError, match=r"lacks checkpoint fields \['classes'\]"):
        load_checkpoint(tmp_path / "nometa.pt")
    # weights for 11 classes under a 12-class table: a wrong class count
    info.classes = type(info.classes)(names=info.classes.names + ("Extra",), palette=info.classes.palette +
                                      ((1, 2, 3),), ignore_index=11 + 244)
    save_checkpoint(tmp_path / "wrong.pt", model, info)
    with pytest.raises(CheckpointError, match="wrong class count"):
        load_checkpoint(tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError):
        Segmenter(tmp_path / "wrong.pt", backend="torch")


def test_confusion_matrix_and_scores_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pr = np.array([[0, 1, 1], [1, 2, 0]], np.uint8)
    cm = confusion_matrix(gt, pr, 3, 255)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    r = scores(cm, ["a", "b", "c"])
    # IoU a = 1/(2+1-1) = 0.5, b = 2/(2+3-2) = 2/3, c = 1
    assert r["per_class_iou"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 1.0})
    assert r["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert r["pixel_accuracy"] == pytest.approx(4 / 5)


def test_losses_respect_ignore_and_reward_correct_predictions():
    target = torch.tensor([[[0, 1], [2, 255]]])
    good = torch.full((1, 3, 2, 2), -10.0)
    for (i, j), c in {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 0}.items():
        good[0, c, i, j] = 10.0
    bad = -good
    assert DiceLoss(ignore_index=255)(good, target) < 0.01
    for kind in ("ce", "dice", "ce+dice"):
        loss = SegmentationLoss(kind, ignore_index=255, class_weights=[1.0, 2.0, 3.0])
        assert loss(good, target) < loss(bad, target)
    # the ignored pixel's logits do not matter
    changed = good.clone()
    changed[0, :, 1, 1] = torch.tensor([5.0, -3.0, 9.0])
    assert SegmentationLoss("ce+dice", ignore_index=255)(changed, target) == \
        pytest.approx(float(SegmentationLoss("ce+dice", ignore_index=255)(good, target)))
