"""Options that do not apply to the chosen rule are config errors, and the cosine schedule is the
closed form per epoch."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from eqprop_lightning.callbacks import GDUCallback
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import PrototypicalFC

SIZES = [10, 8, 12]


def model(**kwargs) -> EqPropModule:
    torch.manual_seed(0)
    return EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], T=6, K=2, **kwargs)


def batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        (torch.rand(4, SIZES[-1], generator=gen), F.one_hot(torch.arange(4) + i, 10).float())
        for i in range(n)
    ]


def fit(module: EqPropModule, epochs: int = 1, callbacks=()) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, DataLoader(batches(), batch_size=None))
    return trainer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "bptt", "beta": 0.5}, "beta=0.5 does not apply to algorithm 'bptt'"),
        (
            {"algorithm": "bptt", "symmetric": True},
            "symmetric=True does not apply to algorithm 'bptt'",
        ),
        ({"algorithm": "ep"}, "beta=None: algorithm 'ep' needs the nudging strength"),
    ],
)
def test_options_of_another_rule_are_config_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        model(**kwargs)


def test_bptt_without_beta_and_ep_with_beta_build() -> None:
    assert model(algorithm="bptt").hparams.beta is None
    assert model(algorithm="ep", beta=0.2).rule.beta == 0.2


# ------------------------------------------------------------------------------ cosine


class LearningRates(L.Callback):
    """The learning rate of every synapse group at the start of every epoch."""

    def __init__(self) -> None:
        self.per_epoch: list[list[float]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.per_epoch.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_cosine_schedule_is_the_closed_form_per_epoch() -> None:
    """lr(e) = eta_min + (lr0 - eta_min) (1 + cos(pi e / T_max)) / 2 for e <= T_max, held at
    eta_min afterwards (seed 2 steps the schedule for T_max epochs only)."""
    t_max, eta_min, epochs = 3, 0.01, 6
    lrs = LearningRates()
    fit(model(beta=0.5, cosine_t_max=t_max, eta_min=eta_min), epochs, [lrs])
    for epoch, got in enumerate(lrs.per_epoch):
        e = min(epoch, t_max)
        expected = [eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2
                    for lr0 in (0.1, 0.2)]  # fmt: skip
        assert got == pytest.approx(expected, rel=1e-12, abs=0), epoch
    assert len(lrs.per_epoch) == epochs


# --------------------------------------------------------------------------- GDU callback


@pytest.mark.parametrize(("field", "value"), [("T", 7), ("K", 3)])
def test_gdu_callback_with_other_phases_than_the_model_is_a_config_error(field, value) -> None:
    callback = GDUCallback(every_n_steps=1, **{field: value})
    with pytest.raises(ConfigError, match=f"gdu.{field}={value} differs from model.{field}="):
        fit(model(beta=0.5), callbacks=[callback])


def test_gdu_callback_on_a_bptt_model_needs_its_own_beta() -> None:
    with pytest.raises(ConfigError, match="gdu.beta=None and model.beta=None"):
        fit(model(algorithm="bptt"), callbacks=[GDUCallback(every_n_steps=1, figures=False)])


def test_gdu_callback_on_a_bptt_model_analyses_with_its_beta(monkeypatch) -> None:
    import eqprop_lightning.callbacks.gdu as gdu_module

    seen = []
    real = gdu_module.gdu

    def recording(net, x, y, T, K, beta, symmetric=False):
        seen.append((T, K, beta, symmetric))
        return real(net, x, y, T, K, beta, symmetric)

    monkeypatch.setattr(gdu_module, "gdu", recording)
    callback = GDUCallback(every_n_steps=1, beta=0.05, figures=False)
    fit(model(algorithm="bptt"), callbacks=[callback])
    assert seen == [(6, 2, 0.05, False)] * 2


@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf])
def test_gdu_callback_beta_must_be_positive(beta) -> None:
    with pytest.raises(ConfigError, match=f"gdu.beta={beta!r}"):
        GDUCallback(every_n_steps=1, beta=beta)
