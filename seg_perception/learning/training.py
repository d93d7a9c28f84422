# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The training loop: data, augmentation, loss, optimiser, schedule, freezing,
early stopping, checkpoints every epoch and resume.

Everything is driven by a `TrainConfig`, which can come from YAML and/or
command-line flags. The output folder holds `last.pt` (full training state,
for --resume), `best.pt` (model checkpoint with metadata, best val mIoU) and
`log.csv`/`log.json` (one row per epoch).

Under torchrun the same loop runs in every process (see distributed.py): each
trains on its share of every global batch through DistributedDataParallel,
and rank 0 alone validates and writes checkpoints and logs.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import BatchSampler, DataLoader, Dataset
from tqdm import tqdm

from ..classes import ClassTable, ClassTableError
from ..evaluation.metrics import confusion_matrix, scores
from ..inference.checkpoint import (
    CheckpointError,
    ModelInfo,
    atomic_save,
    load_checkpoint,
    load_failure,
    save_checkpoint,
)
from ..inference.segmenter import resolve_model
from . import distributed as ddp
from .copy_paste import CopyPaste, object_bank
from .datasets import DatasetError
from .losses import (
    LOSSES,
    SegmentationLoss,
    class_weights_from_counts,
    distillation_loss,
)
from .models import (
    FREEZE_MODES,
    apply_freeze,
    build_model,
    canonical_name,
    class_probabilities,
)
from .pseudo_labels import ThresholdPolicy, pseudo_label
from .sampling import EpochSampler, derived_seed
from .training_data import DatasetSpec, load_training_frames, open_specs
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    normalise,
    to_tensors,
    train_transform,
)
from .unlabelled import UnlabelledSpec, read_spec

#: The accepted values of the TrainConfig keys that take a name; validate() and the CLI both use them.
CHOICES = {"loss": LOSSES, "class_weights": ("none", "enet", "median"), "optimizer": ("adamw", "sgd"),
           "schedule": ("cosine", "poly"), "freeze": FREEZE_MODES, "precision": ("fp32", "bf16"),
           "augment_on": ("loader", "device"), "batch_norm": ("local", "sync", "frozen")}


#: Consecutive optimiser steps with a non-finite loss or gradient after which a run is stopped as diverged.
MAX_NON_FINITE_STEPS = 20


class ConfigError(ValueError):
    """A training configuration with unknown keys or bad values."""


@dataclass
class TrainConfig:
    """Every training option; YAML keys and --flags use these names."""

    # data: one dataset by these keys, or several by `datasets` (a list of training_data.DatasetSpec mappings)
    layout: str = "camvid"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    images: str | None = None          # generic layout
    labels: str | None = None
    classes: str | None = None         # the class table (built-in name or YAML); with `datasets`, the model's
    val_images: str | None = None
    val_labels: str | None = None
    val_drives: list | int | None = None  # validate on these drives (or this many), held out of the train split
    resize: tuple[int, int] | None = None  # resize every frame to (width, height) when loading
    max_images: int | None = None      # use only the first N training pairs (smoke runs)
    datasets: list | None = None       # several datasets: [{name, layout, root, mapping, weight, val_drives, ...}]
    # frames without labels, trained on with a teacher's pseudo-labels: [{name, path, topic, weight, resize, ...}]
    unlabelled: list | None = None
    pseudo_label_from: str | None = None  # the teacher (default: init_from)
    pseudo_threshold: float = 0.9      # a pixel this confident is always a pseudo-label
    pseudo_class_share: float | None = 0.5  # per class, the most confident share of its pixels is kept
    pseudo_floor: float = 0.5          # no pixel under this confidence is kept
    pseudo_thresholds: dict | None = None  # class name -> fixed threshold
    pseudo_flip: bool = True           # the teacher averages each frame and its mirror image
    # model
    arch: str = "lraspp_mobilenet_v3_large"
    backbone: str | None = None
    dropout: float | None = None
    init_from: str | None = None       # checkpoint to fine-tune from
    freeze: str = "none"
    # loss
    loss: str = "ce"
    class_weights: str = "none"        # none | enet | median
    dice_weight: float = 1.0
    aux_weight: float = 0.4
    distill_from: str | None = None    # teacher checkpoint for knowledge distillation
    distill_weight: float = 1.0
    distill_temperature: float = 1.0
    distill_flip: bool = True          # the teacher averages each crop and its mirror image (flip TTA)
    # optimisation
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"           # cosine | poly
    warmup_epochs: float = 1.0
    epochs: int = 100
    batch_size: int = 8                # the global batch: under torchrun, shared among the processes
    # batch-norm statistics in training: local (each process's own share of the batch), sync (over the global
    # batch: SyncBatchNorm, GPUs only) or frozen (the starting checkpoint's running statistics, layers in eval mode)
    batch_norm: str = "local"
    precision: str = "fp32"            # fp32 | bf16: bf16 autocast for the forward pass (weights stay fp32)
    channels_last: bool = False        # NHWC memory layout; faster convolutions on CPUs with oneDNN
    time_budget_min: float | None = None  # stop (and schedule) by wall time instead of epochs
    max_steps: int | None = None       # hard stop after N optimiser steps (smoke runs)
    # augmentation
    crop: tuple[int, int] = (480, 360)
    scale: tuple[float, float] = (0.75, 1.5)
    hflip: float = 0.5
    jitter: float = 0.2
    blur: float = 0.0                  # probability of a Gaussian blur (sigma 0.3-1.5 px)
    noise: float = 0.0                 # largest std of added Gaussian noise, as a fraction of 255
    copy_paste: float = 0.0            # probability of pasting objects cut from other labelled frames into a frame
    copy_paste_classes: list | None = None  # the classes cut and pasted (default: the class table's obstacles)
    augment_on: str = "loader"         # loader: torchvision per frame (in workers); device: whole batches on the GPU
    # early stopping and bookkeeping
    bn_momentum: float | None = 0.1    # torchvision's MobileNetV3 uses 0.01, too slow for training from scratch
    precise_bn_batches: int = 0        # re-estimate batch-norm statistics on N train batches before each eval
    ema_decay: float | None = None     # evaluate and save an exponential moving average of the weights
    patience: int | None = None
    min_delta: float = 0.0
    eval_every: int = 1
    seed: int = 0
    threads: int | None = None
    num_workers: int = 0
    out: str = "runs/train"

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; known keys: {sorted(names)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a mapping of keys to values")
        return cls.from_dict(data, source=str(path))

    def validate(self) -> None:
        self.crop = tuple(int(v) for v in self.crop)
        self.scale = tuple(float(v) for v in self.scale)
        checks = [(getattr(self, key) in allowed,
                   f"{key} '{getattr(self, key)}' unknown; choose one of {list(allowed)}")
                  for key, allowed in CHOICES.items()]
        checks += [
            (self.lr > 0, "lr must be positive"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (len(self.crop) == 2 and min(self.crop) > 0, "crop must be two positive ints (width, height)"),
            (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
             "scale must be (min, max) with 0 < min <= max"),
            (self.freeze == "none" or self.init_from, "freeze needs init_from (a checkpoint to fine-tune)"),
            (self.batch_norm != "frozen" or self.init_from,
             "batch_norm frozen needs init_from (a checkpoint whose batch-norm statistics are kept)"),
            (self.batch_norm != "frozen" or not self.precise_bn_batches,
             "batch_norm frozen keeps the statistics that precise_bn_batches would re-estimate; use one of them"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be between 0 and 1 (e.g. 0.999)"),
            (self.distill_weight >= 0 and self.distill_temperature > 0,
             "distill_weight must be >= 0 and distill_temperature > 0"),
            (0 <= self.blur <= 1 and 0 <= self.noise <= 1, "blur (a probability) and noise must be within 0..1"),
            (self.datasets is None or (isinstance(self.datasets, list) and self.datasets),
             "datasets must be a non-empty list of dataset mappings"),
            (self.unlabelled is None or (isinstance(self.unlabelled, list) and self.unlabelled),
             "unlabelled must be a non-empty list of sources ({name, path, topic, weight, ...})"),
            (not self.unlabelled or self.pseudo_label_from or self.init_from,
             "unlabelled sources need a teacher for their pseudo-labels: pseudo_label_from or init_from"),
            (0 <= self.copy_paste <= 1, "copy_paste (a probability) must be within 0..1"),
            (not self.copy_paste or self.augment_on == "loader",
             "copy_paste runs per frame: it needs augment_on loader"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        if self.unlabelled:
            self.threshold_policy()

    def dataset_specs(self) -> list[DatasetSpec]:
        """The run's datasets: the `datasets` list, or the single dataset the layout keys describe."""
        if self.datasets:
            try:
                return [DatasetSpec.from_dict(d, i) for i, d in enumerate(self.datasets)]
            except TypeError as exc:
                raise ConfigError(f"datasets: {exc}") from None
        generic = self.layout == "generic"
        held_out = self.val_drives is not None
        return [DatasetSpec(
            name=self.layout, layout=self.layout, root=self.root, split=self.train_split, images=self.images,
            labels=self.labels, classes=self.classes, val_drives=self.val_drives,
            val_split=None if generic or held_out or not self.val_split else self.val_split,
            val_images=self.val_images if generic and not held_out else None, val_labels=self.val_labels,
            resize=tuple(self.resize) if self.resize else None, max_images=self.max_images)]

    def unlabelled_specs(self) -> list[UnlabelledSpec]:
        """The run's sources of frames without labels."""
        try:
            return [UnlabelledSpec.from_dict(d, i) for i, d in enumerate(self.unlabelled or [])]
        except TypeError as exc:
            raise ConfigError(f"unlabelled: {exc}") from None

    def with_roots(self, assignments: list[str]) -> dict:
        """`datasets` with roots and `unlabelled` with paths set by NAME=PATH (`--data-root`)."""
        if not self.datasets and not self.unlabelled:
            raise ConfigError("--data-root NAME=PATH needs a config with a datasets or unlabelled list "
                              "(else use --root)")
        labelled = [spec.name for spec in self.dataset_specs()] if self.datasets else []
        unlabelled = [spec.name for spec in self.unlabelled_specs()]
        roots = {}
        for item in assignments:
            name, sep, path = item.partition("=")
            if not sep or name not in labelled + unlabelled:
                raise ConfigError(f"--data-root {item}: expected NAME=PATH with NAME one of {labelled + unlabelled}")
            roots[name] = path
        out = {}
        if self.datasets:
            out["datasets"] = [{**d, "root": roots.get(n, d.get("root"))} for d, n in zip(self.datasets, labelled)]
        if self.unlabelled:
            out["unlabelled"] = [{**d, "path": roots.get(n, d.get("path"))}
                                 for d, n in zip(self.unlabelled, unlabelled)]
        return out

    def threshold_policy(self) -> ThresholdPolicy:
        try:
            return ThresholdPolicy(cap=self.pseudo_threshold, class_share=self.pseudo_class_share,
                                   floor=self.pseudo_floor, per_class=self.pseudo_thresholds)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def arch_kwargs(self) -> dict:
        kw = {}
        if self.backbone is not None:
            kw["backbone"] = self.backbone
        if self.dropout is not None:
            kw["dropout"] = self.dropout
        return kw


class AugmentedPairs(Dataset):
    """Pairs held in memory (decoded once), augmented on every access (after copy-paste, when given)."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], transform, mean, std, *, paste=None):
        self.images, self.labels, self.transform = images, labels, transform
        self.mean, self.std, self.paste = mean, std, paste

    def __len__(self) -> int:
        return len(self.images)

    def _augmented(self, i: int, rng: np.random.Generator):
        image, label = self.images[i], self.labels[i]
        if self.paste is not None:
            image, label = self.paste(image, label, rng)
        return self.transform(*to_tensors(image, label))

    def __getitem__(self, item):
        """item: a frame index, or (index, seed) from EpochSampler: then the augmentation uses that seed only."""
        if isinstance(item, tuple):
            i, seed = item
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._augmented(i, np.random.default_rng(seed))
        return self._augmented(item, np.random.default_rng())


@torch.no_grad()
def evaluate_model(model, images, labels, classes: ClassTable, mean, std, *, batch_size: int = 4,
                   device="cpu", progress: bool = True) -> dict:
    """Full-resolution evaluation of in-memory frames; returns scores plus the confusion matrix."""
    model.eval()
    n = classes.num_classes
    cm = np.zeros((n, n), np.int64)
    order = range(0, len(images), batch_size)
    for start in tqdm(order, desc="val", leave=False, file=sys.stderr, disable=not progress):
        chunk = images[start:start + batch_size]
        same = all(c.shape == chunk[0].shape for c in chunk)
        groups = [chunk] if same else [[c] for c in chunk]
        preds = []
        for g in groups:
            x = torch.from_numpy(np.stack(g)).permute(0, 3, 1, 2).to(device)
            preds.extend(model(normalise(x, mean, std)).argmax(1).to(torch.uint8).cpu().numpy())
        for pred, lab in zip(preds, labels[start:start + batch_size]):
            cm += confusion_matrix(lab, pred, n, classes.ignore_index)
    result = scores(cm, classes.names)
    result["confusion_matrix"] = cm.tolist()
    return result


def ema_with_warmup(decay: float):
    """EMA update whose decay grows as min(decay, (1 + n) / (10 + n)) over the first updates.

    A plain 0.999 average keeps the first thousand steps' weights for long; from
    scratch those are near-random, and the average of them is no model at all.
    """
    def update(averaged: list, current: list, num_averaged) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1 - d)
        else:  # counters such as num_batches_tracked
            torch._foreach_copy_(averaged, current)
    return update


def transfer_weights(source: torch.nn.Module, target: torch.nn.Module) -> list[str]:
    """Copy every tensor whose name and shape match; returns the target's tensors left as initialised."""
    theirs = source.state_dict()
    mine = target.state_dict()
    kept = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    target.load_state_dict({**mine, **kept})
    return [k for k in mine if k not in kept]


def lr_factor(progress: float, warmup: float, schedule: str) -> float:
    """Warmup (linear, as a fraction of training) followed by cosine or poly(0.9) decay."""
    if progress < warmup:
        return max(progress / warmup, 1e-3)
    p = min(1.0, (progress - warmup) / max(1e-8, 1 - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    return (1 - p) ** 0.9


def _quiet(*args, **kwargs) -> None:
    """The log of processes other than rank 0."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


#: What a training state may hold besides tensors and plain Python values: numpy's RNG state arrays.
_RESUME_SAFE_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType,
                        np.dtypes.Float64DType, np.dtypes.Int64DType, np.dtypes.Float32DType]


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class Trainer:
    """Runs one training job described by a TrainConfig; resumable from out/last.pt."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log=print,
                 ranks: ddp.Ranks | None = None):
        cfg.validate()
        self.ranks = ranks = ranks or ddp.Ranks()
        if ranks.distributed and not torch.distributed.is_initialized():
            raise ConfigError("a distributed run needs its process group (distributed.process_group) first")
        try:
            self.batch_per_process = ddp.batch_per_process(cfg.batch_size, ranks)
        except ddp.DistributedError as exc:
            raise ConfigError(str(exc)) from None
        # rank 0 speaks for the run; the others train quietly
        self.cfg, self.progress, self.log = cfg, progress and ranks.main, log if ranks.main else _quiet
        self.out = Path(cfg.out)
        self.resume = resume
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.device = ranks.device()
        if cfg.batch_norm == "sync" and ranks.distributed and self.device.type != "cuda":
            raise ConfigError("batch_norm sync needs GPUs: torch's SyncBatchNorm does not run on the CPU (gloo); "
                              "use local, or frozen when fine-tuning")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels

        try:
            splits = open_specs(cfg.dataset_specs(), cfg.classes if cfg.datasets else None, cfg.seed)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        self.classes = splits[0].train.classes
        self.train_name = "; ".join(s.train.description for s in splits)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if cfg.init_from:
            base, base_info = load_checkpoint(resolve_model(cfg.init_from))
            self.arch, self.arch_kw = base_info.arch, base_info.arch_kwargs
            self.mean, self.std = base_info.mean, base_info.std
            self.lineage = {"checkpoint": Path(cfg.init_from).name, "training": base_info.training}
            if base_info.classes.names == self.classes.names:
                self.model = base
            else:  # other classes: keep what the checkpoint learnt, give it a new head for the new class table
                self.model = build_model(self.arch, num_classes=self.classes.num_classes, **self.arch_kw)
                self.lineage["new_head"] = transfer_weights(base, self.model)
                self.lineage["classes"] = list(base_info.classes.names)
                self.log(f"init_from {cfg.init_from}: classes {list(base_info.classes.names)} -> "
                         f"{list(self.classes.names)}; new weights for {', '.join(self.lineage['new_head'])}")
        else:
            self.lineage = None
            self.arch, self.arch_kw = canonical_name(cfg.arch), cfg.arch_kwargs()
            self.model = build_model(self.arch, num_classes=self.classes.num_classes, **self.arch_kw)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.teacher, self.teacher_info = self._load_teacher(cfg.distill_from) if cfg.distill_from else (None, None)
        if cfg.bn_momentum is not None:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = cfg.bn_momentum
        frozen_ids = {id(c) for f in apply_freeze(self.model, cfg.freeze) for c in f.modules()}
        self.frozen_names = {name for name, m in self.model.named_modules() if id(m) in frozen_ids}
        if cfg.batch_norm == "sync" and ranks.distributed:  # same parameters and names; statistics over all shares
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # The averaged copy includes batch-norm buffers, so it can be evaluated and saved as it is.
        self.ema = (AveragedModel(self.model, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
                    if cfg.ema_decay else None)

        self.frames = load_training_frames(splits, progress=progress)
        self.labelled_frames = len(self.frames.images)  # pseudo-labelled frames come after these
        self.pseudo = self._add_pseudo_labelled(cfg.unlabelled_specs()) if cfg.unlabelled else None
        self.train_images, self.train_labels = self.frames.images, self.frames.labels

        weights = None
        if cfg.class_weights != "none":
            counts = np.zeros(self.classes.num_classes, np.int64)
            for lab in self.train_labels:
                counts += np.bincount(lab.ravel(), minlength=256)[: self.classes.num_classes]
            weights = class_weights_from_counts(counts, method=cfg.class_weights)
        self.class_weights = weights
        self.criterion = SegmentationLoss(cfg.loss, ignore_index=self.classes.ignore_index,
                                          class_weights=weights, dice_weight=cfg.dice_weight).to(self.device)

        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)

        # device augmentation draws per batch from gen: each process its own draws
        self.gen = gen = torch.Generator().manual_seed(cfg.seed + 7919 * ranks.rank)
        n = len(self.train_images)
        try:
            self.sampler = EpochSampler(n, weights=self.frames.sample_weights() if len(self.frames.names) > 1 else None,
                                        seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.batch_sampler = BatchSampler(self.sampler, self.batch_per_process, drop_last=n > cfg.batch_size)
        augment = dict(crop=cfg.crop, scale=cfg.scale, hflip=cfg.hflip, jitter=cfg.jitter, blur=cfg.blur,
                       noise=cfg.noise, ignore_index=self.classes.ignore_index)
        if cfg.augment_on == "device":
            self.batch_augment = BatchAugment(self.train_images, self.train_labels, device=self.device, **augment)
            self.loader = None
        else:
            dataset = AugmentedPairs(self.train_images, self.train_labels, train_transform(**augment),
                                     self.mean, self.std, paste=self._copy_paste() if cfg.copy_paste else None)
            self.loader = DataLoader(dataset, batch_sampler=self.batch_sampler, num_workers=cfg.num_workers,
                                     generator=gen, persistent_workers=cfg.num_workers > 0,
                                     pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = max(1, len(self.batch_sampler))
        self.net = ddp.wrap(self.model, ranks, self.device)  # what a training step calls

        self.epoch = 0
        self.step = 0
        self.elapsed = 0.0
        self.best_miou = -1.0
        self.best_epoch = None
        self.epochs_without_gain = 0
        self.non_finite_streak = 0
        self.history: list[dict] = []
        self.stop_reason = None
        if resume:
            self._load_state()

    def _load_teacher(self, path: str) -> tuple[torch.nn.Module, ModelInfo]:
        """A frozen model whose softened predictions the student learns to match."""
        teacher, info = load_checkpoint(resolve_model(path))
        if info.classes.names != self.classes.names:
            raise ConfigError(f"distill_from {path} has classes {list(info.classes.names)}, "
                              f"dataset has {list(self.classes.names)}")
        teacher.to(self.device).eval().requires_grad_(False)
        if self.cfg.channels_last:
            teacher.to(memory_format=torch.channels_last)
        return teacher, info

    def _add_pseudo_labelled(self, specs: list[UnlabelledSpec]) -> dict:
        """Read every unlabelled source, label it with the teacher and add it to the training frames.

        Sources are read first, so a source without a readable frame fails before the teacher runs.
        """
        cfg = self.cfg
        try:
            sources = [(spec, read_spec(spec, progress=self.progress)) for spec in specs]
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        teacher_path = resolve_model(cfg.pseudo_label_from or cfg.init_from)
        teacher, info = load_checkpoint(teacher_path)
        if info.classes.names != self.classes.names:
            raise ConfigError(f"the pseudo-label teacher {teacher_path} has classes {list(info.classes.names)}, "
                              f"the model {list(self.classes.names)}")
        teacher.to(self.device)
        record = {"teacher": teacher_path.name, "sources": []}
        for spec, frames in sources:
            labelled = pseudo_label(teacher, frames.images, self.classes, info.mean, info.std,
                                    policy=cfg.threshold_policy(), flip=cfg.pseudo_flip, device=self.device,
                                    progress=self.progress)
            self.log(f"pseudo-labels of {spec.name} ({len(frames)} frames of {len(set(frames.drives))} drives, "
                     f"teacher {record['teacher']}): {labelled.summary()}")
            k = len(self.frames.names)
            self.frames.images += frames.images
            self.frames.labels += labelled.labels
            self.frames.source += [k] * len(frames)
            self.frames.weights.append(float(spec.weight))
            self.frames.names.append(spec.name)
            self.frames.descriptions.append(f"{spec.path} without labels ({len(frames)} frames, pseudo-labelled)")
            record["sources"].append({"name": spec.name, "path": str(spec.path), "topic": spec.topic,
                                      "frames": len(frames), "drives": len(set(frames.drives)),
                                      "skipped": dict(frames.skipped), "thresholds": labelled.thresholds,
                                      "kept_share": labelled.kept_share, "kept_pixels": labelled.kept_pixels})
        del teacher
        return record

    def _copy_paste(self) -> CopyPaste:
        """Objects cut from the labelled frames (never from pseudo-labels), pasted onto the ground."""
        names = self.cfg.copy_paste_classes or list(self.classes.obstacle)
        try:
            class_ids, ground_ids = self.classes.ids(names), self.classes.ids(self.classes.drivable)
        except ClassTableError as exc:
            raise ConfigError(f"copy_paste_classes: {exc}") from None
        if not ground_ids:
            raise ConfigError("copy_paste needs the class table's drivable classes (the ground objects stand on)")
        n = self.labelled_frames
        bank = object_bank(self.frames.images[:n], self.frames.labels[:n], class_ids, ground_ids)
        counts = np.bincount([o.class_id for o in bank], minlength=self.classes.num_classes)
        self.log(f"copy-paste: {len(bank)} objects (" + ", ".join(
            f"{self.classes.names[c]} {counts[c]}" for c in class_ids) + f"), p {self.cfg.copy_paste}")
        return CopyPaste(bank, ground_ids, probability=self.cfg.copy_paste)

    def batches(self):
        """Augmented training batches (uint8 or 0..255 float images, label masks) for one epoch."""
        if self.loader is not None:
            yield from self.loader
            return
        for items in self.batch_sampler:
            yield self.batch_augment([i for i, _ in items], self.gen)

    def _network_input(self, img: torch.Tensor, mean, std) -> torch.Tensor:
        """A uint8 batch as a network takes it: on the device, normalised, in the configured memory layout."""
        x = normalise(img.to(self.device, non_blocking=True), mean, std)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    @torch.no_grad()
    def teacher_probs(self, img: torch.Tensor) -> torch.Tensor:
        """The teacher's class probabilities at the distillation temperature (flip-averaged if distill_flip)."""
        x = self._network_input(img, self.teacher_info.mean, self.teacher_info.std)
        with self._autocast():
            return class_probabilities(self.teacher, x, flip=self.cfg.distill_flip,
                                       temperature=self.cfg.distill_temperature)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and saved: the moving average when ema_decay is set."""
        return self.ema.module if self.ema is not None else self.model

    # -- state ----------------------------------------------------------
    def _info(self, record: dict) -> ModelInfo:
        return ModelInfo(arch=self.arch, arch_kwargs=self.arch_kw, classes=self.classes, mean=tuple(self.mean),
                         std=tuple(self.std), input_size=tuple(self.cfg.crop), training=record)

    def _record(self) -> dict:
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), None)
        return {
            "dataset": self.train_name,
            "train_images": len(self.train_images),
            "epochs": self.epoch,
            "steps": self.step,
            "train_time_s": round(self.elapsed, 1),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.cfg).items()},
            "best_epoch": self.best_epoch,
            "val_miou": best.get("val_miou") if best else None,
            "val_pixel_accuracy": best.get("val_pixel_accuracy") if best else None,
            "val_per_class_iou": best.get("val_per_class_iou") if best else None,
            "val_datasets": best.get("val_datasets") if best else None,
            "datasets": [{"name": n, "data": d, "weight": w} for n, d, w in
                         zip(self.frames.names, self.frames.descriptions, self.frames.weights)],
            "torch": str(torch.__version__),
            "processes": self.ranks.world_size,
            "fine_tuned_from": self.lineage,  # the starting checkpoint's own record, for the model's history
            "pseudo_labels": self.pseudo,
            "distilled_from": ({"checkpoint": Path(self.cfg.distill_from).name,
                                "val_miou": self.teacher_info.training.get("val_miou"),
                                "flip": self.cfg.distill_flip, "temperature": self.cfg.distill_temperature}
                               if self.teacher is not None else None),
        }

    def _save_state(self) -> None:
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed, "best_miou": self.best_miou,
            "best_epoch": self.best_epoch, "epochs_without_gain": self.epochs_without_gain,
            "history": self.history, "rng": _rng_state(), "loader_rng": self.gen.get_state(),
            "stop_reason": self.stop_reason, "non_finite_streak": self.non_finite_streak,
            "config": dataclasses.asdict(self.cfg),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
        atomic_save(state, self.out / "last.pt")

    def _load_state(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise CheckpointError(f"--resume: no {path} to resume from")
        try:
            # weights_only: tensors, plain Python values and numpy arrays (the RNG state) only; a
            # crafted file cannot run code here.
            with torch.serialization.safe_globals(_RESUME_SAFE_GLOBALS):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"--resume: {path} is not a training state this trainer wrote (refused to load "
                                  f"it: {load_failure(exc)})") from None
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None:
                if state.get("ema") is None:
                    raise CheckpointError("it was trained without ema_decay")
                self.ema.load_state_dict(state["ema"])
        except Exception as exc:
            raise CheckpointError(f"--resume: {path} is corrupt or from another model ({exc})") from None
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed"]
        self.best_miou, self.best_epoch = state["best_miou"], state["best_epoch"]
        self.epochs_without_gain, self.history = state["epochs_without_gain"], state["history"]
        self.non_finite_streak = state.get("non_finite_streak", 0)
        # A resumed run continues: stop reasons of the earlier run (budget, max_steps) are re-checked.
        _set_rng_state(state["rng"])
        if "loader_rng" in state and not self.ranks.distributed:
            self.gen.set_state(state["loader_rng"])
        elif self.ranks.distributed:  # last.pt holds rank 0's generator; each process draws on from its own seed
            self.gen.manual_seed(derived_seed(self.cfg.seed, self.ranks.rank, self.step))
        self.log(f"resumed from {path} at epoch {self.epoch} (step {self.step}, best val mIoU "
                 f"{100 * max(self.best_miou, 0):.1f})")

    def _write_logs(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "log.json").write_text(json.dumps(self.history, indent=1))
        if not self.history:
            return
        keys = ["epoch", "step", "lr", "train_loss", "skipped_steps", "val_miou", "val_pixel_accuracy",
                "epoch_time_s", "elapsed_s"]
        sets = list(self.frames.val) if len(self.frames.val) > 1 else []
        set_keys = [f"val_miou_{n}" for n in sets]
        class_keys = [f"iou_{n}" for n in self.classes.names]
        with open(self.out / "log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys + set_keys + class_keys)
            for h in self.history:
                per = h.get("val_per_class_iou") or {}
                by_set = h.get("val_datasets") or {}
                w.writerow([h.get(k) for k in keys] + [by_set.get(n, {}).get("miou") for n in sets]
                           + [per.get(n) for n in self.classes.names])

    # -- loop -----------------------------------------------------------
    def _progress(self) -> float:
        by_epoch = self.step / (self.cfg.epochs * self.steps_per_epoch)
        if self.cfg.time_budget_min:
            return max(by_epoch, self.elapsed / (60 * self.cfg.time_budget_min))
        return by_epoch

    def _done(self) -> str | None:
        if self.stop_reason:
            return self.stop_reason
        if self.epoch >= self.cfg.epochs:
            return "epochs"
        if self.cfg.time_budget_min and self.elapsed >= 60 * self.cfg.time_budget_min:
            return "time budget"
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return "max_steps"
        return None

    def _set_train_mode(self, model: torch.nn.Module | None = None) -> None:
        model = self.model if model is None else model
        model.train()
        frozen_bn = self.cfg.batch_norm == "frozen"
        for name, m in model.named_modules():
            if name in self.frozen_names or (frozen_bn and isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
                m.eval()  # frozen layers keep their batch-norm statistics

    def train_epoch(self) -> float:
        self._set_train_mode()
        cfg = self.cfg
        warmup = cfg.warmup_epochs / cfg.epochs
        losses = []
        lr = 0.0
        self.epoch_skipped = 0
        self.sampler.set_epoch(self.epoch)
        budget_s = 60 * cfg.time_budget_min if cfg.time_budget_min else None
        t0 = time.perf_counter()
        bar = tqdm(self.batches(), total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False,
                   file=sys.stderr, disable=not self.progress)
        for img, mask in bar:
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                break
            lr = cfg.lr * lr_factor(self._progress(), warmup, cfg.schedule)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            x = self._network_input(img, self.mean, self.std)
            y = mask.to(self.device, non_blocking=True).long()
            buffers = [b.detach().clone() for b in self.model.buffers()]  # batch-norm statistics before this batch
            with self._autocast():
                outs = self.net(x)
            loss = self.criterion(outs["out"].float(), y)
            if self.teacher is not None and cfg.distill_weight > 0:
                loss = loss + cfg.distill_weight * distillation_loss(
                    outs["out"], self.teacher_probs(img), y, temperature=cfg.distill_temperature,
                    ignore_index=self.classes.ignore_index)
            if "aux" in outs:
                loss = loss + cfg.aux_weight * self.criterion(outs["aux"].float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP: the gradients come out averaged over every process
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
            loss_value = float(loss.detach())
            out_of_time = False
            if self.ranks.distributed:  # one collective: the run's mean loss, and whether any process is out of time
                elapsed = self.elapsed + time.perf_counter() - t0
                total, votes = ddp.all_sum([loss_value, float(budget_s is not None and elapsed >= budget_s)],
                                           self.ranks, self.device)
                loss_value, out_of_time = total / self.ranks.world_size, votes > 0
            if math.isfinite(loss_value) and bool(torch.isfinite(grad_norm)):
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                losses.append(loss_value)
                self.non_finite_streak = 0
            else:  # one bad batch must not turn every weight (or BN statistic) into NaN: undo it
                with torch.no_grad():
                    for b, before in zip(self.model.buffers(), buffers):
                        b.copy_(before)
                self.epoch_skipped += 1
                self.non_finite_streak += 1
            self.step += 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}" if losses else "n/a", lr=f"{lr:.2e}")
            now = time.perf_counter()
            self.elapsed += now - t0
            t0 = now
            if self.non_finite_streak >= MAX_NON_FINITE_STEPS:
                self.stop_reason = (f"diverged: non-finite loss or gradients in {MAX_NON_FINITE_STEPS} consecutive "
                                    "steps (try a lower lr or precision fp32)")
                break
            if out_of_time if self.ranks.distributed else budget_s is not None and self.elapsed >= budget_s:
                break
        self.last_lr = lr
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def recalibrate_bn(self, model: torch.nn.Module, batches: int) -> None:
        """Precise BN: replace running statistics by their average over `batches` augmented train batches."""
        bns = [m for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               and name not in self.frozen_names]
        if not bns or batches <= 0:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self._set_train_mode(model)
        for i, (img, _) in enumerate(self.batches()):
            if i >= batches:
                break
            model(self._network_input(img, self.mean, self.std))
        for m, mom in zip(bns, saved):
            m.momentum = mom

    def validate(self) -> dict:
        """Each dataset's held-out frames scored on their own; the run's val_miou is the mean of their mIoUs.

        Pixel accuracy and per-class IoU are pooled over every dataset's frames.
        """
        per, pooled = {}, 0
        for name, (images, labels) in self.frames.val.items():
            res = evaluate_model(self.eval_model, images, labels, self.classes, self.mean, self.std,
                                 device=self.device, progress=self.progress)
            per[name] = {"miou": res["miou"], "pixel_accuracy": res["pixel_accuracy"],
                         "per_class_iou": res["per_class_iou"]}
            pooled = pooled + np.asarray(res["confusion_matrix"])
        total = scores(pooled, self.classes.names)
        return {"miou": float(np.mean([r["miou"] for r in per.values()])), "pixel_accuracy": total["pixel_accuracy"],
                "per_class_iou": total["per_class_iou"], "datasets": per}

    def _score_epoch(self, row: dict) -> None:
        """Validation, best checkpoint and early stopping after an epoch (rank 0's part)."""
        cfg = self.cfg
        res = self.validate()
        row.update(val_miou=res["miou"], val_pixel_accuracy=res["pixel_accuracy"],
                   val_per_class_iou=res["per_class_iou"], val_datasets=res["datasets"])
        if self.best_epoch is None or res["miou"] > self.best_miou + cfg.min_delta:
            self.best_miou, self.best_epoch, self.epochs_without_gain = res["miou"], self.epoch, 0
            self.history.append(row)
            save_checkpoint(self.out / "best.pt", self.eval_model, self._info(self._record()))
            self.history.pop()
        else:
            self.epochs_without_gain += 1
        if cfg.patience is not None and self.epochs_without_gain >= cfg.patience:
            self.stop_reason = f"early stopping: no val mIoU gain for {cfg.patience} evaluations"

    def run(self) -> dict:
        cfg = self.cfg
        main, ranks = self.ranks.main, self.ranks
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        where = f"device {self.device}" + (f", {ranks.world_size} processes ({ranks.backend}) of "
                                           f"{self.batch_per_process} frames per step each"
                                           if ranks.distributed else "")
        self.log(f"training {self.arch} on {self.train_name}: {len(self.train_images)} images, "
                 f"{self.steps_per_epoch} steps/epoch, {where}, out {self.out}")
        while (reason := self._done()) is None:
            t_epoch = time.perf_counter()
            train_loss = self.train_epoch()
            self.epoch += 1
            self.elapsed = ddp.all_max(self.elapsed, ranks, self.device)  # so every process stops alike
            row = {"epoch": self.epoch, "step": self.step, "lr": self.last_lr, "train_loss": train_loss,
                   "skipped_steps": self.epoch_skipped}
            if self.frames.val and (self.epoch % cfg.eval_every == 0 or self._done()):
                # every process: with SyncBatchNorm the re-estimated statistics are a collective
                self.recalibrate_bn(self.eval_model, cfg.precise_bn_batches)
                if main:
                    self._score_epoch(row)
                decided = ddp.from_main((row, self.best_miou, self.best_epoch, self.epochs_without_gain,
                                         self.stop_reason), ranks)
                row, self.best_miou, self.best_epoch, self.epochs_without_gain, self.stop_reason = decided
            row["epoch_time_s"] = round(time.perf_counter() - t_epoch, 2)
            row["elapsed_s"] = round(self.elapsed, 1)
            self.history.append(row)
            if not self.frames.val:
                self.best_epoch = self.epoch
                if main:
                    save_checkpoint(self.out / "best.pt", self.eval_model, self._info(self._record()))
            if main:
                self._save_state()
                self._write_logs()
            miou = row.get("val_miou")
            by_set = "".join(f", {n} {100 * r['miou']:.2f}" for n, r in row.get("val_datasets", {}).items()
                             if len(self.frames.val) > 1)
            self.log(f"epoch {self.epoch}: loss {train_loss:.4f}, lr {self.last_lr:.2e}"
                     + (f", {self.epoch_skipped} steps skipped (non-finite loss or gradients)"
                        if self.epoch_skipped else "")
                     + (f", val mIoU {100 * miou:.2f} (best {100 * self.best_miou:.2f} @ {self.best_epoch})"
                        if miou is not None else "") + by_set + f", {row['epoch_time_s']:.0f}s")
        self.stop_reason = reason
        if main:
            self._save_state()
        self.log(f"stopped: {reason}; best val mIoU "
                 f"{100 * max(self.best_miou, 0):.2f} at epoch {self.best_epoch}; checkpoint {self.out / 'best.pt'}")
        # Refresh best.pt's record so it carries the final training time and epochs.
        if main and (self.out / "best.pt").is_file():
            best_model, info = load_checkpoint(self.out / "best.pt")
            info.training.update(total_epochs=self.epoch, total_train_time_s=round(self.elapsed, 1),
                                 stop_reason=reason)
            save_checkpoint(self.out / "best.pt", best_model, info)
        return {"best_miou": self.best_miou, "best_epoch": self.best_epoch, "epochs": self.epoch,
                "steps": self.step, "stop_reason": reason, "history": self.history}
