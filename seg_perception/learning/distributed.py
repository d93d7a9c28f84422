# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Training over several processes and machines with torchrun and DistributedDataParallel.

torchrun starts the processes (one per GPU, or a few sharing the CPUs) on each machine and gives each its
RANK, LOCAL_RANK and WORLD_SIZE; here we read them, join the process group (NCCL between GPUs, gloo on
CPUs) and wrap the model in DistributedDataParallel, which averages the gradients of every step. A plain
`seg-perception train` is world size 1 and touches none of it.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from .models import train_outputs

#: how long a process waits in a collective (rank 0 validates while the others wait)
TIMEOUT = datetime.timedelta(minutes=60)


class DistributedError(ValueError):
    """A run that cannot be split as asked (bad torchrun environment, a batch that does not divide)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run; the default is a run of one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates and writes checkpoints and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, env=None) -> "Ranks":
        """What torchrun set (RANK, WORLD_SIZE, LOCAL_RANK); none of them: one process."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"RANK {rank} and WORLD_SIZE {world} do not describe a run")
        return cls(rank, world, local)

    def device(self) -> torch.device:
        """This process's GPU (LOCAL_RANK on its machine), else the CPU."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", self.local_rank) if self.distributed else torch.device("cuda")


def batch_per_process(batch_size: int, ranks: Ranks) -> int:
    """batch_size is the global batch, so that a run's result does not depend on how many processes share it."""
    if batch_size % ranks.world_size:
        raise DistributedError(f"batch_size {batch_size} (the global batch) does not divide among the "
                               f"{ranks.world_size} processes of this run; use a multiple of {ranks.world_size}, "
                               "or start another number of processes")
    return batch_size // ranks.world_size


@contextlib.contextmanager
def process_group(ranks: Ranks):
    """Joined to the run's process group for the block (NCCL when there are GPUs, gloo otherwise)."""
    if not ranks.distributed:
        yield ranks
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", ranks.local_rank))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield replace(ranks, backend=dist.get_backend())
    finally:
        dist.destroy_process_group()


class TrainForward(torch.nn.Module):
    """The training forward pass (main and auxiliary logits) as a module's forward.

    DistributedDataParallel synchronises the gradients of what runs through its wrapped module's forward;
    the models' forward_train is not their forward, so it is wrapped here.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict:
        return train_outputs(self.model, x)


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: DDP around the training forward when distributed."""
    net = TrainForward(model)
    if not ranks.distributed:
        return net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """The sums over all processes (one collective for several figures)."""
    if not ranks.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_max(value: float, ranks: Ranks, device: torch.device) -> float:
    if not ranks.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def from_main(obj, ranks: Ranks):
    """Rank 0's object in every process (decisions only rank 0 takes: validation, early stopping)."""
    if not ranks.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
