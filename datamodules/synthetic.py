"""Synthetic data for the toy model (Fig. 2 of Ernoult et al., 2019).

Inputs ``x ~ U[0, 1]^n_in`` as in the original's GDU analysis of the toy model. Targets are one-hot
classes given by a fixed random linear teacher of the centred inputs, ``argmax((x - 1/2)
W_teacher)``, so that the toy model can also be trained (the original draws one random class per
batch and never trains the toy model).
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from .checks import check_positive_int
from .sampling import make_loader
from .splits import ddp_world


class ToyDataModule(L.LightningDataModule):
    """Synthetic ``(x, one-hot y)`` pairs: ``n_train`` for training, ``n_test`` for evaluation."""

    def __init__(
        self,
        n_in: int = 5,
        n_out: int = 10,
        batch_size: int = 1,
        n_train: int = 1000,
        n_test: int = 200,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in {
            "n_in": n_in,
            "n_out": n_out,
            "batch_size": batch_size,
            "n_train": n_train,
            "n_test": n_test,
        }.items():
            check_positive_int(name, value)
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        """Number of classes (``n_out``)."""
        return self.hparams.n_out

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example: ``(n_in,)``."""
        return (self.hparams.n_in,)

    @property
    def evaluation_sets(self) -> dict[str, str]:
        """The evaluation loader serves the test examples (there is no validation set)."""
        return {"test": f"{self.hparams.n_test} synthetic test examples"}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        gen = torch.Generator().manual_seed(hp.seed)
        teacher = torch.randn(hp.n_in, hp.n_out, generator=gen)
        x = torch.rand(hp.n_train + hp.n_test, hp.n_in, generator=gen)
        y = torch.nn.functional.one_hot((x - 0.5).matmul(teacher).argmax(1), hp.n_out).float()
        self.train_set = TensorDataset(x[: hp.n_train], y[: hp.n_train])
        self.test_set = TensorDataset(x[hp.n_train :], y[hp.n_train :])

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.hparams.batch_size, True, 0, type(self).__name__)

    def val_dataloader(self) -> DataLoader:
        size = max(self.hparams.batch_size, 100)
        return make_loader(self.test_set, size, False, 0, type(self).__name__, ddp_world(self))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The test set, in order (``eqprop predict``)."""
        return self.val_dataloader()
