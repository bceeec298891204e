"""Training order that depends only on the seed and the epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochShuffle(RandomSampler):
    """A new random order every epoch, drawn from ``seed + epoch`` alone (Lightning calls
    ``set_epoch``), so that a run resumed from a checkpoint sees the same batches as an
    uninterrupted one. ``seed`` defaults to the seed of ``seed_everything``. Being a
    ``RandomSampler``, it is replaced by a shuffling ``DistributedSampler`` under DDP."""

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(len(self.data_source), generator=generator).tolist())
