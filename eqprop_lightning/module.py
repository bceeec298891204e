"""The LightningModule that trains a convergent RNN with EP or truncated BPTT."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import EquilibriumProp, GradientEstimator, TruncatedBPTT, cost
from eqprop_lightning.learning.phases import free_phase

Algorithm = Literal["ep", "bptt"]


def error_percent(output: Tensor, y: Tensor) -> Tensor:
    """Per-example error in percent: 100 where ``argmax(output) != argmax(y)``, else 0."""
    return (output.argmax(1) != y.argmax(1)).float() * 100.0


def make_rule(
    algorithm: str, T: int, K: int, beta: float, symmetric: bool = False
) -> GradientEstimator:
    if algorithm == "ep":
        return EquilibriumProp(T, K, beta, symmetric)
    if algorithm == "bptt":
        return TruncatedBPTT(T, K)
    raise ConfigError(f"algorithm={algorithm!r} is not supported; choose 'ep' or 'bptt'")


class EqPropModule(L.LightningModule):
    """Trains ``net`` with EP (``algorithm: ep``) or truncated BPTT (``algorithm: bptt``).

    Optimization is manual: the rule returns a scalar whose gradient is its estimate, which goes
    through ``manual_backward`` (so DDP all-reduces it), then SGD with one learning rate per synapse
    group (``lrs``, output layer first as the paper's ``--lr_tab``) takes a step.

    Args:
        net: the dynamics, e.g. :class:`~eqprop_lightning.nets.PrototypicalFC`.
        algorithm: ``ep`` or ``bptt``.
        T: free-phase steps.
        K: nudged-phase steps (EP) or tracked steps (BPTT).
        beta: nudging strength (EP only).
        symmetric: symmetric (three-phase) EP with nudges ``+beta`` and ``-beta`` (EP only).
        lrs: learning rates, one per weight layer, output layer first.
    """

    def __init__(
        self,
        net: nn.Module,
        lrs: list[float],
        algorithm: Algorithm = "ep",
        T: int = 40,
        K: int = 15,
        beta: float = 0.1,
        symmetric: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = net
        self.rule = make_rule(algorithm, T, K, beta, symmetric)
        groups = net.synapse_groups()
        if len(lrs) != len(groups):
            raise ConfigError(
                f"lrs={lrs} has {len(lrs)} entries but the net has {len(groups)} weight layers: "
                "give one learning rate per weight layer, output layer first"
            )
        if any(not lr > 0 for lr in lrs):
            raise ConfigError(f"lrs={lrs} must all be > 0")
        self.train_error = MeanMetric()
        self.train_loss = MeanMetric()
        self.val_error = MeanMetric()
        self.test_error = MeanMetric()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = zip(self.net.synapse_groups(), self.hparams.lrs, strict=True)
        return torch.optim.SGD([{"params": list(g.parameters()), "lr": lr} for g, lr in groups])

    def forward(self, x: Tensor) -> Tensor:
        """Output of the free phase (``T`` steps from zeros)."""
        with torch.no_grad():
            s = free_phase(self.net, self.net.static_terms(x), self.net.init_state(x), self.rule.T)
        return self.net.output(s)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        estimate = self.rule(self.net, x, y)
        opt.zero_grad()
        self.manual_backward(estimate.objective)
        opt.step()
        self.train_error.update(error_percent(estimate.output, y))
        self.train_loss.update(cost(estimate.output, y))
        if batch_idx + 1 == self.trainer.num_training_batches:
            # log the epoch's means once: a self.log per step costs as much as the P-1h step
            self.log("train/error", self.train_error, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_error(error_percent(self(x), y))
        self.log("val/error", self.val_error, on_epoch=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_error(error_percent(self(x), y))
        self.log("test/error", self.test_error, on_epoch=True)
