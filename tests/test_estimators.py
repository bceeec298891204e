"""The estimators beyond two-phase EP (nudging schemes, batched phases, RBP, continual EP)
against independent computations: the implicit-function gradient, BPTT, the sequential phases,
EP's total update."""

import dataclasses
import math
import re

import pytest
import torch

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import (
    ContinualEP,
    EquilibriumProp,
    RecurrentBackprop,
    TruncatedBPTT,
    cost,
    ep_surrogate,
    free_phase,
    make_rule,
)
from eqprop_lightning.learning.ep import _cast_static, _NudgedPrimitives
from eqprop_lightning.learning.gdu import estimate_errors
from eqprop_lightning.learning.nudging import random_sign
from eqprop_lightning.learning.phases import relax_with_previous
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import ConvPrototypical, EnergyBasedFC, PrototypicalFC, ToyEnergyBased
from eqprop_lightning.nets.fc import StaticTerms

T = 200  # free steps of the gradient-flow net below: converged to about 1e-15


def flat_grad(net, rule, x, y, step=0):
    net.zero_grad()
    rule(net, x, y, step).objective.backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    y = 0.1 * torch.eye(3, dtype=torch.float64)[torch.arange(4) % 3]
    return x, y


def gradient_flow_net():
    """EPcont with tanh, no clamp and rho' on the output: an exact gradient flow of E."""
    torch.manual_seed(1)
    return EnergyBasedFC([3, 8, 6], "tanh", dt=0.5, clamp=False, output_rho_prime=True).double()


def implicit_gradient(net, x, y):
    """dL/dtheta = lambda^T dF/dtheta with lambda = (I - J^T)^-1 dl/ds from the dense Jacobian
    J = dF/ds at s* (a direct linear solve, independent of RBP's iteration)."""
    static = net.static_terms(x)
    with torch.no_grad():
        _, s_star = free_phase(net, static, net.init_state(x), 2000)
    sizes = [t.numel() for t in s_star]
    shapes = [t.shape for t in s_star]

    def unflatten(v):
        return [c.view(sh) for c, sh in zip(v.split(sizes), shapes, strict=True)]

    def transition(v):
        return torch.cat([t.flatten() for t in net.step(unflatten(v), static)])

    v = torch.cat([t.flatten() for t in s_star]).requires_grad_(True)
    J = torch.autograd.functional.jacobian(transition, v.detach())
    (dl_ds,) = torch.autograd.grad(cost(net, net.output(unflatten(v)), y), v)
    lam = torch.linalg.solve(torch.eye(len(v), dtype=v.dtype) - J.T, dl_ds)
    grads = torch.autograd.grad(transition(v.detach()), list(net.parameters()), lam)
    return torch.cat([g.flatten() for g in grads])


def test_rbp_is_the_implicit_function_gradient(batch):
    x, y = batch
    net = gradient_flow_net()
    expected = implicit_gradient(net, x, y)
    rbp = flat_grad(net, RecurrentBackprop(T, T), x, y)
    assert relative_error(rbp, expected) < 1e-10
    # a few adjoint iterations are not the implicit gradient yet
    assert relative_error(flat_grad(net, RecurrentBackprop(T, 2), x, y), expected) > 1e-2


def test_rbp_equals_truncated_bptt_with_a_long_horizon_on_a_converged_net(batch):
    x, y = batch
    net = gradient_flow_net()
    bptt = flat_grad(net, TruncatedBPTT(T, T), x, y)
    assert relative_error(flat_grad(net, RecurrentBackprop(T, T), x, y), bptt) < 1e-10


def test_rbp_of_a_prototypical_net_is_the_implicit_gradient():
    """The P net's transition is not a gradient flow; RBP is still the implicit gradient."""
    torch.manual_seed(2)
    net = PrototypicalFC([3, 8, 6], "sigm").double()
    x = torch.rand(5, 6, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)[torch.arange(5) % 3]
    expected = implicit_gradient(net, x, y)
    assert relative_error(flat_grad(net, RecurrentBackprop(300, 300), x, y), expected) < 1e-10


@pytest.mark.parametrize("points, slope", [(2, 2.0), (4, 4.0)])
def test_holomorphic_ep_error_falls_like_beta_to_the_n(batch, points, slope):
    """Relative error against RBP ~ beta^N: the fitted log-log slope over beta in [0.05, 0.4]."""
    x, y = batch
    net = gradient_flow_net()
    rbp = flat_grad(net, RecurrentBackprop(T, T), x, y)
    betas = [0.05, 0.1, 0.2, 0.4]
    errors = [
        relative_error(flat_grad(net, EquilibriumProp(T, T, b, "holomorphic", points), x, y), rbp)
        for b in betas
    ]
    logs = torch.tensor([[math.log(b), 1.0] for b in betas], dtype=torch.float64)
    fit = torch.linalg.lstsq(logs, torch.tensor(errors, dtype=torch.float64).log()[:, None])
    assert abs(fit.solution[0, 0].item() - slope) < 0.1


def test_holomorphic_ep_with_four_points_is_exact_where_two_phase_ep_is_not(batch):
    x, y = batch
    net = gradient_flow_net()
    rbp = flat_grad(net, RecurrentBackprop(T, T), x, y)
    holo = relative_error(flat_grad(net, EquilibriumProp(T, T, 0.05, "holomorphic", 4), x, y), rbp)
    two_phase = relative_error(flat_grad(net, EquilibriumProp(T, T, 0.05), x, y), rbp)
    assert holo < 1e-4
    assert two_phase > 100 * holo


@pytest.mark.parametrize(
    "make, tolerance",
    [
        (lambda: PrototypicalFC([10, 64, 784], "sigm"), 3e-6),
        (lambda: EnergyBasedFC([10, 64, 784], "tanh", clamp=False), 1e-6),
    ],
    ids=["prototypical", "energy_based_tanh"],
)
def test_holomorphic_ep_in_float32_is_its_float64_estimate_to_rounding(make, tolerance):
    """The complex relaxation in complex64 against the same in complex128, relative norm over
    three seeds: at most 1.3e-6 (P) and 3.2e-7 (EB) as measured, where torch's complex sigmoid
    and tanh and static terms computed in complex arithmetic were off by 4.3-8.5e-6 and
    1.5-2.3e-6."""
    for seed in range(3):
        torch.manual_seed(seed)
        net = make()
        x, y = torch.rand(20, 784), torch.eye(10)[torch.arange(20) % 10]
        rule = EquilibriumProp(40, 15, 0.1, "holomorphic", 4)
        single = flat_grad(net, rule, x, y).double()
        double = flat_grad(net.double(), rule, x.double(), y.double())
        assert relative_error(single, double) < tolerance, seed


class _StaticFromComplexWeights(torch.nn.Module):
    """The nudged phases with the static terms computed from the complex weights (the code
    before the free phase's were cast)."""

    def __init__(self, net) -> None:
        super().__init__()
        self.phases = _NudgedPrimitives(net)

    def forward(self, x, y, s_free, K, betas):
        return self.phases(y, s_free, self.phases.net.static_terms(x), K, betas)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PrototypicalFC([3, 8, 6], "sigm"),  # drive, weights, biases folded: a W, a b + c
        lambda: EnergyBasedFC([3, 8, 6], "tanh", clamp=False),
        lambda: ToyEnergyBased([3, 8, 6], "sigmoid"),
    ],
    ids=["prototypical_sigm", "energy_based_tanh", "toy"],
)
def test_holomorphic_ep_casts_the_static_terms_computed_from_complex_weights(batch, make):
    """The free phase's static terms cast to complex give the gradient of the terms computed
    from the complex weights (in the nudged phases), to rounding."""
    x, y = batch
    torch.manual_seed(0)
    net = make().double()
    rule = EquilibriumProp(30, 10, 0.3, "holomorphic", 4)
    ours = flat_grad(net, rule, x, y)
    nudges = rule.nudges()
    with torch.no_grad():
        _, s_free = free_phase(net, net.static_terms(x), net.init_state(x), rule.T)
    weights = {f"phases.net.{k}": p.to(torch.complex128) for k, p in net.named_parameters()}
    args = (
        x.to(torch.complex128),
        y.to(torch.complex128),
        [t.to(torch.complex128) for t in s_free],
    )
    phis = torch.func.functional_call(
        _StaticFromComplexWeights(net), weights, (*args, rule.K, nudges.betas)
    )
    net.zero_grad()
    (
        -torch.real(sum(c * phi for c, phi in zip(nudges.coefs, phis, strict=True)))
        / net.beta_scale
    ).backward()
    reference = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert relative_error(ours, reference) < 1e-12


@dataclasses.dataclass
class _TermsWithIndex(StaticTerms):
    index: torch.Tensor | None = None


def test_cast_static_terms_keep_their_fields_kinds():
    """Tuples stay tuples, None and integer tensors stay, and a term that is another (drive is
    input_term) stays so (else the batched phases repeat it twice)."""
    net = EnergyBasedFC([3, 8, 6], "tanh", clamp=False)
    s = net.static_terms(torch.rand(4, 6))
    for index in (None, torch.arange(4)):
        terms = _TermsWithIndex(s.input_term, s.drive, tuple(s.weights), tuple(s.biases), index)
        cast = _cast_static(terms, torch.complex64)
        assert cast.drive is cast.input_term and cast.input_term.dtype == torch.complex64
        assert type(cast.weights) is tuple and cast.weights[0].dtype == torch.complex64
        assert cast.index is index


def test_holomorphic_ep_of_a_net_with_tuple_static_terms_is_the_nets(batch):
    """A LayeredFC of one's own (holomorphic EP admits it) whose static terms hold tuples."""

    class TupleTerms(EnergyBasedFC):
        def static_terms(self, x):
            s = super().static_terms(x)
            return StaticTerms(s.input_term, s.drive, tuple(s.weights), tuple(s.biases))

    x, y = batch
    rule = EquilibriumProp(30, 10, 0.3, "holomorphic", 4)
    torch.manual_seed(0)
    ours = flat_grad(TupleTerms([3, 8, 6], "tanh", clamp=False).double(), rule, x, y)
    torch.manual_seed(0)
    plain = flat_grad(EnergyBasedFC([3, 8, 6], "tanh", clamp=False).double(), rule, x, y)
    assert relative_error(ours, plain) < 1e-12


def test_holomorphic_ep_with_two_points_is_symmetric_ep(batch):
    x, y = batch
    net = gradient_flow_net()
    holo = flat_grad(net, EquilibriumProp(T, 20, 0.3, "holomorphic", 2), x, y)
    sym = flat_grad(net, EquilibriumProp(T, 20, 0.3, "symmetric"), x, y)
    torch.testing.assert_close(holo, sym, rtol=1e-10, atol=1e-12)


def steps_with_sign(seed):
    """The first step drawing +1 and the first drawing -1."""
    signs = [random_sign(seed, step) for step in range(64)]
    return signs.index(1), signs.index(-1)


def test_random_sign_estimates_average_to_the_symmetric_one(batch):
    x, y = batch
    net = gradient_flow_net()
    rule = EquilibriumProp(T, 20, 0.3, "random_sign", seed=5)
    plus, minus = steps_with_sign(5)
    mean = (flat_grad(net, rule, x, y, plus) + flat_grad(net, rule, x, y, minus)) / 2
    sym = flat_grad(net, EquilibriumProp(T, 20, 0.3, "symmetric"), x, y)
    torch.testing.assert_close(mean, sym, rtol=1e-10, atol=1e-12)
    # each sign alone is the two-phase estimate at +beta or -beta, not the symmetric one
    assert relative_error(flat_grad(net, rule, x, y, plus), sym) > 1e-2


def test_random_sign_depends_on_the_seed_and_step_only():
    torch.manual_seed(123)
    first = [random_sign(7, step) for step in range(64)]
    torch.manual_seed(456)
    torch.rand(10)
    assert [random_sign(7, step) for step in range(64)] == first
    assert set(first) == {-1, 1}
    assert first != [random_sign(8, step) for step in range(64)]


def test_random_sign_streams_of_different_seeds_differ():
    """Every seed its own stream: the old draw seeded torch with ``seed * 2**31 + step``, whose
    low 32 bits (all that torch's CPU generator keeps) are those of ``(seed % 2) * 2**31 +
    step``, so seeds 0, 2, 4, ... shared one stream and 1, 3, ... another."""
    streams = {tuple(random_sign(seed, step) for step in range(64)) for seed in range(16)}
    assert len(streams) == 16


def small_nets():
    torch.manual_seed(3)
    conv = ConvPrototypical([2, 2, 1], [3], kernel_size=3, padding=True, input_size=8)
    return {
        "prototypical": (PrototypicalFC([3, 8, 6], "sigm").double(), (5, 6)),
        "energy_based": (EnergyBasedFC([3, 8, 6], "sigm", dt=0.2).double(), (5, 6)),
        "conv": (conv.double(), (5, 1, 8, 8)),
    }


@pytest.mark.parametrize("kind", ["prototypical", "energy_based", "conv"])
def test_batched_nudged_phases_equal_the_phases_one_after_the_other(kind):
    """The +beta and -beta phases relaxed as one batch of 2B examples give the states (and the
    primitives) of two separate relaxations, and the symmetric estimate of the sequential EP."""
    net, shape = small_nets()[kind]
    x = torch.rand(*shape, dtype=torch.float64)
    y = torch.eye(3, dtype=torch.float64)[torch.arange(5) % 3]
    static = net.static_terms(x)
    with torch.no_grad():
        _, s_free = free_phase(net, static, net.init_state(x), 20)
    phases = _NudgedPrimitives(net)
    batched = phases(y, s_free, static, 6, (0.5, -0.5))
    one_by_one = torch.cat([phases(y, s_free, static, 6, (b,)) for b in (0.5, -0.5)])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-12, atol=1e-12)
    assert (one_by_one[0] - one_by_one[1]).abs() > 1e-6  # the two phases differ

    with torch.no_grad():
        prev_pos, s_pos = relax_with_previous(net, s_free, static, 6, 0.5, y)
        prev_neg, s_neg = relax_with_previous(net, s_free, static, 6, -0.5, y)
    sequential = ep_surrogate(net, static, s_neg, s_pos, -0.5, 0.5, (prev_neg, prev_pos))
    expected = torch.autograd.grad(sequential, list(net.parameters()))
    estimate = EquilibriumProp(20, 6, 0.5, "symmetric")(net, x, y).objective
    for e, g in zip(expected, torch.autograd.grad(estimate, list(net.parameters())), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "net, match",
    [
        (lambda: EnergyBasedFC([3, 8, 6], "tanh", clamp=True), "clamp: true is not holomorphic"),
        (lambda: PrototypicalFC([3, 8, 6], "hardsigm"), "not 'hardsigm'"),
        (
            lambda: ConvPrototypical([2, 2, 1], [3], "sigm", 3, padding=True, input_size=8),
            "ConvPrototypical",
        ),
    ],
)
def test_holomorphic_ep_rejects_nets_that_are_not_holomorphic(net, match):
    with pytest.raises(ConfigError, match=match) as err:
        make_rule("ep", 10, 5, 0.1, "holomorphic", net=net())
    assert "nudging: symmetric or random_sign" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nudging": "both"}, "nudging='both' is not supported"),
        ({"nudging": "symmetric", "holomorphic_points": 4}, "holomorphic_points=4 applies to"),
        ({"nudging": "holomorphic", "holomorphic_points": 1}, "holomorphic_points=1 must be"),
        ({"algorithm": "bptt", "beta": None, "nudging": "symmetric"}, "applies to algorithm 'ep'"),
        ({"algorithm": "rbp", "beta": 0.1}, "beta=0.1 does not apply to algorithm 'rbp'"),
        ({"symmetric": True, "nudging": "random_sign"}, "symmetric=True contradicts"),
        ({"algorithm": "cd"}, "algorithm='cd' is not supported"),
        ({"algorithm": "rbp", "beta": None, "symmetric": True}, "applies to algorithm 'ep' only"),
    ],
)
def test_bad_rule_options_are_rejected(kwargs, match):
    net = PrototypicalFC([3, 8, 6], "tanh")
    options = {"algorithm": "ep", "beta": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=match):
        EqPropModule(net, [0.1, 0.1], **options)


def test_symmetric_true_is_an_alias_of_symmetric_nudging():
    net = PrototypicalFC([3, 8, 6], "tanh")
    model = EqPropModule(net, [0.1, 0.1], beta=0.1, symmetric=True)
    assert model.rule.nudging == "symmetric"
    model = EqPropModule(net, [0.1, 0.1], beta=0.1, nudging="holomorphic")
    assert (model.rule.nudging, model.rule.points) == ("holomorphic", 4)


def continual_update(net, rule, x, y, lr):
    """``(theta_final - theta_0) / lr`` after continual EP with plain SGD at ``lr``."""
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()])
    opt = torch.optim.SGD(net.parameters(), lr=lr)

    def apply(estimate):
        opt.zero_grad()
        estimate.objective.backward()
        opt.step()

    rule(net, x, y, apply=apply)
    return (torch.cat([p.detach().flatten() for p in net.parameters()]) - theta0) / lr


def test_continual_ep_with_tiny_learning_rates_tracks_ep_total_update(batch):
    """The C-EP theorem: the K per-step updates sum to two-phase EP's update as lr -> 0."""
    x, y = batch
    ep_update = -flat_grad(gradient_flow_net(), EquilibriumProp(T, 30, 0.2), x, y)
    errors = [
        relative_error(
            continual_update(gradient_flow_net(), ContinualEP(T, 30, 0.2), x, y, lr), ep_update
        )
        for lr in (1e-6, 1e-5)
    ]
    assert errors[0] < 1e-4
    assert 8 < errors[1] / errors[0] < 12  # the gap is O(lr): the weights move in between


def test_continual_ep_applies_one_update_per_nudged_step(batch):
    x, y = batch
    calls = []
    ContinualEP(T, 7, 0.2)(gradient_flow_net(), x, y, apply=calls.append)
    assert len(calls) == 7
    with pytest.raises(ConfigError, match="give apply"):
        ContinualEP(T, 7, 0.2)(gradient_flow_net(), x, y)


@pytest.mark.parametrize(
    "options",
    [["--model.algorithm", "cep"], ["--model.nudging", "random_sign"]],
    ids=["cep", "random_sign"],
)
def test_interrupted_run_resumes_exactly(fake_mnist, tmp_path, monkeypatch, options):
    """Stopped by Ctrl-C in the middle of epoch 2 and resumed from last.ckpt: the same weights
    as the uninterrupted run (continual EP's optimizer steps, random-sign EP's signs)."""
    import json

    from eqprop_lightning.cli import main
    from tests.test_resume import assert_same_weights, last_weights, small_fit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), *options, "--trainer.max_epochs", "2"]
    args += ["--trainer.deterministic", "true"]
    main([*args, "--trainer.logger.init_args.version", "straight"])
    interrupt = [
        "--trainer.callbacks+=tests.test_resume.Interrupt",
        "--trainer.callbacks.init_args.batch_idx=2",
        "--trainer.logger.init_args.version=cut",
    ]
    with pytest.raises(SystemExit):
        main([*args, *interrupt])
    main([*args, "--ckpt_path", "last"])
    runs = tmp_path / "runs" / "p1h"
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )
    assert [e["train_error"] for e in resumed] == [e["train_error"] for e in straight]
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))


def test_any_rule_is_compared_with_bptt_and_rbp(batch):
    """The GDU analysis's final-estimate comparison: holomorphic EP is at RBP's gradient where
    two-phase EP is not; RBP is at BPTT's on a converged net."""
    from eqprop_lightning.learning.gdu import estimate_errors, synapse_weights

    x, y = batch
    net = gradient_flow_net()
    holo = estimate_errors(net, x, y, EquilibriumProp(T, T, 0.05, "holomorphic", 4))
    two_phase = estimate_errors(net, x, y, EquilibriumProp(T, T, 0.05))
    labels = list(synapse_weights(net))
    assert list(holo["rbp"]) == labels == ["W01", "W1x"]
    assert max(holo["rbp"].values()) < 1e-4
    assert min(two_phase["rbp"].values()) > 100 * max(holo["rbp"].values())
    rbp = estimate_errors(net, x, y, RecurrentBackprop(T, T))
    assert max(rbp["bptt"].values()) < 1e-10
    # the per-weight error is the norm ratio of the two gradients of that weight
    g_holo = torch.autograd.grad(
        EquilibriumProp(T, T, 0.05, "holomorphic", 4)(net, x, y).objective, net.weights[0].weight
    )[0]
    g_bptt = torch.autograd.grad(TruncatedBPTT(T, T)(net, x, y).objective, net.weights[0].weight)[0]
    assert holo["bptt"]["W01"] == pytest.approx(relative_error(g_holo, g_bptt), rel=1e-9)
    with pytest.raises(ConfigError, match="continual EP"):
        estimate_errors(net, x, y, ContinualEP(T, 5, 0.1))


def test_gdu_summary_holds_the_rules_errors(batch, tmp_path):
    import eqprop_lightning.callbacks  # noqa: F401 (analysis <-> callbacks: import them this way)
    from eqprop_lightning.analysis import analyse, rmse_report, write_gdu

    x, y = batch
    net = gradient_flow_net()
    rule = EquilibriumProp(T, 20, 0.1, "symmetric")
    summary = write_gdu(analyse(net, x, y, T, 20, 0.1, True, rule), x, y, tmp_path)
    assert summary["estimates"]["rule"] == "ep/symmetric"
    assert set(summary["estimates"]) == {"rule", "bptt", "rbp"}
    # the numbers are the rule's errors, computed here again from the rule itself
    expected = estimate_errors(net, x, y, rule)
    report = rmse_report(summary)
    assert "| ep/symmetric: weight | error vs BPTT | error vs RBP |" in report
    for ref in ("bptt", "rbp"):
        assert summary["estimates"][ref] == pytest.approx(expected[ref], rel=1e-6)
    for name in ("W01", "W1x"):
        assert f"| {name} | {expected['bptt'][name]:.3g} | {expected['rbp'][name]:.3g} |" in report


@pytest.mark.parametrize("kind", ["prototypical", "energy_based", "toy", "conv", "hopfield"])
def test_repeated_static_terms_are_those_of_the_repeated_batch(kind):
    """``static_terms(x).repeat(n)`` (what the batched phases use) equals the static terms of
    ``n`` copies of ``x``, field by field."""
    from dataclasses import fields

    from tests.test_compile import make

    net, x, _ = make(kind)
    repeated = net.static_terms(x).repeat(3)
    expected = net.static_terms(torch.cat([x] * 3))
    assert type(repeated) is type(expected)
    for field in fields(expected):
        got, want = getattr(repeated, field.name), getattr(expected, field.name)
        for g, w in zip(*(v if isinstance(v, list) else [v] for v in (got, want)), strict=True):
            assert (g is None) == (w is None), field.name
            if w is not None:
                torch.testing.assert_close(g, w, rtol=0, atol=1e-6, msg=field.name)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_json_files_refuse_non_finite_numbers(tmp_path, value):
    """gdu.json, results.json, ...: standard JSON, which has no NaN or Infinity."""
    from eqprop_lightning.io import write_json_atomic

    path = tmp_path / "out.json"
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json_atomic(path, {"error": value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("algorithm", ["bptt", "rbp"])
def test_make_rule_refuses_a_beta_it_would_not_use(algorithm):
    """BPTT and RBP have no nudge: a beta given to make_rule directly (outside the module's
    checks) is refused, not dropped."""
    with pytest.raises(ConfigError, match=f"beta=0.5 does not apply to algorithm '{algorithm}'"):
        make_rule(algorithm, 10, 4, 0.5)
    assert make_rule(algorithm, 10, 4).K == 4


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: EqPropModule(PrototypicalFC([3, 8, 6]), [0.1, 0.1], beta=0.1, symmetric="false"),
         "symmetric='false' must be true or false"),
        (lambda: EqPropModule(PrototypicalFC([3, 8, 6]), [0.1, 0.1], beta=0.1, T=True, K=1),
         "T=True must be a positive integer"),
        (lambda: EqPropModule(PrototypicalFC([3, 8, 6]), [0.1, 0.1], beta=0.1,
                              convergence_tol="1e-3"),
         "convergence_tol=1e-3 must be > 0"),
        (lambda: EnergyBasedFC([3, 8, 6], clamp="no"), "clamp='no' must be true or false"),
        (lambda: EnergyBasedFC([3, 8, 6], output_rho_prime=1),
         "output_rho_prime=1 must be true or false"),
    ],
)  # fmt: skip
def test_options_of_the_wrong_type_are_refused_from_code(build, match):
    """From Python (no CLI types), a truthy string turned symmetric nudging or the clamp on, and
    a bool T ran one step."""
    with pytest.raises(ConfigError, match=re.escape(match)):
        build()


def test_estimate_errors_name_each_reference_by_what_it_computes(batch):
    """A truncated BPTT rule on a net 5 steps from zeros (far from its fixed point): its error
    is 0 against truncated BPTT, the same gradient, and against RBP (K adjoint iterations at
    s(T) taken as a fixed point) the norm ratio to RBP's gradient, computed here (7-8 %)."""

    x, y = batch
    net = gradient_flow_net()
    free_steps, K = 5, 2
    errors = estimate_errors(net, x, y, TruncatedBPTT(free_steps, K))
    assert errors["bptt"] == {"W01": 0.0, "W1x": 0.0}
    weights = [net.weights[0].weight, net.weights[1].weight]
    bptt = torch.autograd.grad(TruncatedBPTT(free_steps, K)(net, x, y).objective, weights)
    rbp = torch.autograd.grad(RecurrentBackprop(free_steps, K)(net, x, y).objective, weights)
    for label, b, r in zip(["W01", "W1x"], bptt, rbp, strict=True):
        assert errors["rbp"][label] == pytest.approx(relative_error(b, r), rel=1e-9)
        assert errors["rbp"][label] > 0.01


@pytest.mark.parametrize("nudging", ["symmetric", "random_sign", "holomorphic"])
def test_continual_ep_takes_positive_nudging_only(nudging):
    """C-EP nudges by +beta at every step: ``nudging: positive`` is accepted, any other scheme
    is refused (not run as positive nudging)."""
    refused = f"nudging='{nudging}' applies to algorithm 'ep' only, not 'cep'"
    with pytest.raises(ConfigError, match=refused):
        make_rule("cep", 10, 4, 0.5, nudging)
    assert make_rule("cep", 10, 4, 0.5, "positive").beta == 0.5


@pytest.mark.parametrize("algorithm", ["bptt", "rbp"])
def test_make_rule_refuses_a_zero_beta_too(algorithm):
    """beta=0.0 is a beta given (not null): refused like any other, not taken for 'none'."""
    with pytest.raises(ConfigError, match=f"beta=0.0 does not apply to algorithm '{algorithm}'"):
        make_rule(algorithm, 10, 4, 0.0)
