"""The cross-entropy softmax readout (``--model.loss cross_entropy``) against independent
computations: autograd's force, a hand-written cross-entropy BPTT, EP's limit beta -> 0."""

import math

import pytest
import torch
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import EquilibriumProp, RecurrentBackprop, TruncatedBPTT
from eqprop_lightning.learning.gdu import estimated_gradients
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC, SoftmaxReadout

T = 300  # free steps: the gradient-flow net below converges to float64 precision


def readout_net() -> SoftmaxReadout:
    """A gradient-flow EPcont net (tanh, no clamp, rho' on the output) with a 4-class readout."""
    torch.manual_seed(3)
    inner = EnergyBasedFC([5, 7, 6], "tanh", dt=0.3, clamp=False, output_rho_prime=True)
    return SoftmaxReadout(inner, classes=4).double()


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 6, generator=gen, dtype=torch.float64)
    y = F.one_hot(torch.arange(8) % 4, 4).double()
    return x, y


def relative(a: dict, b: dict) -> dict[str, float]:
    return {k: ((a[k] - b[k]).norm() / b[k].norm()).item() for k in b}


def test_force_is_minus_the_gradient_of_the_cross_entropy(batch):
    net, (_, y) = readout_net(), batch
    s0 = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    loss = -(y * net.readout(s0).log_softmax(1)).sum()
    (grad,) = torch.autograd.grad(loss, s0)
    torch.testing.assert_close(net.force(y, s0.detach()), -grad, rtol=1e-12, atol=1e-14)


def test_bptt_descends_the_cross_entropy_of_the_readout(batch):
    """The rule's gradient equals autograd of ``-<y . log softmax(W_r s_0(T) + b_r)>`` through
    the whole relaxation (an independent computation: no rule code, the net's step only)."""
    net, (x, y) = readout_net(), batch
    steps = 20
    estimate = estimated_gradients(net, x, y, TruncatedBPTT(steps, steps - 1))
    static, s = net.static_terms(x), net.init_state(x)
    for _ in range(steps):
        s = net.net.step(s, static)
    loss = -(y * net.readout(s[0]).log_softmax(1)).sum(1).mean()
    weights = [g.weight for g in net.synapse_groups()]
    expected = dict(zip(net.synapse_labels(), torch.autograd.grad(loss, weights), strict=True))
    assert set(estimate) == {"Wr", "W01", "W1x"}
    for k in expected:
        torch.testing.assert_close(estimate[k], expected[k], rtol=1e-10, atol=1e-14)


def test_cross_entropy_ep_tends_to_cross_entropy_bptt_as_beta_goes_to_zero(batch):
    """Symmetric EP's error against BPTT falls like beta^2 for every weight, the readout
    included, and is at beta = 0.01 a twentieth of two-phase EP's, which falls like beta."""
    net, (x, y) = readout_net(), batch
    bptt = estimated_gradients(net, x, y, TruncatedBPTT(T, T - 1))
    errors = {
        (nudging, beta): relative(
            estimated_gradients(net, x, y, EquilibriumProp(T, T - 1, beta, nudging)), bptt
        )
        for nudging in ("positive", "symmetric")
        for beta in (0.1, 0.01)
    }
    for k in bptt:
        for nudging, order in (("positive", 1), ("symmetric", 2)):
            slope = math.log10(errors[nudging, 0.1][k] / errors[nudging, 0.01][k])
            assert slope == pytest.approx(order, abs=0.15), (k, nudging, slope)
        assert errors["symmetric", 0.01][k] < errors["positive", 0.01][k] / 20, k


def test_rbp_with_the_readout_is_bptt_with_a_long_horizon(batch):
    net, (x, y) = readout_net(), batch
    # tracked from a converged state: the adjoint iteration is BPTT through K + 1 transitions
    rbp = estimated_gradients(net, x, y, RecurrentBackprop(2 * T, T))
    bptt = estimated_gradients(net, x, y, TruncatedBPTT(2 * T, T))
    for k in bptt:
        torch.testing.assert_close(rbp[k], bptt[k], rtol=1e-9, atol=1e-14)


def module(**kwargs) -> EqPropModule:
    options = dict(
        net=PrototypicalFC([10, 8, 6]),
        lrs=[0.1, 0.05, 0.02],
        T=6,
        K=3,
        beta=0.5,
        nudging="symmetric",
        loss="cross_entropy",
    )
    return EqPropModule(**(options | kwargs))


def test_cross_entropy_module_trains_the_readout_first_in_lrs():
    model = module()
    assert isinstance(model.net, SoftmaxReadout)
    assert model.net.synapse_labels() == ["Wr", "W01", "W1x"]
    optimizer = model.configure_optimizers()
    assert optimizer.param_groups[0]["params"][0] is model.net.readout.weight
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert isinstance(
        EqPropModule(PrototypicalFC([10, 8, 6]), [0.1, 0.1], beta=0.5).net, PrototypicalFC
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lrs": [0.1, 0.1]}, "readout's first"),
        ({"loss": "hinge"}, "loss='hinge' is not supported"),
        ({"algorithm": "cep", "nudging": None}, "not implemented for continual EP"),
        ({"nudging": "holomorphic"}, "not implemented for holomorphic"),
    ],
)
def test_bad_loss_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        module(**kwargs)


def prototypical_readout(size_tab: list[int], nudge_in_activation: bool) -> SoftmaxReadout:
    torch.manual_seed(0)
    inner = PrototypicalFC(size_tab, "sigm", nudge_in_activation=nudge_in_activation)
    return SoftmaxReadout(inner, classes=4).double()


@pytest.mark.parametrize("size_tab", [[7, 6], [5, 7, 6]], ids=["readout-of-hidden", "two-layer"])
def test_prototypical_ep_with_the_nudge_in_the_activation_tends_to_bptt(batch, size_tab):
    """With ``s <- rho(dPhi/ds - beta dl/ds)`` (Laborieux et al.) symmetric EP's error against
    BPTT falls like beta^2 for every weight; with the nudge added after ``rho`` (Ernoult et al.)
    the hidden weights' estimates miss the ``rho'`` of the nudged layer and stay far off as
    beta -> 0 (measured: 0.6 to 2.0)."""
    x, y = batch
    errors = {}
    for inside in (True, False):
        net = prototypical_readout(size_tab, inside)
        bptt = estimated_gradients(net, x, y, TruncatedBPTT(60, 59))
        for beta in (0.1, 0.01):
            ep = estimated_gradients(net, x, y, EquilibriumProp(60, 59, beta, "symmetric"))
            errors[inside, beta] = relative(ep, bptt)
    for k in errors[True, 0.1]:
        slope = math.log10(errors[True, 0.1][k] / errors[True, 0.01][k])
        assert slope == pytest.approx(2, abs=0.15), (k, slope)
        assert errors[True, 0.01][k] < 2e-4, k
        if k != "Wr":  # the readout's update is its direct gradient, right either way
            assert errors[False, 0.01][k] > 0.3, k


@pytest.mark.parametrize("activation", ["sigm", "hardsigm"])
def test_nudge_in_the_activation_is_inside_rho(activation):
    """The nudged output ``rho(W_01 s_1 + b_0 + beta (y - s_0))``, written out with the net's
    weights and activation (the closed-form step folds the activation's scale into them)."""
    torch.manual_seed(2)
    net = PrototypicalFC([3, 5, 4], activation, nudge_in_activation=True).double()
    x = torch.rand(6, 4, dtype=torch.float64)
    s = [torch.rand(6, 3, dtype=torch.float64), torch.rand(6, 5, dtype=torch.float64)]
    y = F.one_hot(torch.arange(6) % 3, 3).double()
    new = net.step(s, net.static_terms(x), 0.3, y)
    w01, w1x = net.weights
    expected_0 = net.rho(w01(s[1]) + 0.3 * (y - s[0]))
    expected_1 = net.rho(w1x(x) + s[0] @ w01.weight)
    torch.testing.assert_close(new[0], expected_0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(new[1], expected_1, rtol=1e-12, atol=1e-14)
    free = PrototypicalFC([3, 5, 4], activation).double()
    free.load_state_dict(net.state_dict())
    nudged_free = free.step(s, free.static_terms(x), 0.3, y)  # the nudge after rho
    torch.testing.assert_close(nudged_free[0], free.rho(w01(s[1])) + 0.3 * (y - s[0]))
    unnudged = zip(
        net.step(s, net.static_terms(x)), free.step(s, free.static_terms(x)), strict=True
    )
    for a, b in unnudged:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_readout_of_a_hidden_layer_has_the_readout_classes():
    model = module(net=PrototypicalFC([8, 6]), lrs=[0.1, 0.05], readout_classes=10)
    assert model.net.synapse_labels() == ["Wr", "W0x"]
    assert model.net.readout.weight.shape == (10, 8)
    assert model.net.num_classes == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "mse", "readout_classes": 10}, "applies to loss cross_entropy only"),
        ({"readout_classes": 1}, "readout_classes=1 must be an integer >= 2"),
        ({"readout_classes": True}, "readout_classes=True must be an integer >= 2"),
    ],
)
def test_bad_readout_classes_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        module(**kwargs)


def test_a_net_needs_an_input_and_a_state_layer():
    with pytest.raises(ConfigError, match=r"size_tab=\[784\] needs at least 2 entries"):
        PrototypicalFC([784])
    with pytest.raises(ConfigError, match="nudge_in_activation=1 must be true or false"):
        PrototypicalFC([5, 4], nudge_in_activation=1)
