"""The divergence and convergence guard: where a non-finite value first appears, the free
phase's last-step change, and `eqprop fit` stopping with the last good checkpoint kept."""

import copy
import json
import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from eqprop_lightning.cli import main
from eqprop_lightning.learning import (
    ContinualEP,
    DivergenceError,
    EquilibriumProp,
    Estimate,
    RecurrentBackprop,
    TruncatedBPTT,
    locate_nonfinite,
)
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC
from tests.reference import fit_one_epoch, free_steps_by_hand
from tests.test_resume import small_fit


def tiny_p_net() -> PrototypicalFC:
    torch.manual_seed(0)
    return PrototypicalFC([3, 8, 6], "sigm")


def test_locate_nonfinite_names_input_weight_state_and_phase():
    net = tiny_p_net()
    x, y = torch.rand(4, 6), torch.eye(3)[[0, 1, 2, 0]]
    assert locate_nonfinite(net, x, y, T=10, K=4, nudges=(0.5,)) is None

    assert locate_nonfinite(net, x * math.nan, y, 10, 4, (0.5,)) == "the input batch is not finite"

    # +-1e38 inputs through weights of 10 overflow to inf - inf = NaN in the first layer's drive
    huge = torch.tensor([[1e38, -1e38, 1e38, -1e38, 1e38, -1e38]])
    with torch.no_grad():
        net.weights[1].weight.fill_(10.0)
    found = locate_nonfinite(net, huge, y[:1], 10, 4, (0.5,))
    assert found == "state s1 is not finite in the free phase at step 1 of 10"

    # a target of inf only enters the nudged phase, at its first step, in the output layer s0
    net = tiny_p_net()
    y_inf = torch.full((4, 3), math.inf)
    found = locate_nonfinite(net, x, y_inf, 10, 4, (0.5, -0.5))
    assert found == "state s0 is not finite in the nudged phase (beta = 0.5) at step 1 of 4"

    with torch.no_grad():
        net.weights[0].weight[0, 0] = math.nan
    assert locate_nonfinite(net, x, y, 10, 4, (0.5,)) == "weight W01 is not finite"


def last_change_by_hand(net, x: torch.Tensor, T: int) -> torch.Tensor:
    """Per state layer, the batch mean of each example's largest ``|s_i(T) - s_i(T-1)|`` of a
    free phase stepped by hand from ``s = 0``."""
    previous, s = free_steps_by_hand(net, x, T)
    return torch.stack([(a - b).abs().amax(1).mean() for a, b in zip(s, previous, strict=True)])


@pytest.mark.parametrize("rule", [EquilibriumProp(5, 2, 0.1), TruncatedBPTT(5, 2)])
def test_last_step_change_is_the_free_phases_last_step(rule):
    """The diagnostic is the free phase's last step, layer by layer, as computed by hand; it
    shrinks as T grows (EPcont, dt = 0.2)."""
    torch.manual_seed(0)
    net = EnergyBasedFC([3, 8, 6], "sigm", dt=0.2)
    x, y = torch.rand(8, 6), torch.eye(3)[torch.randint(0, 3, (8,))]
    changes = []
    for T in (5, 80):
        rule.T = T
        estimate = rule(net, x, y)
        expected = last_change_by_hand(net, x, T)
        assert expected.shape == (2,)  # one entry per state layer
        torch.testing.assert_close(estimate.last_change, expected, rtol=0, atol=0)
        changes.append(float(expected.max()))
    assert 0 < changes[1] < changes[0] / 10


@pytest.mark.parametrize(
    "rule", [RecurrentBackprop(5, 2), ContinualEP(5, 2, 0.1)], ids=["rbp", "cep"]
)
def test_rbp_and_continual_ep_report_the_free_phases_output_and_last_step(rule):
    """RBP and continual EP read free_phase's pair in order: their output is s(T)'s, not the
    state one step before, and their diagnostic is the last step, as computed by hand."""
    torch.manual_seed(0)
    net = EnergyBasedFC([3, 8, 6], "sigm", dt=0.2)
    x, y = torch.rand(8, 6), torch.eye(3)[torch.randint(0, 3, (8,))]
    options = {"apply": lambda estimate: None} if rule.continual else {}
    estimate = rule(net, x, y, **options)
    _, s = free_steps_by_hand(net, x, 5)
    torch.testing.assert_close(estimate.output, net.output(s), rtol=0, atol=0)
    expected = last_change_by_hand(net, x, 5)
    assert float(expected.min()) > 0
    torch.testing.assert_close(estimate.last_change, expected, rtol=0, atol=0)


class Poison(L.Callback):
    """Writes a NaN into the output weights of epoch ``epoch`` (0-based) before batch
    ``batch_idx`` or, with ``after=True``, after it (as a diverging update would)."""

    def __init__(self, epoch: int = 1, batch_idx: int = 2, after: bool = False) -> None:
        self.epoch, self.batch_idx, self.after = epoch, batch_idx, after

    def poison(self, trainer, pl_module, batch_idx: int, after: bool) -> None:
        if (trainer.current_epoch, batch_idx, after) == (self.epoch, self.batch_idx, self.after):
            with torch.no_grad():
                pl_module.net.weights[0].weight[0, 0] = math.nan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.poison(trainer, pl_module, batch_idx, after=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.poison(trainer, pl_module, batch_idx, after=True)


@pytest.mark.parametrize(
    ("batch_idx", "after", "message"),
    [
        (2, False, "training diverged at epoch 2, batch 2 (global step 7): weight W01 is not "
         "finite; lower the learning rates, beta or dt"),
        # the epoch's last update diverges: the end-of-epoch checkpoint refuses to save it
        (4, True, "training diverged at epoch 2 (global step 10): weight W01 is not finite; "
         "not saved"),
    ],
)  # fmt: skip
def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(
    fake_mnist, tmp_path, monkeypatch, capsys, batch_idx, after, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "3"]
    poison = [
        "--trainer.callbacks+=tests.test_guard.Poison",
        f"--trainer.callbacks.init_args.batch_idx={batch_idx}",
        f"--trainer.callbacks.init_args.after={after}",
    ]
    with pytest.raises(SystemExit) as stop:
        main([*args, *poison])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    kept = "no checkpoint holds the diverged values (earlier ones are kept)"
    assert err == f"eqprop: error: {message}; {kept}"
    run = tmp_path / "runs" / "p1h" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5  # the end of epoch 1
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    main([*args, "--ckpt_path", "last"])  # and the run goes on from there
    results = json.loads((run / "results.json").read_text())["epochs"]
    assert [e["epoch"] for e in results] == [1, 2, 3]


class RecordLargestWeight(L.Callback):
    """The largest weight magnitude of the net when the run stops with an exception."""

    seen: list[float] = []

    def on_exception(self, trainer, pl_module, exception):
        weights = pl_module.net.parameters()
        RecordLargestWeight.seen.append(max(float(w.abs().max()) for w in weights))


def test_an_overflow_with_every_value_finite_is_named_with_the_largest_weight(
    fake_mnist, tmp_path, monkeypatch, capsys
):
    """Learning rates of 1e38 make the weights huge but finite after the first update; the next
    estimate overflows although no input, weight or state is non-finite."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    RecordLargestWeight.seen.clear()
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "1", "--model.lrs", "[1e38, 1e38]"]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--trainer.callbacks+=tests.test_guard.RecordLargestWeight"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    (largest,) = RecordLargestWeight.seen
    assert math.isfinite(largest)
    assert err.startswith(
        "eqprop: error: training diverged at epoch 1, batch 1 (global step 1): the gradient "
        "estimate is not finite while every input, weight and state is (an overflow; the largest "
        f"weight is {largest:.3g} in magnitude); lower the learning rates, beta or dt"
    )


def test_convergence_tolerance(fake_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "1"]
    main(args)
    results = json.loads(Path("runs/p1h/version_0/results.json").read_text())["epochs"]
    change = results[0]["free_change"]  # its value: test_cli.py
    main([*args, f"--model.convergence_tol={change * 100}"])  # loose enough: trains
    with pytest.raises(SystemExit) as stop:
        main([*args, "--model.convergence_tol=1e-12"])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "eqprop: error: the free phase has not converged at epoch 1, batch 0 (global step 0): "
        "state s"
    )
    assert "at step 8 of 8 (convergence_tol=1e-12)" in err


@pytest.mark.parametrize(
    ("make_net", "layer"),
    [
        (lambda: PrototypicalFC([3, 8, 6], "sigm"), 0),  # s0 moves more at T = 5
        (lambda: EnergyBasedFC([3, 8, 6], "sigm", dt=0.2), 1),  # s1 does
    ],
    ids=["prototypical", "energy_based"],
)
@pytest.mark.filterwarnings("ignore:output units")  # the EB net's clamped outputs
def test_convergence_guard_names_the_layer_over_the_tolerance(make_net, layer: int) -> None:
    """With ``convergence_tol`` between the first batch's two last-step changes the guard stops
    before the update and names the layer over it; at the larger change exactly, it trains."""
    torch.manual_seed(0)
    net = make_net()
    x, y = torch.rand(8, 6), torch.eye(3)[torch.randint(0, 3, (8,))]
    T, K, beta = 5, 2, 0.5
    change = last_change_by_hand(net, x, T)
    low, high = sorted(change.tolist())
    assert int(change.argmax()) == layer and high > 1.5 * low
    tol = math.sqrt(low * high)
    initial = copy.deepcopy(net.state_dict())
    model = EqPropModule(net, [0.1, 0.1], T=T, K=K, beta=beta, convergence_tol=tol)
    with pytest.raises(DivergenceError) as stop:
        fit_one_epoch(model, [(x, y)])
    assert str(stop.value) == (
        f"the free phase has not converged at epoch 1, batch 0 (global step 0): state s{layer} "
        f"still moves by {high:.3g} at step {T} of {T} (convergence_tol={tol}); raise T, or "
        "lower dt or the learning rates"
    )
    for name, value in initial.items():  # not updated
        assert torch.equal(net.state_dict()[name], value), name
    model = EqPropModule(net, [0.1, 0.1], T=T, K=K, beta=beta, convergence_tol=high)
    assert fit_one_epoch(model, [(x, y)]).global_step == 1


def test_warns_about_outputs_held_at_zero():
    """An EPcont output unit with a negative drive sits at the clamp's 0 for every example:
    BPTT gives its bias no gradient; EP's nudge (beta (y - s0) = 0.5 against a drive of -0.3)
    lifts it and EP moves the bias. The module warns on the first batch."""
    from eqprop_lightning.module import warn_silent_outputs

    torch.manual_seed(0)
    net = EnergyBasedFC([3, 8, 6], "sigm", dt=0.2)
    with torch.no_grad():
        net.weights[0].weight[1] = 0.0
        net.weights[0].bias[1] = -0.3
    x, y = torch.rand(8, 6), torch.eye(3)[[1] * 8]
    bptt, ep = TruncatedBPTT(40, 5)(net, x, y), EquilibriumProp(40, 5, 0.5)(net, x, y)
    assert (bptt.output[:, 1] == 0).all()
    for estimate, moves in ((bptt, False), (ep, True)):
        net.zero_grad()
        estimate.objective.backward()
        assert bool(net.weights[0].bias.grad[1] != 0) == moves
    with pytest.warns(UserWarning, match=r"output units \[1\] are 0 for every example"):
        warn_silent_outputs(bptt.output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_silent_outputs(torch.rand(8, 3) + 0.1)  # none silent: no warning


def test_a_holomorphic_overflow_is_not_called_finite():
    """A non-finite holomorphic EP estimate whose real phases replay finite: the complex nudged
    phases, which the guard does not replay, overflowed; it said every state was finite."""
    torch.manual_seed(0)
    module = EqPropModule(
        PrototypicalFC([3, 8, 6], "tanh"), [0.1, 0.1], T=30, K=20, beta=0.1,
        nudging="holomorphic",
    )  # fmt: skip
    x, y = torch.rand(4, 6), torch.eye(3)[torch.arange(4) % 3]
    estimate = module.rule(module.net, x, y)
    nan = Estimate(torch.tensor(math.nan), estimate.output, estimate.last_change)
    module._trainer = type("T", (), {"world_size": 1, "current_epoch": 0, "global_step": 0})()
    with pytest.raises(DivergenceError) as err:
        module.guard(nan, x, y, 0)
    message = str(err.value)
    assert "every input, weight and real state is finite" in message
    assert "the complex nudged phases (not replayed) may have overflowed" in message
