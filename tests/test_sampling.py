"""The training order: a new permutation every epoch, drawn from ``seed + epoch`` alone, and
Lightning's epoch reaching the sampler during ``fit``."""

import lightning as L
import torch

from eqprop_lightning.cli import main
from eqprop_lightning.datamodules.sampling import EpochShuffle
from tests.test_resume import small_fit


def test_epoch_shuffle_draws_a_new_permutation_each_epoch():
    sampler = EpochShuffle(range(50), seed=3)
    orders = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    for epoch, order in enumerate(orders):
        expected = torch.randperm(50, generator=torch.Generator().manual_seed(3 + epoch))
        assert order == expected.tolist()
    assert len({tuple(order) for order in orders}) == 5
    sampler.set_epoch(0)
    assert list(sampler) == orders[0]


FIRST_BATCHES: list[torch.Tensor] = []


class FirstBatches(L.Callback):
    """Keeps the inputs of each epoch's first training batch in ``FIRST_BATCHES``."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            FIRST_BATCHES.append(batch[0].detach().clone())


def test_fit_trains_each_epoch_in_another_order(fake_mnist, tmp_path, monkeypatch):
    """Lightning's ``set_epoch`` reaches the training sampler: the first batches of three epochs
    are three different draws of the 200 training images."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    FIRST_BATCHES.clear()
    main([*small_fit(fake_mnist), "--trainer.max_epochs", "3",
          "--trainer.callbacks+=tests.test_sampling.FirstBatches"])  # fmt: skip
    assert len(FIRST_BATCHES) == 3
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.equal(FIRST_BATCHES[a], FIRST_BATCHES[b]), (a, b)
