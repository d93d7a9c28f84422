# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Datasets for training several taxonomies into one model: IDD-Lite read in its own layout from real
frames, class mappings applied exactly, held-out drives that never meet train, multi-dataset batches
drawn by weight, augmentation on the device that keeps labels on their pixels, and bad data refused
with messages that name the file.
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from seg_perception.class_mapping import MappingError, load_mapping
from seg_perception.classes import CAMVID, DRIVING, ClassTable, class_table
from seg_perception.cli import main as cli
from seg_perception.learning.datasets import (
    DatasetError,
    idd_lite,
    open_dataset,
    split_by_drive,
)
from seg_perception.learning.training import ConfigError, TrainConfig, Trainer
from seg_perception.learning.transforms import BatchAugment

REPO = Path(__file__).resolve().parents[1]
IDD = REPO / "sample_data" / "idd_lite"
CAMVID_SAMPLES = REPO / "sample_data" / "camvid_val"
CAMVID_TO_DRIVING = REPO / "config" / "mappings" / "camvid_to_driving.yaml"


def test_idd_lite_is_read_in_its_own_layout():
    ds = idd_lite(IDD, "train")
    images = sorted(IDD.glob("leftImg8bit/train/*/*_image.jpg"))
    assert len(ds) == len(images) >= 8
    assert ds.classes == DRIVING and ds.classes.names[0] == "drivable"
    # one drive per folder, each image with the label of the same frame
    for (img, lab), drive in zip(ds.pairs, ds.drives):
        assert img.parent.name == drive == lab.parent.name
        assert lab.name == img.name.replace("_image.jpg", "_label.png")
    assert len(set(ds.drives)) == 4
    image, label = ds.read(0)
    assert image.shape == (227, 320, 3) and label.shape == (227, 320)
    assert set(np.unique(label)) <= set(range(7)) | {255}
    assert open_dataset("idd_lite", root=IDD, split="train").pairs == ds.pairs


def test_idd_folder_with_a_missing_label_names_it(tmp_path):
    root = tmp_path / "idd"
    shutil.copytree(IDD, root)
    victim = next(root.glob("gtFine/train/*/*_label.png"))
    victim.unlink()
    with pytest.raises(DatasetError, match="have no label") as err:
        idd_lite(root, "train")
    assert victim.name in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        idd_lite(root, "val")


def test_camvid_drives_come_from_the_frame_names():
    ds = open_dataset("generic", images=CAMVID_SAMPLES / "images", labels=CAMVID_SAMPLES / "labels", classes="camvid")
    assert set(ds.drives) == {"0016E5"}


def test_mapping_is_applied_exactly_on_a_hand_checked_case(tmp_path):
    # CamVid ids 0..10 and void 11, as one row of pixels
    label = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]], np.uint8)
    mapping = load_mapping(CAMVID_TO_DRIVING, target=DRIVING)
    d = {n: i for i, n in enumerate(DRIVING.names)}
    expected = [d["sky"], d["far objects"], d["roadside objects"], d["drivable"], d["non-drivable"],
                d["far objects"], d["roadside objects"], d["roadside objects"], d["vehicles"],
                d["living things"], d["living things"], 255]
    assert mapping.apply(label).tolist() == [expected]
    # ids as keys, many-to-one and ignore, read from a file
    partial = tmp_path / "partial.yaml"
    partial.write_text(yaml.safe_dump({"source": "camvid", "target": "driving", "map": {
        **{i: "ignore" for i in range(11) if i not in (3, 8, 9)}, 3: "drivable", "Car": "vehicles", 9: "vehicles"}}))
    assert load_mapping(partial).apply(label).tolist() == [[255, 255, 255, 0, 255, 255, 255, 255, 3, 3, 255, 255]]
    # a dataset seen through the mapping: same pixels, translated ids, the target table
    ds = open_dataset("generic", images=CAMVID_SAMPLES / "images", labels=CAMVID_SAMPLES / "labels", classes="camvid")
    mapped = ds.mapped(mapping.lut(), DRIVING)
    raw, (img, lab) = ds.read(0), mapped.read(0)
    assert np.array_equal(raw[0], img) and np.array_equal(lab, mapping.apply(raw[1]))
    assert mapped.classes == DRIVING


@pytest.mark.parametrize("change,message", [
    ({"map": {"Sky": "sky", 42: "sky"}}, "source id 42 is not a class"),
    ({"map": {"Skyy": "sky"}}, "source class 'Skyy' unknown"),
    ({"map": {"Sky": "clouds"}}, "maps to 'clouds', which the target table lacks"),
    ({"map": {"Sky": "sky"}}, r"source classes \['Building'.* are not mapped"),
    ({"target": "cityscapes"}, "but the model's classes are"),
    ({"source": "nosuch"}, "neither a built-in table"),
    ({"extra": 1}, "unknown keys"),
])
def test_bad_mappings_say_what_is_wrong(tmp_path, change, message):
    good = yaml.safe_load(CAMVID_TO_DRIVING.read_text())
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**good, **change}))
    with pytest.raises(MappingError, match=message) as err:
        load_mapping(path, target=DRIVING)
    assert str(path) in str(err.value)


def test_driving_class_yaml_is_the_built_in_table():
    assert ClassTable.from_yaml(REPO / "config" / "driving_classes.yaml") == DRIVING == class_table("driving")
    assert DRIVING.drivable == ("drivable",) and DRIVING.obstacle == ("living things", "vehicles")


def test_held_out_drives_never_meet_train():
    ds = idd_lite(IDD, "train")
    for held in (1, 2, 3, ["20"], ["52", "483"]):
        train, val = split_by_drive(ds, held, seed=3)
        assert set(train.drives).isdisjoint(val.drives)
        assert len(train) + len(val) == len(ds) and len(val) > 0
        assert {p for p in train.pairs}.isdisjoint(val.pairs)
    assert split_by_drive(ds, 2, seed=5)[1].drives == split_by_drive(ds, 2, seed=5)[1].drives  # seeded
    with pytest.raises(DatasetError, match="no drive"):
        split_by_drive(ds, ["nosuch"])
    with pytest.raises(DatasetError, match="cannot hold out 4"):
        split_by_drive(ds, 4)


def multi_config(tmp_path, **over) -> TrainConfig:
    data = dict(classes="driving", datasets=[
        dict(name="camvid", layout="generic", images=str(CAMVID_SAMPLES / "images"),
             labels=str(CAMVID_SAMPLES / "labels"), classes="camvid", mapping=str(CAMVID_TO_DRIVING), weight=3.0),
        dict(name="idd", layout="idd_lite", root=str(IDD), val_drives=["20"], resize=[240, 170], weight=1.0)],
        batch_size=4, crop=(96, 72), scale=(0.5, 0.5), epochs=1, max_steps=1, threads=2, out=str(tmp_path / "run"))
    data.update(over)
    return TrainConfig.from_dict(data)


def test_multi_dataset_batches_are_drawn_by_weight(tmp_path):
    trainer = Trainer(multi_config(tmp_path), progress=False, log=lambda *_: None)
    frames = trainer.frames
    assert frames.names == ["camvid", "idd"] and Counter(frames.source) == {0: 12, 1: 6}
    assert {img.shape for img, s in zip(frames.images, frames.source) if s == 1} == {(170, 240, 3)}
    drawn = Counter()
    for epoch in range(60):  # each epoch draws anew; a batch holds (frame index, augmentation seed) items
        trainer.sampler.set_epoch(epoch)
        drawn.update(frames.source[i] for batch in trainer.batch_sampler for i, _ in batch)
    share = drawn[0] / sum(drawn.values())
    assert 0.70 < share < 0.80, f"camvid drew {share:.2f} of the samples, weight says 0.75"
    # validation: the held-out IDD drive, in the driving table
    assert list(frames.val) == ["idd"] and len(frames.val["idd"][0]) == 2
    result = trainer.run()
    row = result["history"][-1]
    assert set(row["val_datasets"]) == {"idd"} and 0 <= row["val_miou"] <= 1
    log = (Path(trainer.cfg.out) / "log.csv").read_text().splitlines()[0]
    assert "iou_drivable" in log


def test_device_augmentation_keeps_labels_on_their_pixels():
    # a frame whose colour encodes its label: after scale, crop and flip every labelled pixel still matches
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 7, (9, 12)), np.ones((20, 20), int)).astype(np.uint8)  # 180x240 blocks
    image = np.repeat((label * 30)[..., None], 3, axis=2).astype(np.uint8)
    aug = BatchAugment([image, image[:120, :160]], [label, label[:120, :160]], crop=(200, 150), scale=(0.5, 2.0),
                       hflip=0.5, jitter=0.0, ignore_index=255)
    g = torch.Generator().manual_seed(0)
    padded = 0
    for _ in range(5):
        x, y = aug([0, 1, 0, 1], g)
        assert x.shape == (4, 3, 150, 200) and y.shape == (4, 150, 200) and y.dtype == torch.long
        inside = y != 255
        padded += int((~inside).sum())  # a crop larger than the scaled frame is padded, marked ignore
        # padding is black but for a one-pixel seam where bilinear blends the frame's edge in
        near = torch.nn.functional.max_pool2d(inside[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
        assert bool((x[:, 0][~near] == 0).all())
        # away from block edges the bilinear image value is the block's colour
        exact = inside & (x[:, 0] % 30 == 0)
        assert torch.equal((x[:, 0][exact] / 30).long(), y[exact])
        assert (exact.sum() / inside.sum()) > 0.5
    assert padded > 0


def test_device_and_loader_augmentation_train_the_same_data(tmp_path):
    for where in ("loader", "device"):
        trainer = Trainer(multi_config(tmp_path / where, augment_on=where, blur=0.5, noise=0.05), progress=False,
                          log=lambda *_: None)
        img, mask = next(trainer.batches())
        assert img.shape == (4, 3, 72, 96) and mask.shape == (4, 72, 96)
        assert set(torch.unique(mask).tolist()) <= set(range(7)) | {255}


def test_bad_multi_dataset_configs_name_the_culprit(tmp_path, capsys):
    base = yaml.safe_load(yaml.safe_dump(multi_config(tmp_path).__dict__["datasets"]))
    cases = [
        ([{**base[0], "mapping": None}, base[1]], "dataset camvid has classes .* give it a mapping"),
        ([{**base[0], "colour": 1}, base[1]], r"datasets\[0\]: unknown keys \['colour'\]"),
        ([base[0], {**base[1], "weight": 0}], "weight must be positive"),
        ([base[0], {**base[1], "name": "camvid"}], "dataset names must differ"),
        ([base[0], {**base[1], "root": str(tmp_path / "nothing")}], "does not exist"),
    ]
    for datasets, message in cases:
        with pytest.raises(ConfigError, match=message):
            Trainer(multi_config(tmp_path, datasets=datasets), progress=False, log=lambda *_: None)
    # images and labels that differ in count or size are refused naming the folder or file
    images, labels = tmp_path / "images", tmp_path / "labels"
    shutil.copytree(CAMVID_SAMPLES / "images", images)
    shutil.copytree(CAMVID_SAMPLES / "labels", labels)
    next(labels.iterdir()).unlink()
    with pytest.raises(DatasetError, match=f"have no label in {labels}"):
        open_dataset("generic", images=images, labels=labels, classes="camvid")
    shutil.rmtree(labels)
    shutil.copytree(CAMVID_SAMPLES / "labels", labels)
    small = sorted(labels.iterdir())[0]
    cv2.imwrite(str(small), cv2.imread(str(small), cv2.IMREAD_UNCHANGED)[:100])
    with pytest.raises(DatasetError, match=f"size mismatch.*{small}"):
        open_dataset("generic", images=images, labels=labels, classes="camvid").read(0)
    # --data-root for a dataset the config does not have; nothing is written
    cfg = tmp_path / "multi.yaml"
    cfg.write_text(yaml.safe_dump({**{k: v for k, v in multi_config(tmp_path).__dict__.items()
                                      if k in ("classes", "datasets")}, "out": str(tmp_path / "out")}))
    assert cli.main(["train", "--config", str(cfg), "--data-root", "kitti=/x", "--no-progress"]) == 2
    assert "--data-root kitti=/x: expected NAME=PATH with NAME one of ['camvid', 'idd']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # a mapping into a class the model lacks: the error names the file, and an earlier run's checkpoint stays
    bad_mapping = tmp_path / "bad_mapping.yaml"
    bad_mapping.write_text(CAMVID_TO_DRIVING.read_text().replace("Car: vehicles", "Car: cars"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "best.pt").write_bytes(b"an earlier run")
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text(cfg.read_text().replace(str(CAMVID_TO_DRIVING), str(bad_mapping)))
    assert cli.main(["train", "--config", str(bad_cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{bad_mapping}: 'Car' maps to 'cars', which the target table lacks" in err
    assert (tmp_path / "out" / "best.pt").read_bytes() == b"an earlier run"


def test_training_from_a_model_with_other_classes_gets_a_new_head(tmp_path):
    cfg = multi_config(tmp_path, init_from=str(REPO / "seg_perception" / "models" / "camvid_lraspp.pt"))
    logs = []
    trainer = Trainer(cfg, progress=False, log=logs.append)
    assert any("new weights for" in line for line in logs)
    fresh = set(trainer.lineage["new_head"])
    assert fresh and all("classifier" in k for k in fresh)
    base = torch.load(cfg.init_from, weights_only=True)["state_dict"]
    for name, value in trainer.model.state_dict().items():
        if name not in fresh:
            torch.testing.assert_close(value.float(), base[name].float())
    assert trainer.model.state_dict()["net.classifier.low_classifier.weight"].shape[0] == 7
    assert trainer.lineage["classes"] == list(CAMVID.names)
