"""Data loaders of the data modules: a training order that depends only on the seed and the
epoch, a training loader that resumes in the middle of an epoch, and evaluation loaders that
read each example once under DDP."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

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


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that Lightning checkpoints (it has ``state_dict``/``load_state_dict``):
    the state is the sampler's epoch and the number of batches handed out in it. Resumed from a
    checkpoint taken in the middle of that epoch, the next pass skips those batches (they are
    loaded, not trained on), so the run goes on with the batches an uninterrupted run would see.
    Lightning does not prefetch from sized loaders, so the count is the batches trained on.

    The skipping happens at the first ``next``, after Lightning has set the sampler's epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = 0
        self._resume_at: dict[str, int] | None = None

    def _epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch(), "batches": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = dict(state)

    def __iter__(self) -> Iterator[Any]:
        resume, self._resume_at = self._resume_at, None
        iterator = super().__iter__()
        self.batches_done = 0
        if resume is not None and resume["epoch"] == self._epoch():
            for _ in range(resume["batches"]):
                next(iterator)
            self.batches_done = resume["batches"]
        for batch in iterator:
            self.batches_done += 1
            yield batch


def make_loader(
    dataset: Dataset | None,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    owner: str,
    world: tuple[int, int] = (1, 0),
) -> DataLoader:
    """Batches of ``dataset``: for training (``shuffle``) a :class:`ResumableLoader` in
    :class:`EpochShuffle` order, else a ``DataLoader`` in order, under DDP (``world``: the number
    of processes and this one's rank) of this rank's share, each example once (Lightning's
    ``DistributedSampler`` would repeat the first examples to even the shares, and an error
    would count them twice); ``owner`` names the data module in the error raised before
    ``setup()``."""
    if dataset is None:
        raise RuntimeError(f"{owner}.setup() must be called before requesting loaders")
    processes, rank = world
    if shuffle:
        sampler = EpochShuffle(dataset)
    elif processes > 1:  # (Lightning imported here only: eqprop gdu reads MNIST without it)
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        sampler = UnrepeatedDistributedSampler(
            dataset, num_replicas=processes, rank=rank, shuffle=False
        )
    else:
        sampler = None
    return (ResumableLoader if shuffle else DataLoader)(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
