"""EP estimates against autograd BPTT gradients, and the learning-rule plumbing."""

import pytest
import torch

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import (
    EquilibriumProp,
    TruncatedBPTT,
    bptt_transitions,
    ep_surrogate,
    free_phase,
    nudged_phase,
)
from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC


def flat_grad(net, rule, x, y):
    net.zero_grad()
    rule(net, x, y).objective.backward()
    return torch.cat([p.grad.flatten() for p in net.parameters()])


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def batch():
    torch.manual_seed(0)
    x = torch.rand(4, 6)
    y = 0.1 * torch.eye(3)[torch.arange(4) % 3]
    return x, y


def small_prototypical_net():
    """A tiny P net in its near-linear regime (tanh, small weights), where the transition
    ``rho(dPhi/ds)`` is close to a gradient of the primitive (``rho' ~ 1``): EP's estimate comes
    within a fraction of a percent of BPTT's gradient (2.0e-3 at beta 1e-3, 7.3e-3 at 1e-2,
    9.1e-2 at 1e-1, float32), not to zero (the nudged layer's ``rho'`` is missing)."""
    torch.manual_seed(1)
    net = PrototypicalFC([3, 8, 6], "tanh")
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.3)
    return net


def test_ep_update_of_prototypical_net_matches_bptt_at_small_beta(batch):
    x, y = batch
    net = small_prototypical_net()
    bptt = flat_grad(net, TruncatedBPTT(T=100, K=40), x, y)
    err_small = relative_error(flat_grad(net, EquilibriumProp(100, 40, beta=1e-3), x, y), bptt)
    err_large = relative_error(flat_grad(net, EquilibriumProp(100, 40, beta=1e-1), x, y), bptt)
    assert err_small < 0.005
    assert err_small < err_large / 20


def test_ep_update_of_energy_based_net_matches_bptt_as_beta_goes_to_zero(batch):
    """EPcont with the exact gradient flow (rho' on the output): EP -> BPTT as beta -> 0."""
    x, y = (t.double() for t in batch)
    torch.manual_seed(1)
    net = EnergyBasedFC([3, 8, 6], "tanh", dt=0.1, clamp=False, output_rho_prime=True).double()
    bptt = flat_grad(net, TruncatedBPTT(T=1000, K=100), x, y)
    errors = [
        relative_error(flat_grad(net, EquilibriumProp(1000, 100, beta), x, y), bptt)
        for beta in (1e-1, 1e-2, 1e-3)
    ]
    assert errors[2] < 2e-3
    assert errors[0] > errors[1] > errors[2]


def test_ep_surrogate_gradient_is_the_hand_written_update(batch):
    """-grad L_EP = (1/(beta B)) [s_i^T s_{i+1} - s*_i^T s*_{i+1}] (and the input/bias terms)."""
    x, y = batch
    net = PrototypicalFC([3, 8, 6], "sigm")
    static = net.static_terms(x)
    beta = 0.2
    with torch.no_grad():
        _, s_free = free_phase(net, static, net.init_state(x), 20)
        _, s_nudged = nudged_phase(net, static, s_free, 5, beta, y)
    ep_surrogate(net, static, s_free, s_nudged, 0.0, beta).backward()
    B = x.shape[0]
    w01, w1x = net.weights
    torch.testing.assert_close(
        -w01.weight.grad, (s_nudged[0].T @ s_nudged[1] - s_free[0].T @ s_free[1]) / (beta * B)
    )
    torch.testing.assert_close(-w01.bias.grad, (s_nudged[0] - s_free[0]).sum(0) / (beta * B))
    torch.testing.assert_close(-w1x.weight.grad, (s_nudged[1] - s_free[1]).T @ x / (beta * B))
    torch.testing.assert_close(-w1x.bias.grad, (s_nudged[1] - s_free[1]).sum(0) / (beta * B))


def test_energy_based_ep_update_uses_rho_of_states(batch):
    x, y = batch
    net = EnergyBasedFC([3, 8, 6], "sigm", dt=0.2)
    static = net.static_terms(x)
    beta = 0.5
    with torch.no_grad():
        _, s_free = free_phase(net, static, net.init_state(x), 30)
        _, s_nudged = nudged_phase(net, static, s_free, 5, beta, y)
    ep_surrogate(net, static, s_free, s_nudged, 0.0, beta).backward()
    rho, B = net.rho, x.shape[0]
    expected = (rho(s_nudged[0]).T @ rho(s_nudged[1]) - rho(s_free[0]).T @ rho(s_free[1])) / beta
    torch.testing.assert_close(-net.weights[0].weight.grad, expected / B)
    expected_in = (rho(s_nudged[1]) - rho(s_free[1])).T @ rho(x) / beta
    torch.testing.assert_close(-net.weights[1].weight.grad, expected_in / B)


def test_bptt_tracks_k_plus_one_transitions_for_fc_nets(batch):
    """The FC nets backpropagate through K + 1 transitions, as the original."""
    x, y = batch
    net = PrototypicalFC([3, 8, 6], "tanh")
    assert bptt_transitions(net, 5) == 6
    static = net.static_terms(x)
    with torch.no_grad():
        _, s = free_phase(net, static, net.init_state(x), 10 - 6)
    _, s = free_phase(net, static, s, 6)
    loss = 0.5 * (s[0] - y).pow(2).sum(1).mean()
    expected = torch.autograd.grad(loss, list(net.parameters()))
    net.zero_grad()
    TruncatedBPTT(T=10, K=5)(net, x, y).objective.backward()
    for e, p in zip(expected, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, e)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EquilibriumProp(T=10, K=20, beta=0.1), "K=20 must not exceed T=10"),
        (lambda: TruncatedBPTT(T=10, K=20), "K=20 must not exceed T=10"),
        (lambda: EquilibriumProp(T=10, K=5, beta=0.0), "beta=0.0 must be finite and > 0"),
        (lambda: EquilibriumProp(T=10, K=5, beta=-0.1), "beta=-0.1 must be finite and > 0"),
        (lambda: EquilibriumProp(T=0, K=0, beta=0.1), "T=0"),
        (lambda: TruncatedBPTT(T=10, K=0), "K=0"),
    ],
)
def test_bad_phase_settings_are_rejected(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_symmetric_ep_is_closer_to_bptt_than_two_phase_ep(batch):
    """Symmetric nudging cancels the O(beta) bias of the two-phase estimate."""
    x, y = (t.double() for t in batch)
    torch.manual_seed(1)
    net = EnergyBasedFC([3, 8, 6], "tanh", dt=0.1, clamp=False, output_rho_prime=True).double()
    bptt = flat_grad(net, TruncatedBPTT(T=1000, K=100), x, y)
    two = relative_error(flat_grad(net, EquilibriumProp(1000, 100, 0.1), x, y), bptt)
    sym = relative_error(flat_grad(net, EquilibriumProp(1000, 100, 0.1, "symmetric"), x, y), bptt)
    assert sym < two / 5


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EquilibriumProp(T=10, K=True, beta=0.1), "K=True must be a positive integer"),
        (lambda: TruncatedBPTT(T=10, K=True), "K=True must be a positive integer"),
        (lambda: EquilibriumProp(T=10, K=5, beta=True), "beta=True must be finite and > 0"),
    ],
)
def test_bools_are_neither_step_counts_nor_nudges(make, match):
    """``True`` is the integer 1 to Python: from code, ``K=True`` ran one nudged step and
    ``beta=True`` nudged with 1.0 (``T=True`` is refused already)."""
    with pytest.raises(ConfigError, match=match):
        make()
