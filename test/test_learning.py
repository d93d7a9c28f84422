# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The learning loop on real CamVid frames: training lowers the loss for every
model family, resume continues exactly, early stopping stops, and bad data
or config fail with messages that name the culprit.
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_perception.cli import main as cli
from seg_perception.inference.checkpoint import CheckpointError, load_checkpoint
from seg_perception.learning.losses import distillation_loss
from seg_perception.learning.models import apply_freeze, build_model, train_outputs
from seg_perception.learning.training import ConfigError, TrainConfig, Trainer
from seg_perception.learning.transforms import normalise

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_data" / "camvid_val"
CLASSES = REPO / "config" / "camvid_classes.yaml"


def small_config(tmp_path, **over) -> TrainConfig:
    cfg = dict(layout="generic", images=str(SAMPLES / "images"), labels=str(SAMPLES / "labels"),
               classes=str(CLASSES), val_images=str(SAMPLES / "images"), val_labels=str(SAMPLES / "labels"),
               max_images=2, batch_size=2, crop=(128, 96), scale=(0.3, 0.3), hflip=0.0, jitter=0.0,
               epochs=6, warmup_epochs=0.0, lr=2e-3, threads=2, out=str(tmp_path / "run"), eval_every=1000)
    cfg.update(over)
    return TrainConfig.from_dict(cfg)


def fixed_batch(trainer: Trainer):
    img, mask = next(iter(trainer.loader))
    return normalise(img, trainer.mean, trainer.std), mask.long()


def batch_loss(trainer: Trainer, x, y) -> float:
    with torch.no_grad():
        trainer.model.train()
        return float(trainer.criterion(train_outputs(trainer.model, x)["out"], y))


@pytest.mark.parametrize("arch,kwargs", [
    ("lraspp_mobilenet_v3_large", {}),
    ("unet", {"dropout": 0.0}),
    ("deeplabv3", {}),
    ("fcn", {}),
    ("lraspp_mobilenet_v3_large", {"precision": "bf16", "channels_last": True, "ema_decay": 0.9}),
    ("unet", {"backbone": "mobilenet_v3_large"}),
    ("unet", {"backbone": "resnet18"}),
    ("fcn", {"backbone": "mobilenet_v3_large"}),
    ("fcn", {"backbone": "resnet18"}),
], ids=["lraspp", "unet", "deeplabv3", "fcn", "lraspp-bf16-channels-last-ema", "unet-mobilenet", "unet-resnet18",
        "fcn-mobilenet", "fcn-resnet18"])
def test_training_steps_lower_the_loss(tmp_path, arch, kwargs):
    torch.manual_seed(0)
    cfg = small_config(tmp_path, arch=arch, epochs=8, loss="ce+dice", val_images=None, **kwargs)
    trainer = Trainer(cfg, progress=False, log=lambda *_: None)
    x, y = fixed_batch(trainer)
    before = batch_loss(trainer, x, y)
    trainer.run()
    after = batch_loss(trainer, x, y)
    assert after < 0.8 * before, f"{arch}: loss {before:.3f} -> {after:.3f}"
    model, info = load_checkpoint(Path(cfg.out) / "best.pt")
    assert info.arch == arch and info.classes.num_classes == 11
    assert info.arch_kwargs.get("backbone") == kwargs.get("backbone")
    assert info.training["epochs"] >= 1 and info.training["dataset"]
    # fp32 weights as trained (their moving average with ema_decay), whatever precision or layout
    trained = dict(trainer.eval_model.named_parameters())
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32
        torch.testing.assert_close(p, trained[name].detach())
    if cfg.ema_decay:
        raw = dict(trainer.model.named_parameters())
        assert any(not torch.equal(p, raw[n]) for n, p in model.named_parameters()), "saved raw weights, not the EMA"


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    whole = Trainer(small_config(tmp_path / "a", epochs=4, max_images=4, ema_decay=0.8), progress=False,
                    log=lambda *_: None)
    full = whole.run()

    first = Trainer(small_config(tmp_path / "b", epochs=4, max_images=4, max_steps=4, ema_decay=0.8), progress=False,
                    log=lambda *_: None).run()
    assert first["epochs"] == 2 and first["stop_reason"] == "max_steps"
    resumed = Trainer(small_config(tmp_path / "b", epochs=4, max_images=4, ema_decay=0.8), resume=True,
                      progress=False, log=lambda *_: None)
    assert resumed.epoch == 2 and resumed.step == 4
    second = resumed.run()
    assert second["epochs"] == 4
    losses_full = [h["train_loss"] for h in full["history"]]
    losses_resumed = [h["train_loss"] for h in second["history"]]
    np.testing.assert_allclose(losses_resumed, losses_full, rtol=1e-4)
    for done, again in ((whole.model, resumed.model), (whole.eval_model, resumed.eval_model)):  # raw and EMA
        a, b = done.state_dict(), again.state_dict()
        for k in a:
            if a[k].is_floating_point():
                torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)


class _RunsCode:
    """A pickle that runs code when loaded without weights_only: what a crafted last.pt would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_crafted_training_state(tmp_path):
    """--resume loads OUT/last.pt with weights_only: a file that would run code is refused, and runs nothing."""
    out = tmp_path / "run"
    Trainer(small_config(out, epochs=1, max_images=4), progress=False, log=lambda *_: None).run()
    cfg = small_config(out, epochs=2, max_images=4)
    state = torch.load(Path(cfg.out) / "last.pt", weights_only=False)
    marker = tmp_path / "code_ran"
    state["history"] = _RunsCode(marker)
    torch.save(state, Path(cfg.out) / "last.pt")
    with pytest.raises(CheckpointError, match="not a training state this trainer wrote"):
        Trainer(cfg, resume=True, progress=False, log=lambda *_: None)
    assert not marker.exists()
    # and through the command line: a clear error, exit status 2, nothing run
    assert cli.main(["train", "--config", str(_write_config(tmp_path, cfg)), "--resume"]) == 2
    assert not marker.exists()


def _write_config(tmp_path: Path, cfg) -> Path:
    import dataclasses

    import yaml
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump({k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in dataclasses.asdict(cfg).items() if v is not None}))
    return path


def test_non_finite_steps_are_skipped_and_a_diverged_run_stops(tmp_path):
    trainer = Trainer(small_config(tmp_path / "a", epochs=3, max_images=4), progress=False, log=lambda *_: None)
    real = trainer.criterion
    calls = itertools.count()
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    def flaky(logits, target):  # the second batch goes wrong: NaN loss, NaN batch-norm statistics
        if next(calls) == 1:
            bn.running_mean.data.fill_(float("nan"))  # .data: as a bad forward pass would leave it
            return real(logits, target) * float("nan")
        return real(logits, target)

    trainer.criterion = flaky
    result = trainer.run()
    assert result["stop_reason"] == "epochs" and result["epochs"] == 3
    assert [h["skipped_steps"] for h in result["history"]] == [1, 0, 0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(torch.isfinite(b).all() for b in trainer.model.buffers() if b.is_floating_point())

    diverging = Trainer(small_config(tmp_path / "b", epochs=100, max_images=4), progress=False, log=lambda *_: None)
    diverging.criterion = lambda logits, target: real(logits, target) * float("nan")
    result = diverging.run()
    assert result["stop_reason"].startswith("diverged") and result["epochs"] < 100
    assert all(torch.isfinite(p).all() for p in diverging.model.parameters())
    assert load_checkpoint(Path(diverging.cfg.out) / "best.pt")[0] is not None


def test_early_stopping_stops_on_a_plateau(tmp_path):
    # min_delta above 1 makes any second evaluation "no gain": patience 1 must stop after epoch 2.
    cfg = small_config(tmp_path, epochs=10, eval_every=1, patience=1, min_delta=1.5)
    result = Trainer(cfg, progress=False, log=lambda *_: None).run()
    assert result["epochs"] == 2
    assert result["stop_reason"].startswith("early stopping")
    assert result["best_epoch"] == 1


def test_fine_tuning_with_frozen_encoder_keeps_it_fixed(tmp_path):
    base = small_config(tmp_path / "base", epochs=1)
    Trainer(base, progress=False, log=lambda *_: None).run()
    ckpt = Path(base.out) / "best.pt"
    encoder_before = {k: v.clone() for k, v in load_checkpoint(ckpt)[0].state_dict().items()
                      if k.startswith("net.backbone")}
    tuned = small_config(tmp_path / "tuned", epochs=2, init_from=str(ckpt), freeze="encoder", optimizer="sgd",
                         lr=0.01)
    trainer = Trainer(tuned, progress=False, log=lambda *_: None)
    trainer.run()
    after = trainer.model.state_dict()
    for k, v in encoder_before.items():
        torch.testing.assert_close(after[k], v)
    head_changed = any(not torch.equal(after[k], load_checkpoint(ckpt)[0].state_dict()[k])
                       for k in after if k.startswith("net.classifier") and after[k].is_floating_point())
    assert head_changed
    # the fine-tuned checkpoint keeps the starting checkpoint's training record
    record = load_checkpoint(Path(tuned.out) / "best.pt")[1].training
    assert record["fine_tuned_from"]["checkpoint"] == "best.pt"
    assert record["fine_tuned_from"]["training"]["steps"] == load_checkpoint(ckpt)[1].training["steps"]
    assert record["config"]["freeze"] == "encoder"


def test_distillation_loss_is_zero_only_for_the_teachers_distribution():
    torch.manual_seed(0)
    teacher_logits = torch.randn(2, 11, 6, 8)
    target = torch.randint(0, 11, (2, 6, 8))
    probs = (teacher_logits / 2).softmax(1)
    assert distillation_loss(teacher_logits, probs, target, temperature=2.0) == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(2, 11, 6, 8)
    assert distillation_loss(other, probs, target, temperature=2.0) > 0.1
    ignored = torch.full_like(target, 11)  # every pixel unlabelled: nothing to learn from
    assert distillation_loss(other, probs, ignored, temperature=2.0, ignore_index=11) == 0


def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    teacher_cfg = small_config(tmp_path / "teacher", epochs=1, seed=1)  # a poor teacher, far from the labels
    Trainer(teacher_cfg, progress=False, log=lambda *_: None).run()
    teacher = str(Path(teacher_cfg.out) / "best.pt")

    def gap_to_teacher(trainer) -> float:
        img, mask = next(iter(trainer.loader))
        trainer.model.eval()
        with torch.no_grad():
            logits = trainer.model(normalise(img, trainer.mean, trainer.std))
        return float(distillation_loss(logits, trainer.teacher_probs(img), mask.long(), temperature=2.0,
                                       ignore_index=trainer.classes.ignore_index))

    gaps = {}
    for weight in (0.0, 20.0):  # same seed and data; only the distillation term differs
        cfg = small_config(tmp_path / f"student{weight}", epochs=25, seed=2, distill_from=teacher,
                           distill_weight=weight, distill_temperature=2.0)
        trainer = Trainer(cfg, progress=False, log=lambda *_: None)
        trainer.run()
        gaps[weight] = gap_to_teacher(trainer)
    assert gaps[20.0] < 0.3 * gaps[0.0], gaps
    record = load_checkpoint(Path(cfg.out) / "best.pt")[1].training
    assert record["distilled_from"] == {"checkpoint": "best.pt", "val_miou": record["distilled_from"]["val_miou"],
                                        "flip": True, "temperature": 2.0}


def test_freeze_all_but_decoder_leaves_only_decoder_trainable():
    model = build_model("unet", num_classes=11, base_channels=8)
    apply_freeze(model, "all_but_decoder")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"decoder", "head"}


def test_bad_config_and_data_give_clear_errors(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("arch: unet\nlearning_rate: 0.1\n")
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err

    assert cli.main(["train", "--layout", "generic", "--images", str(SAMPLES / "images"), "--labels",
                     str(SAMPLES / "labels"), "--classes", str(CLASSES), "--arch", "segformer",
                     "--out", str(tmp_path / "r")]) == 2
    assert "unknown model 'segformer'" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["train", "--layout", "generic", "--images", str(empty), "--labels", str(empty),
                     "--classes", str(CLASSES), "--out", str(tmp_path / "r")]) == 2
    assert "holds no images" in capsys.readouterr().err

    # a corrupt image, a size mismatch and out-of-table label values, each named
    for case in ("corrupt", "size", "values"):
        imgs, labs = tmp_path / case / "images", tmp_path / case / "labels"
        shutil.copytree(SAMPLES / "images", imgs)
        shutil.copytree(SAMPLES / "labels", labs)
        victim = sorted(imgs.iterdir())[0].name
        if case == "corrupt":
            (imgs / victim).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        elif case == "size":
            import cv2
            lab = cv2.imread(str(labs / victim), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(labs / victim), lab[:100, :100])
        else:
            import cv2
            lab = cv2.imread(str(labs / victim), cv2.IMREAD_UNCHANGED)
            lab[0, 0] = 42
            cv2.imwrite(str(labs / victim), lab)
        out = tmp_path / case / "run"
        out.mkdir(parents=True)
        (out / "best.pt").write_bytes(b"previous good checkpoint")
        code = cli.main(["train", "--layout", "generic", "--images", str(imgs), "--labels", str(labs),
                         "--classes", str(CLASSES), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and victim in err, err
        assert {"corrupt": "corrupt", "size": "size mismatch", "values": "[42]"}[case] in err
        assert (out / "best.pt").read_bytes() == b"previous good checkpoint"


def test_config_validation():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="freeze needs init_from"):
        TrainConfig.from_dict({"freeze": "encoder"})
    with pytest.raises(ConfigError, match="precision 'fp16' unknown"):
        TrainConfig.from_dict({"precision": "fp16"})


def test_boolean_flags_parse_yes_and_no(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["train", "--channels-last", "no"]).channels_last is False
    assert parser.parse_args(["train", "--channels-last", "yes"]).channels_last is True
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--channels-last", "maybe"])
    assert "expected yes or no, got 'maybe'" in capsys.readouterr().err


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path):
    """Real frames laid out as Cityscapes: gtFine labelIds come back as the 19 train ids."""
    import cv2

    from seg_perception.classes import CITYSCAPES
    from seg_perception.learning.datasets import open_dataset, read_label
    camvid_to_label_id = np.array([23, 11, 17, 7, 8, 21, 20, 13, 26, 24, 25, 0] + [0] * 244, np.uint8)
    expected_train_id = {23: 10, 11: 2, 17: 5, 7: 0, 8: 1, 21: 8, 20: 7, 13: 4, 26: 13, 24: 11, 25: 12, 0: 255}
    frames = sorted((SAMPLES / "images").glob("*.png"))[:2]
    for split in ("train", "val"):
        for i, img in enumerate(frames):
            stem = f"cambridge_000000_{i:06d}"
            (tmp_path / "leftImg8bit" / split / "cambridge").mkdir(parents=True, exist_ok=True)
            (tmp_path / "gtFine" / split / "cambridge").mkdir(parents=True, exist_ok=True)
            shutil.copy(img, tmp_path / "leftImg8bit" / split / "cambridge" / f"{stem}_leftImg8bit.png")
            label_ids = camvid_to_label_id[read_label(SAMPLES / "labels" / img.name)]
            cv2.imwrite(str(tmp_path / "gtFine" / split / "cambridge" / f"{stem}_gtFine_labelIds.png"), label_ids)
    ds = open_dataset("cityscapes", root=tmp_path, split="train")
    assert len(ds) == 2 and ds.classes is CITYSCAPES
    for i, img in enumerate(frames):
        _, train_ids = ds.read(i)
        camvid = read_label(SAMPLES / "labels" / img.name)
        want = np.vectorize(lambda c: expected_train_id[int(camvid_to_label_id[c])])(camvid)
        np.testing.assert_array_equal(train_ids, want)
    cfg = TrainConfig.from_dict(dict(layout="cityscapes", root=str(tmp_path), batch_size=2, crop=(128, 96),
                                     scale=(0.3, 0.3), epochs=1, threads=2, out=str(tmp_path / "run")))
    result = Trainer(cfg, progress=False, log=lambda *_: None).run()
    _, info = load_checkpoint(Path(cfg.out) / "best.pt")
    assert result["epochs"] == 1 and info.classes.names == CITYSCAPES.names


def test_shipped_training_configs_parse():
    configs = sorted((REPO / "config").glob("train_*.yaml")) + sorted((REPO / "config" / "families").glob("*.yaml"))
    assert len(configs) >= 5
    for path in configs:
        TrainConfig.from_yaml(path)  # an unknown or invalid key raises ConfigError naming it


def test_moving_average_starts_close_to_the_weights():
    """The EMA's decay warms up: after a few updates it holds the new weights, not the random initial ones."""
    from seg_perception.learning.training import ema_with_warmup
    update = ema_with_warmup(0.999)
    avg, cur = [torch.zeros(3)], [torch.ones(3)]
    update(avg, cur, 0)
    assert float(avg[0][0]) == pytest.approx(0.9)  # decay 1/10 at the first update, not 0.999
    for n in range(1, 200):
        update(avg, [torch.full((3,), 2.0)], n)
    assert float(avg[0][0]) == pytest.approx(2.0, abs=1e-3)
    counters = [torch.tensor(3)]
    update(counters, [torch.tensor(7)], 5)
    assert int(counters[0]) == 7
