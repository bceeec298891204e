"""The loaders of the MNIST and text data modules: one training set, an optional validation set
and the test set, which ``setup`` fills."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from .checks import check_nonneg_int, check_positive_int
from .sampling import make_loader


def ddp_world(data: L.LightningDataModule) -> tuple[int, int]:
    """``(processes, rank)`` of the trainer ``data`` is attached to (``(1, 0)`` without one)."""
    trainer = data.trainer
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


class SplitsDataModule(L.LightningDataModule):
    """Training batches in the resumable per-epoch order of :mod:`.sampling`; the evaluation of
    every epoch (``val_dataloader``) over the sets of :attr:`evaluation_sets`, in order (the
    validation set then the test set with a validation split, else the test set); the test set
    for ``test`` and ``predict``.

    Args:
        batch_size: Training batch size.
        test_batch_size: Batch size of the evaluation loaders (``None``: ``batch_size``).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, batch_size: int, test_batch_size: int | None, num_workers: int) -> None:
        super().__init__()
        check_positive_int("batch_size", batch_size)
        check_positive_int("test_batch_size", test_batch_size, allow_none=True)
        check_nonneg_int("num_workers", num_workers)
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def evaluation_sets(self) -> dict[str, str]:
        """``{"val"|"test": what the set is}``, in the order of ``val_dataloader``'s loaders."""
        raise NotImplementedError

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset, batch_size, shuffle, self.num_workers, type(self).__name__, ddp_world(self)
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x, y_onehot)``."""
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """The evaluation of every epoch: one loader per set of :attr:`evaluation_sets`."""
        sets = {"val": self.val_set, "test": self.test_set}
        loaders = [
            self._loader(sets[name], self.test_batch_size, shuffle=False)
            for name in self.evaluation_sets
        ]
        return loaders if len(loaders) > 1 else loaders[0]

    def test_dataloader(self) -> DataLoader:
        """The test set, in order."""
        return self._loader(self.test_set, self.test_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test set, in order (``eqprop predict``)."""
        return self.test_dataloader()
