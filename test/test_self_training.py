# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Learning from frames without labels and for the rare classes: pseudo-labels under per-class thresholds,
unlabelled sources (folders and bags) in `train`, copy-paste that keeps pixels and labels together, OHEM.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_perception.bags import make_bag
from seg_perception.classes import DRIVING
from seg_perception.cli import main as cli
from seg_perception.inference.checkpoint import load_checkpoint
from seg_perception.learning.copy_paste import CopyPaste, PasteObject, cut_objects, horizon_row, object_bank
from seg_perception.learning.datasets import generic, idd_lite
from seg_perception.learning.losses import SegmentationLoss, ohem_cross_entropy
from seg_perception.learning.pseudo_labels import ThresholdPolicy, apply_thresholds, pseudo_label
from seg_perception.learning.training import ConfigError, TrainConfig, Trainer
from seg_perception.learning.unlabelled import UnlabelledError, read_unlabelled

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
IDD = REPO / "sample_data" / "idd_lite"
IDD_IMAGES = IDD / "leftImg8bit"
CLASSES = REPO / "config" / "camvid_classes.yaml"


# -- pseudo-labels ----------------------------------------------------------------

def hand_made():
    """Confidences and teacher labels of 14 pixels in the driving table (0 drivable, 2 living things, 3 vehicles)."""
    conf = np.array([0.95, 0.96, 0.97, 0.98, 0.55, 0.60, 0.70, 0.80, 0.30, 0.40, 0.91, 0.89, 0.85, 0.99], np.float32)
    labs = np.array([0, 0, 0, 0, 2, 2, 2, 2, 3, 3, 6, 6, 6, 6], np.uint8)
    return conf, labs


def test_pseudo_labels_honour_a_global_threshold():
    conf, labs = hand_made()
    policy = ThresholdPolicy(cap=0.9, class_share=None)
    t = policy.thresholds(conf, labs, DRIVING)
    np.testing.assert_allclose(t, 0.9)
    out = apply_thresholds(conf, labs, t)
    np.testing.assert_array_equal(out, np.where(conf >= 0.9, labs, 255))


def test_pseudo_labels_honour_class_balanced_thresholds_with_cap_floor_and_overrides():
    conf, labs = hand_made()
    policy = ThresholdPolicy(cap=0.9, class_share=0.5, floor=0.5)
    t = policy.thresholds(conf, labs, DRIVING)
    # drivable: its median (0.965) is above the cap: the cap (0.9) keeps all four
    assert t[0] == pytest.approx(0.9)
    # living things: the most confident half (median 0.65) is kept, although under the cap
    assert t[2] == pytest.approx(0.65)
    # vehicles: the median (0.35) is under the floor: the floor (0.5) keeps none
    assert t[3] == pytest.approx(0.5)
    # sky: median 0.9, capped at 0.9
    assert t[6] == pytest.approx(0.9)
    out = apply_thresholds(conf, labs, t)
    expected = [0, 0, 0, 0, 255, 255, 2, 2, 255, 255, 6, 255, 255, 6]
    np.testing.assert_array_equal(out, expected)
    # a fixed threshold for one class wins over the policy
    t2 = ThresholdPolicy(cap=0.9, class_share=0.5, floor=0.5, per_class={"vehicles": 0.35}).thresholds(
        conf, labs, DRIVING)
    np.testing.assert_array_equal(apply_thresholds(conf, labs, t2)[8:10], [255, 3])
    with pytest.raises(ValueError, match="floor"):
        ThresholdPolicy(cap=0.4, floor=0.5)
    with pytest.raises(ValueError, match="class_share"):
        ThresholdPolicy(class_share=1.5)


def test_a_teachers_pseudo_labels_are_its_labels_where_it_is_sure_enough():
    from seg_perception.learning.pseudo_labels import teacher_predictions
    model, info = load_checkpoint(REPO / "seg_perception" / "models" / "driving_lraspp.pt")
    torch.set_num_threads(2)
    frames = read_unlabelled([IDD_IMAGES], progress=False)
    images = frames.images[:3]
    policy = ThresholdPolicy(cap=0.9, class_share=0.5, floor=0.5)
    got = pseudo_label(model, images, info.classes, info.mean, info.std, policy=policy, progress=False)
    confs, labs = teacher_predictions(model, images, info.mean, info.std, progress=False)
    t = np.array([got.thresholds[n] for n in info.classes.names])
    for lab, conf, teacher in zip(got.labels, confs, labs):
        assert lab.shape == teacher.shape
        kept = lab != 255
        np.testing.assert_array_equal(lab[kept], teacher[kept])       # never another class than the teacher's
        assert (conf[kept] >= t[teacher[kept]] - 1e-4).all()           # only where sure enough for its class
        assert (conf[~kept] < t[teacher[~kept]] + 1e-4).all()          # and everywhere it is
    assert 0.2 < got.kept_pixels < 1.0
    assert set(got.thresholds) == set(info.classes.names)


# -- unlabelled sources -------------------------------------------------------------

def test_unlabelled_frames_from_folders_and_bags(tmp_path):
    folder = read_unlabelled([IDD_IMAGES], progress=False)
    assert len(folder) == 8 and folder.sizes() == {(320, 227): 8}
    assert all(d.startswith("leftImg8bit/") for d in folder.drives)  # IDD's drive sub-folders
    bag = tmp_path / "bag"
    make_bag(_camvid_samples(), bag, max_frames=3,
             start_time=1.7e9, progress=False)
    frames = read_unlabelled([bag], topic="/camera/image_raw", progress=False)
    assert len(frames) == 3 and frames.sizes() == {(480, 360): 3} and set(frames.drives) == {"bag"}
    with pytest.raises(UnlabelledError, match="no images"):
        (tmp_path / "empty").mkdir()
        read_unlabelled([tmp_path / "empty"], progress=False)
    with pytest.raises(Exception, match="/nope is not in bag"):
        read_unlabelled([bag], topic="/nope", progress=False)
    with pytest.raises(UnlabelledError, match="does not exist"):
        read_unlabelled([tmp_path / "missing"], progress=False)


def _camvid_samples():
    return generic(SAMPLES / "images", SAMPLES / "labels", CLASSES)


def small_config(tmp_path, **over) -> TrainConfig:
    cfg = dict(layout="generic", images=str(SAMPLES / "images"), labels=str(SAMPLES / "labels"),
               classes=str(CLASSES), max_images=2, batch_size=2, crop=(128, 96), scale=(0.3, 0.3), hflip=0.0,
               jitter=0.0, epochs=1, warmup_epochs=0.0, lr=1e-4, threads=2, out=str(tmp_path / "run"),
               init_from="camvid", max_steps=2)
    cfg.update(over)
    return TrainConfig.from_dict(cfg)


def test_train_learns_from_unlabelled_folders_and_bags(tmp_path):
    bag = tmp_path / "bag"
    make_bag(_camvid_samples(), bag, max_frames=3, start_time=1.7e9, progress=False)
    cfg = small_config(tmp_path, unlabelled=[{"name": "streets", "path": str(IDD_IMAGES), "weight": 1.0},
                                              {"name": "drive", "path": str(bag), "topic": "/camera/image_raw"}],
                       pseudo_class_share=0.5)
    trainer = Trainer(cfg, progress=False, log=lambda *_: None)
    frames = trainer.frames
    assert frames.names == ["generic", "streets", "drive"]
    assert np.bincount(frames.source).tolist() == [2, 8, 3]
    # the pseudo-labels are the teacher's: in its class table, with uncertain pixels ignored
    ignore = trainer.classes.ignore_index
    for lab in frames.labels[2:]:
        values = set(np.unique(lab).tolist())
        assert values <= set(range(11)) | {ignore} and ignore in values
    trainer.run()
    _, info = load_checkpoint(tmp_path / "run" / "best.pt")
    record = info.training["pseudo_labels"]
    assert record["teacher"] == "camvid_lraspp.pt"
    assert [s["frames"] for s in record["sources"]] == [8, 3]
    assert set(record["sources"][0]["thresholds"]) == set(info.classes.names)


def test_unlabelled_sources_without_a_readable_frame_fail_before_the_first_step(tmp_path, capsys):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    bag = tmp_path / "bag"
    make_bag(_camvid_samples(), bag, max_frames=1, start_time=1.7e9, progress=False)
    cases = [({"name": "u", "path": str(empty)}, "holds no images"),
             ({"name": "u", "path": str(corrupt)}, "holds no readable frame"),
             ({"name": "u", "path": str(bag), "topic": "/front/image_raw"}, "/front/image_raw is not in bag"),
             ({"name": "u"}, "has no path")]
    for source, message in cases:
        cfg = small_config(tmp_path, unlabelled=[source])
        with pytest.raises(ConfigError, match=message):
            Trainer(cfg, progress=False, log=lambda *_: None)
        assert not (tmp_path / "run" / "last.pt").exists()
    # the same through the command line, with the source's path given by --data-root
    yaml_cfg = tmp_path / "u.yaml"
    yaml_cfg.write_text(f"layout: generic\nimages: {SAMPLES / 'images'}\nlabels: {SAMPLES / 'labels'}\n"
                        f"classes: {CLASSES}\ninit_from: camvid\nunlabelled:\n  - {{name: mine}}\n")
    assert cli.main(["train", "--config", str(yaml_cfg), "--data-root", f"mine={empty}",
                     "--out", str(tmp_path / "cli"), "--no-progress"]) == 2
    assert f"unlabelled source {empty} holds no images" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="need a teacher"):
        TrainConfig.from_dict({"unlabelled": [{"name": "u", "path": str(empty)}]})
    with pytest.raises(ConfigError, match="floor 0.5, cap 0.3"):
        TrainConfig.from_dict({"unlabelled": [{"name": "u", "path": str(empty)}], "init_from": "camvid",
                               "pseudo_threshold": 0.3})


# -- copy-paste ---------------------------------------------------------------------

def synthetic_street(horizon: int = 50, h: int = 120, w: int = 160):
    """Sky above the horizon, drivable ground below it, in the driving table."""
    label = np.full((h, w), 6, np.uint8)
    label[horizon:] = 0
    image = np.zeros((h, w, 3), np.uint8)
    image[:horizon] = (120, 160, 220)
    image[horizon:] = (90, 90, 90)
    return image, label


def test_copy_paste_stands_objects_on_the_ground_at_the_ground_plane_scale():
    image, label = synthetic_street()
    assert horizon_row(label, [0]) == 50
    # a 10x20 person whose feet are 30 rows below the horizon
    patch = np.random.default_rng(0).integers(0, 255, (20, 10, 3), np.uint8)
    obj = PasteObject(patch, np.ones((20, 10), bool), class_id=2, ground_depth=30.0)
    img2, lab2 = image.copy(), label.copy()
    assert CopyPaste.paste(img2, lab2, obj, bottom=110, centre=80, horizon=50)
    rows, cols = np.nonzero(lab2 == 2)
    # twice as far below the horizon: twice the size, feet on row 110
    assert rows.max() == 110 and rows.max() - rows.min() + 1 == 40 and cols.max() - cols.min() + 1 == 20
    expected = cv2.resize(patch, (20, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(img2[71:111, 70:90], expected)
    # nothing else changed
    outside = lab2 != 2
    np.testing.assert_array_equal(img2[outside], image[outside])
    np.testing.assert_array_equal(lab2[outside], label[outside])
    # near the horizon an object would be smaller than the scale range allows: not pasted
    assert not CopyPaste.paste(image.copy(), label.copy(), obj, bottom=52, centre=80, horizon=50)


def test_copy_paste_on_real_frames_keeps_labels_and_pixels_aligned():
    ds = idd_lite(IDD)
    images, labels = zip(*(ds.read(i) for i in range(len(ds))))
    classes, ground = DRIVING.ids(DRIVING.obstacle), DRIVING.ids(DRIVING.drivable)
    bank = object_bank(images, labels, classes, ground, min_pixels=20)
    assert bank and {o.class_id for o in bank} <= set(classes)
    for o in bank:  # whole objects only: their masks hold their class's pixels in the frame they came from
        assert o.mask.any() and o.ground_depth > 0
    paste = CopyPaste(bank, ground, probability=1.0, max_objects=3)
    rng = np.random.default_rng(1)
    changed_frames = 0
    for img, lab in zip(images, labels):
        img2, lab2 = paste(img, lab, rng)
        assert img2.shape == img.shape and lab2.shape == lab.shape
        pixels = (img2 != img).any(2)
        relabelled = lab2 != lab
        # every changed pixel is an object pixel now, and the frame's own objects keep their labels
        assert set(np.unique(lab2[pixels | relabelled]).tolist()) <= set(classes)
        changed_frames += bool(pixels.any())
    assert changed_frames >= 4
    # the inputs are left as they were
    assert all((a == b).all() for a, b in zip(images, [ds.read(i)[0] for i in range(len(ds))]))


def test_objects_cut_at_the_frame_border_or_above_the_horizon_are_not_banked():
    image, label = synthetic_street()
    label[60:80, 0:10] = 3       # touches the left border
    label[20:40, 50:60] = 2      # in the sky: above the horizon
    label[70:100, 100:112] = 2   # a whole person on the road
    objs = cut_objects(image, label, [2, 3], [0], min_pixels=10)
    assert len(objs) == 1 and objs[0].class_id == 2 and objs[0].mask.shape == (30, 12)
    assert objs[0].ground_depth == 99 - 50


def test_training_with_copy_paste_and_ohem(tmp_path):
    cfg = small_config(tmp_path, layout="idd_lite", root=str(IDD), images=None, labels=None, classes=None,
                       init_from="driving", copy_paste=1.0, loss="ohem+dice", crop=(160, 112), scale=(0.5, 0.5),
                       val_split=None, max_images=8)
    trainer = Trainer(cfg, progress=False, log=lambda *_: None)
    assert trainer.loader.dataset.paste is not None and trainer.loader.dataset.paste.bank
    result = trainer.run()
    assert result["steps"] == 2
    with pytest.raises(ConfigError, match="augment_on loader"):
        TrainConfig.from_dict({"copy_paste": 0.5, "augment_on": "device"})


def test_ohem_keeps_the_hard_pixels_only():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    logits = torch.zeros(1, 2, 10, 10)
    logits[0, 0] = 5.0               # every pixel easy (p(true) ~ 0.99) ...
    logits[0, 0, 0, :4] = -5.0       # ... but four hard ones
    loss = ohem_cross_entropy(logits, target, min_share=0.01)
    hard = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0, 0, :4].mean()
    assert float(loss) == pytest.approx(float(hard), rel=1e-5)
    # with fewer hard pixels than min_share allows, the hardest min_share are kept
    loss_min = ohem_cross_entropy(logits, target, min_share=0.5)
    top = torch.nn.functional.cross_entropy(logits, target, reduction="none").flatten().topk(50).values.mean()
    assert float(loss_min) == pytest.approx(float(top), rel=1e-5)
    # the ignore id never counts
    target[0, 0, :4] = 255
    assert float(ohem_cross_entropy(logits, target, min_share=0.01)) < 0.01
    assert float(SegmentationLoss("ohem+dice")(logits, torch.zeros(1, 10, 10, dtype=torch.long))) > 0


def test_shipped_self_training_config_parses():
    cfg = TrainConfig.from_yaml(REPO / "config" / "train_driving_stage3.yaml")
    assert cfg.unlabelled and cfg.copy_paste > 0 and cfg.loss.startswith("ohem")
