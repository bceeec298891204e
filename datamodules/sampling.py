"""Data loaders of the data modules: a training order that depends only on the seed and the
epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


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


def make_loader(
    dataset: Dataset | None, batch_size: int, shuffle: bool, num_workers: int, owner: str
) -> DataLoader:
    """Batches of ``dataset``, in :class:`EpochShuffle` order for training (``shuffle``), else in
    order; ``owner`` names the data module in the error raised before ``setup()``."""
    if dataset is None:
        raise RuntimeError(f"{owner}.setup() must be called before requesting loaders")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffle(dataset) if shuffle else None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
