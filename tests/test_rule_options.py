"""Options that do not apply to the chosen rule are config errors, and the cosine schedule is the
closed form per epoch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from eqprop_lightning.callbacks import GDUCallback
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import EquilibriumProp, TruncatedBPTT
from eqprop_lightning.learning.gdu import estimate_errors, gdu, rmse_table
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


def sparse_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`batches` with input feature 0 zero in every example: W1x's column 0 then has zero
    BPTT and EP updates, which the sign agreement's total counts (as "both zero")."""
    out = batches()
    for x, _ in out:
        x[:, 0] = 0.0
    return out


def fit(module: EqPropModule, epochs: int = 1, callbacks=(), logger=None, data=None) -> L.Trainer:
    """Train on :func:`batches` (or ``data``), logging to a :class:`Recorder` unless a
    ``logger`` is given (the GDU check needs one)."""
    logger = Recorder() if logger is None else logger
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    trainer.fit(module, DataLoader(batches() if data is None else data, batch_size=None))
    return trainer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "bptt", "beta": 0.5}, "beta=0.5 does not apply to algorithm 'bptt'"),
        (
            {"algorithm": "bptt", "symmetric": True},
            "symmetric=True applies to algorithm 'ep' only, not 'bptt'",
        ),
        ({"algorithm": "ep"}, r"beta=None must be finite and > 0 for EP \(the nudging"),
    ],
)
def test_options_of_another_rule_are_config_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        model(**kwargs)


def rule_gradients(rule, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list:
    """The gradient of ``rule``'s objective with respect to every parameter of ``net``."""
    return list(torch.autograd.grad(rule(net, x, y).objective, list(net.parameters())))


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"algorithm": "bptt"}, TruncatedBPTT(6, 2)),
        ({"algorithm": "ep", "beta": 0.2}, EquilibriumProp(6, 2, 0.2)),
    ],
)
def test_bptt_without_beta_and_ep_with_beta_build(
    kwargs: dict, rule, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each builds its own rule: the module's rule is configured as one made by hand (T, K,
    beta, nudging, seed) and estimates the same gradient (BPTT's objective, the cost after T
    steps, does not depend on K; its gradient does)."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # the seed of a rule made by hand
    x, y = batches()[0]
    built = model(**kwargs)
    assert type(built.rule) is type(rule) and vars(built.rule) == vars(rule)
    torch.testing.assert_close(
        rule_gradients(built.rule, built.net, x, y), rule_gradients(rule, built.net, x, y)
    )


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


def test_gdu_callback_on_an_rbp_model_with_more_steps_of_K_than_T_is_a_config_error() -> None:
    """RBP's K counts its adjoint iterations and may exceed T; the GDU check compares the last K
    of the T steps. Refused when the run starts: before, it stopped at the first check, after
    ``every_n_steps`` steps of training, naming neither model.K nor the callback."""
    torch.manual_seed(0)
    module = EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], T=6, K=8, algorithm="rbp")
    callback = GDUCallback(every_n_steps=2, beta=0.1, figures=False)
    message = "gdu.every_n_steps=2: the GDU check compares the last model.K=8 steps of model.T=6"
    with pytest.raises(ConfigError, match=message):
        fit(module, callbacks=[callback])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every_n_steps": True}, "gdu.every_n_steps=True must be an integer >= 0"),
        ({"every_n_steps": 1, "figures": "false"}, "gdu.figures='false' must be true, false"),
    ],
)
def test_gdu_callback_refuses_values_of_another_type(options, message) -> None:
    """From Python (the CLI parses the types): True was every step, and the string "false"
    turned the figures on (only ``False`` is off)."""
    with pytest.raises(ConfigError, match=message):
        GDUCallback(**options)


def test_a_gdu_check_that_diverges_is_skipped_with_a_warning(monkeypatch) -> None:
    """A diagnostic does not end a run: where the analysis is not finite (``gdu.beta`` larger
    than the training's) the check warns, naming where, logs nothing, and training goes on."""
    import sys

    from eqprop_lightning.learning import DivergenceError

    def diverged(*args, **kwargs):
        raise DivergenceError("the GDU analysis is not finite: state s0 is not finite")

    monkeypatch.setattr(sys.modules[GDUCallback.__module__], "analyse", diverged)
    logger = Recorder()
    with pytest.warns(UserWarning, match="GDU check at step 1 skipped: the GDU analysis is not"):
        trainer = fit(model(beta=0.5), callbacks=[GDUCallback(1, figures=False)], logger=logger)
    assert trainer.global_step == 2
    assert not [k for metrics in logger.metrics.values() for k in metrics if k.startswith("gdu")]


def test_gdu_callback_on_a_bptt_model_needs_its_own_beta() -> None:
    with pytest.raises(ConfigError, match="gdu.beta=None and model.beta=None"):
        fit(model(algorithm="bptt"), callbacks=[GDUCallback(every_n_steps=1, figures=False)])


def recorded_gdu_calls(monkeypatch) -> list[tuple]:
    """The ``(T, K, beta, symmetric)`` of every per-step GDU analysis that runs."""
    import eqprop_lightning.analysis as analysis

    seen = []
    real = analysis.gdu

    def recording(net, x, y, T, K, beta, symmetric=False):
        seen.append((T, K, beta, symmetric))
        return real(net, x, y, T, K, beta, symmetric)

    monkeypatch.setattr(analysis, "gdu", recording)
    return seen


def test_gdu_callback_on_a_bptt_model_analyses_with_its_beta(monkeypatch) -> None:
    seen = recorded_gdu_calls(monkeypatch)
    callback = GDUCallback(every_n_steps=1, beta=0.05, figures=False)
    fit(model(algorithm="bptt"), callbacks=[callback])
    assert seen == [(6, 2, 0.05, False)] * 2


def test_gdu_callback_runs_every_n_optimizer_steps_under_continual_ep(monkeypatch) -> None:
    """Continual EP takes K = 2 optimizer steps per batch: with every_n_steps = 3 the analysis
    runs when global_step passes 3, 6, 9 and 12 (at 4, 6, 10, 12), not only at multiples of
    lcm(2, 3); a resumed run counts from its restored global_step."""
    seen, recorder = recorded_gdu_calls(monkeypatch), Recorder()
    callback = GDUCallback(every_n_steps=3, figures=False)
    trainer = fit(model(beta=0.5, algorithm="cep"), 3, [callback], logger=recorder)
    assert trainer.global_step == 12
    steps = [step for step, logged in recorder.metrics.items() if "gdu/rmse/s0" in logged]
    assert steps == [4, 6, 10, 12] and len(seen) == 4


def test_gdu_callback_resumed_mid_period_waits_for_the_next_multiple() -> None:
    """Resumed at global step 7 with every_n_steps = 3: the analysis is next due past step 9,
    not at the first batch end (step 8 would otherwise count as periods 0 -> 2)."""
    callback = GDUCallback(every_n_steps=3, figures=False)
    callback.on_train_batch_start(SimpleNamespace(global_step=7), None, batches()[0], 0)
    # returns before reading the module: an analysis here would fail on pl_module=None
    callback.on_train_batch_end(SimpleNamespace(global_step=8), None, None, None, 0)


def test_gdu_callback_follows_the_models_symmetric_nudging(monkeypatch) -> None:
    seen = recorded_gdu_calls(monkeypatch)
    fit(model(beta=0.5, nudging="symmetric"), callbacks=[GDUCallback(1, figures=False)])
    assert seen == [(6, 2, 0.5, True)] * 2


class Recorder(Logger):
    """Keeps every logged scalar per step."""

    name, version = "recorder", 0
    experiment = None

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def expected_gdu_scalars(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The callback's ``gdu/rmse/*`` and ``gdu/sign_agreement/*`` for a model of :func:`model`
    (T = 6, K = 2) with beta = 0.5 (positive nudge), computed here from the GDU trajectories:
    the mean over components of the relative RMSE, and the percentage of entries of the last
    step's NT and DT with the same sign, both zero (sign 0) included."""
    with torch.enable_grad():
        result = gdu(net, x, y, 6, 2, 0.5)
    table = rmse_table(result)
    expected = {f"gdu/rmse/{k}": v["mean"] for group in table.values() for k, v in group.items()}
    for k in result.NT:
        n, d = result.NT[k][-1], result.DT[k][-1]
        agree = torch.sign(n) == torch.sign(d)
        expected[f"gdu/sign_agreement/{k}"] = 100 * agree.double().mean().item()
    # the zero input feature: W1x's column 0 is zero in both, so total != same sign there
    assert ((result.NT["W1x"][-1] == 0) & (result.DT["W1x"][-1] == 0)).any()
    return expected


@pytest.mark.parametrize("nudging", ["positive", "random_sign"])
def test_gdu_callback_logs_the_analysis_of_the_final_weights(nudging) -> None:
    """The logged RMSE means, sign agreements (total) and the rule's errors against BPTT and RBP
    are those computed here on the final weights and the first batch (the last analysis). The
    same float32 computation on both sides: rel=1e-6 leaves room for rounding only (float32's
    is 6e-8), while logging the RMSE's std, the same-sign share alone (8 of W1x's 96 entries
    are both zero) or another batch's numbers is off by far more."""
    module, recorder = model(beta=0.5, nudging=nudging), Recorder()
    callback = GDUCallback(every_n_steps=1, figures=False)
    fit(module, callbacks=[callback], logger=recorder, data=sparse_batches())
    x, y = sparse_batches()[0]
    logged = recorder.metrics[2]
    scalars = expected_gdu_scalars(module.net, x, y)
    per_step = {k: v for k, v in logged.items() if k.startswith(("gdu/rmse/", "gdu/sign_"))}
    assert per_step == pytest.approx(scalars, rel=1e-6)  # the same keys, s0, s1, W01 and W1x
    with torch.enable_grad():
        expected = estimate_errors(module.net, x, y, module.rule)
    for reference in ("bptt", "rbp"):
        for weight in ("W01", "W1x"):
            value = logged[f"gdu/estimate_error/{reference}/{weight}"]
            assert value == pytest.approx(expected[reference][weight], rel=1e-6)


@pytest.mark.parametrize("beta", [0.0, -0.1, math.inf])
def test_gdu_callback_beta_must_be_positive(beta) -> None:
    with pytest.raises(ConfigError, match=f"gdu.beta={beta!r}"):
        GDUCallback(every_n_steps=1, beta=beta)


def test_gdu_callback_settings_while_it_is_off_are_a_config_error() -> None:
    """gdu.beta (or T, K) with every_n_steps 0 would be ignored: refused."""
    GDUCallback(every_n_steps=0)  # off, nothing given
    with pytest.raises(ConfigError, match=r"gdu.beta=0.5: the GDU check is off"):
        GDUCallback(every_n_steps=0, beta=0.5)


def test_gdu_callback_on_a_cross_entropy_model_compares_the_nets_weights_step_by_step() -> None:
    torch.manual_seed(0)
    ce = EqPropModule(
        PrototypicalFC(SIZES), [0.1, 0.1, 0.2], T=6, K=2, beta=0.5, loss="cross_entropy"
    )
    recorder = Recorder()
    fit(ce, callbacks=[GDUCallback(every_n_steps=1, figures=False)], logger=recorder)
    logged = recorder.metrics[2]
    per_step = {k.rsplit("/", 1)[1] for k in logged if k.startswith("gdu/rmse/")}
    assert per_step == {"s0", "s1", "W01", "W1x"}  # the readout is no transition
    errors = {k.rsplit("/", 1)[1] for k in logged if k.startswith("gdu/estimate_error/bptt/")}
    assert errors == {"Wr", "W01", "W1x"}
    # the values: the rule's errors on the final weights and the first batch, computed here
    x, y = batches()[0]
    with torch.enable_grad():
        expected = estimate_errors(ce.net, x, y, ce.rule)
    for reference in ("bptt", "rbp"):
        for weight in ("Wr", "W01", "W1x"):
            value = logged[f"gdu/estimate_error/{reference}/{weight}"]
            assert value == pytest.approx(expected[reference][weight], rel=1e-6)


def test_the_rule_gets_the_global_step_across_epochs(monkeypatch):
    """Random-sign EP draws the sign of a batch from (seed, global step): the second epoch's two
    batches are steps 2 and 3, not 0 and 1 again (which would repeat the first epoch's signs)."""
    module = model(beta=0.5, nudging="random_sign")
    steps = []
    call = type(module.rule).__call__

    def recording(self, net, x, y, step=0):
        steps.append(step)
        return call(self, net, x, y, step)

    monkeypatch.setattr(type(module.rule), "__call__", recording)
    fit(module, epochs=2)
    assert steps == [0, 1, 2, 3]


def test_gdu_callback_beta_overrides_the_models(monkeypatch) -> None:
    """gdu.beta set on an EP model: the analysis nudges with it, not with the model's beta."""
    seen = recorded_gdu_calls(monkeypatch)
    fit(model(beta=0.5), callbacks=[GDUCallback(every_n_steps=1, beta=0.05, figures=False)])
    assert seen == [(6, 2, 0.05, False)] * 2


def test_gdu_callback_logs_its_figures_only_when_asked(tmp_path, monkeypatch) -> None:
    """figures=False: the GDU scalars go to TensorBoard and its figures do not; figures=None
    (the default) or True: the three figures too. The scalars are the values computed here
    (stored as float32: rel 1e-6), and the synapse figure draws the instantaneous updates
    nT[t] = NT[t] - NT[t-1] and dT (nT[0] = NT[0]), not the cumulative NT and DT."""
    import eqprop_lightning.analysis as analysis

    drawn = []
    real = analysis.gdu_synapse_figure

    def recording(nT, dT, *args, **kwargs):
        drawn.append((nT, dT))
        return real(nT, dT, *args, **kwargs)

    monkeypatch.setattr(analysis, "gdu_synapse_figure", recording)
    x, y = sparse_batches()[0]
    for figures in (False, None, True):  # None, the default: to the TensorBoard logger
        logger, module = TensorBoardLogger(tmp_path, name=f"figures_{figures}"), model(beta=0.5)
        fit(
            module,
            callbacks=[GDUCallback(1, figures=figures)],
            logger=logger,
            data=sparse_batches(),
        )
        events = EventAccumulator(logger.log_dir)
        events.Reload()
        scalars = expected_gdu_scalars(module.net, x, y)
        assert set(scalars) <= set(events.Tags()["scalars"])
        for tag, value in scalars.items():
            assert [e.step for e in events.Scalars(tag)] == [1, 2]
            assert events.Scalars(tag)[-1].value == pytest.approx(value, rel=1e-6), tag
        images = {tag for tag in events.Tags()["images"] if tag.startswith("gdu/")}
        figure_tags = {"gdu/gdu_neurons", "gdu/gdu_synapses", "gdu/gdu_rmse"}
        expected = set() if figures is False else figure_tags
        assert images == expected, figures
    assert len(drawn) == 4  # steps 1 and 2 with figures None and True; the last: final weights
    with torch.enable_grad():
        result = gdu(module.net, x, y, 6, 2, 0.5)
    for got, cumulative in zip(drawn[-1], (result.NT, result.DT), strict=True):
        assert list(got) == ["W01", "W1x"]
        for k, c in cumulative.items():
            steps = torch.stack([c[0], c[1] - c[0]])  # K = 2: NT[0], then NT[1] - NT[0]
            torch.testing.assert_close(got[k], steps, rtol=1e-6, atol=0)


def test_continual_ep_takes_plain_sgd() -> None:
    """C-EP's K per-step updates add up to EP's update only under SGD: Adam rescales each of
    them (measured 10x the norm of EP's Adam step, cosine 0.63), so the pair is refused."""
    with pytest.raises(ConfigError, match="optimizer='adam' with algorithm 'cep'"):
        model(algorithm="cep", beta=0.1, optimizer="adam")


def test_rbp_iterations_need_not_fit_in_the_free_phase() -> None:
    """RBP's K counts adjoint iterations, not steps of the free phase: K > T is allowed."""
    assert EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], T=6, K=50, algorithm="rbp").rule.K == 50
    with pytest.raises(
        ConfigError, match=r"K=0 must be a positive integer \(number of adjoint iterations\)"
    ):
        EqPropModule(PrototypicalFC(SIZES), [0.1, 0.2], T=6, K=0, algorithm="rbp")
