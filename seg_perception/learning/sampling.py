# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The order of one training epoch, split between the processes of a run, each frame with its own seed.

Every process draws the same order (seeded by the run's seed and the epoch) and process r of W takes
positions r, r + W, r + 2W, ... as torch's DistributedSampler does; so step k of W processes with
batch B / W each trains on the same frames as step k of one process with batch B. Unlike
DistributedSampler, the order may be a weighted draw (several datasets mixed by weight), and each item
carries a seed for its augmentation drawn from (seed, epoch, position): a frame is scaled, cropped and
flipped the same way whichever process or loader worker handles it, so runs with 1 or W processes see
the same inputs.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integers; nearby keys give unrelated seeds."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSampler(Sampler):
    """Yields (frame index, augmentation seed) for this process's share of the epoch (see the module doc)."""

    def __init__(self, n: int, *, weights=None, seed: int = 0, rank: int = 0, world_size: int = 1):
        if n < world_size:
            raise ValueError(f"{n} training frames cannot be shared among {world_size} processes")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> torch.Tensor:
        """The whole epoch's frame indices, the same in every process."""
        g = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch))
        if self.weights is None:
            return torch.randperm(self.n, generator=g)
        return torch.multinomial(self.weights, self.n, replacement=True, generator=g)

    def __len__(self) -> int:
        return self.n // self.world_size  # the tail that does not split evenly is left out, as drop_last does

    def __iter__(self):
        order = self.order().tolist()
        for pos in range(self.rank, len(self) * self.world_size, self.world_size):
            yield order[pos], derived_seed(self.seed, self.epoch, pos, 1)
