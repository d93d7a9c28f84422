# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception adapt` on real frames: within its budget it writes a model that the node and `predict` load by
path, its batch-norm statistics move towards the new frames, and bad inputs are refused naming the culprit with
nothing written.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import node_args
from test_node import CAMERA, Probe, to_array

from seg_perception.bags import make_bag
from seg_perception.classes import DRIVING
from seg_perception.cli import main as cli
from seg_perception.inference.checkpoint import load_checkpoint
from seg_perception.inference.segmenter import Segmenter, shipped_model_path
from seg_perception.learning.adaptation import AdaptOptions, adapt
from seg_perception.learning.datasets import generic, read_rgb
from seg_perception.learning.transforms import normalise
from seg_perception.ros.ros_image import rgb_to_image

REPO = Path(__file__).resolve().parents[1]
IDD_IMAGES = REPO / "sample_data" / "idd_lite" / "leftImg8bit" / "train"
CAMVID = REPO / "sample_data" / "camvid_val"
BUDGET_MIN = 1.5


def tinted(rgb: np.ndarray) -> np.ndarray:
    """A camera with other colours: a green cast and darker shadows."""
    x = rgb.astype(np.float32) @ np.array([[0.8, 0.2, 0.0], [0.0, 1.0, 0.1], [0.1, 0.2, 0.6]], np.float32).T
    return np.clip(255 * (x / 255) ** 1.3, 0, 255).astype(np.uint8)


def write_frames(folder: Path, files) -> list[np.ndarray]:
    out = []
    for i, f in enumerate(files):
        rgb = tinted(read_rgb(f))
        dst = folder / f"drive{i % 3}" / f"{i:03d}.png"  # three drives
        dst.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dst), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out.append(rgb)
    return out


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """One adaptation of the driving model to tinted IDD-Lite frames, with every candidate's first BN layer."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("adapt")
    frames = write_frames(root / "frames", sorted(IDD_IMAGES.rglob("*.jpg")))
    seen = []

    def on_round(k, model, figures, kept):
        seen.append((k, first_bn(model).running_mean.clone(), figures, kept))

    t0 = time.monotonic()
    options = AdaptOptions(minutes=BUDGET_MIN, threads=2, batch_size=4)
    result = adapt([root / "frames"], "driving", root / "out", options=options, progress=False, log=lambda *_: None,
                   on_round=on_round)
    return {"root": root, "frames": frames, "result": result, "seconds": time.monotonic() - t0, "rounds": seen}


def first_bn(model) -> torch.nn.BatchNorm2d:
    return next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def first_bn_batch_mean(model, frames) -> torch.Tensor:
    """The mean, per channel, of what the first batch-norm layer sees on these frames."""
    bn = first_bn(model)
    got = []
    hook = bn.register_forward_hook(lambda m, inp, out: got.append(inp[0].mean((0, 2, 3))))
    model.eval()
    with torch.no_grad():
        for rgb in frames:
            x = torch.from_numpy(cv2.resize(rgb, (512, 360))).permute(2, 0, 1)[None]
            model(normalise(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    hook.remove()
    return torch.stack(got).mean(0)


def test_adapt_stays_within_its_budget_and_writes_the_three_model_files(adapted):
    res = adapted["result"]
    assert adapted["seconds"] <= 60 * BUDGET_MIN + 15, adapted["seconds"]
    assert res.steps > 0 and res.rounds >= 1
    out = adapted["root"] / "out"
    assert sorted(p.name for p in out.iterdir()) == ["adapt.json", "model.int8.onnx", "model.onnx", "model.pt"]
    model, info = load_checkpoint(out / "model.pt")
    assert info.classes == DRIVING  # the class table is kept
    record = info.training["adaptation"]
    assert record["frames"] == 8 and record["steps"] == res.steps
    assert info.training["adapted_from"]["model"] == "driving_lraspp.pt"
    # what a user sees: confidence and class shares before and after, for every frame seen
    assert set(res.before["class_share"]) == set(DRIVING.names) == set(res.after["class_share"])
    assert abs(sum(res.after["class_share"].values()) - 1) < 1e-6
    assert 0 < res.before["mean_confidence"] < 1 and res.check_before["consistency"] > 0.5
    # the model written is the best the label-free criteria saw: never worse than the original on them
    assert res.check_after["consistency"] >= res.check_before["consistency"]


def test_adapt_moves_the_batch_norm_statistics_towards_the_new_frames(adapted):
    """Round 0 re-estimates the statistics on the new frames; the self-training rounds keep them as trained."""
    source, _ = load_checkpoint(shipped_model_path("driving"))
    target = first_bn_batch_mean(source, adapted["frames"])
    before = float((first_bn(source).running_mean - target).norm())
    rounds = adapted["rounds"]
    k, reestimated, _, kept = rounds[0]
    assert k == 0
    # the re-estimate lands on the new frames' statistics (its running mean is their average over batches)
    assert float((reestimated - target).norm()) < 0.2 * before
    start = reestimated if kept else first_bn(source).running_mean
    assert len(rounds) > 1
    for k, mean, _, _ in rounds[1:]:
        torch.testing.assert_close(mean, start)


def test_the_adapted_model_loads_by_path_in_predict_and_the_node(adapted, ros_env, start_node, tmp_path, capsys):
    model_pt = adapted["root"] / "out" / "model.pt"
    seg = Segmenter(model_pt, device="cpu", precision="fp32")
    assert seg.onnx_path.name == "model.onnx"
    frame_dir = next((adapted["root"] / "frames").iterdir())
    assert cli.main(["predict", "--model", str(model_pt), "--precision", "fp32", "--input", str(frame_dir),
                     "--output", str(tmp_path / "pred"), "--no-progress"]) == 0
    for f in sorted(frame_dir.iterdir()):
        labels = cv2.imread(str(tmp_path / "pred" / f"{f.stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, seg.segment(read_rgb(f)).labels)
    proc = start_node(node_args(params={"model": str(model_pt), "precision": "fp32", "qos_reliability": "reliable",
                                        "qos_depth": 5}, remaps={"image": CAMERA}))
    probe = Probe("adapted")
    try:
        probe.wait_ready(proc)
        rgb = adapted["frames"][0]
        out = probe.wait_outputs(probe.send(rgb_to_image(rgb, "rgb8", probe.header())))
        assert (to_array(out["labels"]) == seg.segment(rgb).labels).mean() > 0.999
    finally:
        probe.close()
    assert "model.pt" in proc.output() or "model.onnx" in proc.output()


def test_bad_inputs_are_refused_naming_the_culprit_and_nothing_is_written(tmp_path, capsys):
    frames = tmp_path / "frames"
    write_frames(frames, sorted(IDD_IMAGES.rglob("*.jpg")))
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    write_frames(mixed, sorted(IDD_IMAGES.rglob("*.jpg"))[:3])
    cv2.imwrite(str(mixed / "drive0" / "big.png"), np.random.default_rng(0).integers(0, 255, (360, 480, 3), np.uint8))
    bag = tmp_path / "bag"
    make_bag(generic(CAMVID / "images", CAMVID / "labels", REPO / "config" / "camvid_classes.yaml"), bag,
             max_frames=2, start_time=1.7e9, progress=False)
    shipped_dir = tmp_path / "holds_shipped"
    shipped_dir.mkdir()
    shipped_copy = shipped_dir / "driving_lraspp.pt"
    shipped_copy.write_bytes(shipped_model_path("driving").read_bytes())
    cases = {
        "empty folder": (["--input", str(empty)], f"{empty} holds no images"),
        "bag without the topic": (["--input", str(bag), "--topic", "/front/image_raw"],
                                  "/front/image_raw is not in bag"),
        "mixed sizes": (["--input", str(mixed)], "several sizes: 320x227 (3 frames"),
        "zero budget": (["--input", str(frames), "--minutes", "0"], "--minutes must be a positive"),
        "negative budget": (["--input", str(frames), "--minutes", "-5"], "--minutes must be a positive"),
        "nan budget": (["--input", str(frames), "--minutes", "nan"], "--minutes must be a positive"),
        "shipped model in the output": (["--input", str(frames), "--output", str(shipped_dir)],
                                        "holds shipped model files (driving_lraspp.pt)"),
        "the shipped models' folder": (["--input", str(frames), "--output", str(shipped_model_path("driving").parent)],
                                       "shipped models' folder"),
        "an ONNX model": (["--input", str(frames), "--model", str(shipped_model_path("driving").with_suffix(".onnx"))],
                          "give its .pt checkpoint"),
        "missing input": (["--input", str(tmp_path / "nope")], "nope does not exist"),
    }
    shipped_before = {p: p.read_bytes() for p in shipped_model_path("driving").parent.iterdir()}
    for case, (args, message) in cases.items():
        out = tmp_path / "out"
        argv = ["adapt", "--no-progress", *args]
        if "--output" not in args:
            argv += ["--output", str(out)]
        assert cli.main(argv) == 2, case
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (case, err)
        assert not out.exists() or not any(out.iterdir()), case
    assert shipped_copy.read_bytes() == shipped_model_path("driving").read_bytes()
    assert sorted(p.name for p in shipped_dir.iterdir()) == ["driving_lraspp.pt"]
    assert {p: p.read_bytes() for p in shipped_model_path("driving").parent.iterdir()} == shipped_before
    # an earlier adaptation is not written over either
    done = tmp_path / "done"
    done.mkdir()
    (done / "model.pt").write_bytes(b"an earlier adaptation")
    assert cli.main(["adapt", "--no-progress", "--input", str(frames), "--output", str(done)]) == 2
    assert "already holds model.pt" in capsys.readouterr().err
    assert (done / "model.pt").read_bytes() == b"an earlier adaptation"
