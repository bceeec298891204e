"""The closed-form steps of the fully connected nets against autograd of their primitive/energy."""

import pytest
import torch

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.nets import ACTIVATIONS, EnergyBasedFC, PrototypicalFC, get_activation

SIZES = [4, 7, 5, 9]  # output 4, hidden 7 and 5, input 9


def random_state(net, x, low=-0.5, high=1.5):
    sizes = net.size_tab[:-1]
    return [torch.empty(x.shape[0], n, dtype=x.dtype).uniform_(low, high) for n in sizes]


def grad_wrt_state(fn, s):
    s = [t.clone().requires_grad_(True) for t in s]
    return torch.autograd.grad(fn(s).sum(), s)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_autograd(name):
    rho = get_activation(name)
    z = torch.linspace(-1.3, 1.7, 101, dtype=torch.float64).requires_grad_(True)
    (auto,) = torch.autograd.grad(rho(z).sum(), z)
    torch.testing.assert_close(rho.derivative(z.detach(), rho(z).detach()), auto)


def test_sigm_is_the_papers_formula():
    z = torch.linspace(-2, 2, 41, dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS["sigm"](z), 1 / (1 + torch.exp(-4 * (z - 0.5))))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_prototypical_step_is_rho_of_primitive_gradient(activation, beta):
    torch.manual_seed(0)
    net = PrototypicalFC(SIZES, activation).double()
    x = torch.rand(3, SIZES[-1], dtype=torch.float64)
    y = torch.eye(SIZES[0], dtype=torch.float64)[[0, 2, 3]]
    static = net.static_terms(x)
    s = random_state(net, x)
    grads = grad_wrt_state(lambda s: net.primitive(s, static), s)
    expected = [net.rho(g) for g in grads]
    expected[0] = expected[0] + beta * (y - s[0])
    with torch.no_grad():
        got = net.step(s, static, beta, y)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_energy_based_step_is_gradient_descent_on_energy(activation):
    torch.manual_seed(0)
    net = EnergyBasedFC(SIZES, activation, dt=0.3, clamp=False, output_rho_prime=True).double()
    x = torch.rand(3, SIZES[-1], dtype=torch.float64)
    static = net.static_terms(x)
    s = random_state(net, x)
    grads = grad_wrt_state(lambda s: net.energy(s, static), s)
    with torch.no_grad():
        got = net.step(s, static)
    for si, g, n in zip(s, grads, got, strict=True):
        torch.testing.assert_close(n, si - 0.3 * g)


def test_energy_based_default_output_has_no_rho_prime():
    """The original's output update: s0 + dt (-s0 + W01 rho(s1) + b0 + beta (y - s0))."""
    torch.manual_seed(0)
    net = EnergyBasedFC(SIZES, "sigm", dt=0.2, clamp=False).double()
    x = torch.rand(3, SIZES[-1], dtype=torch.float64)
    y = torch.eye(SIZES[0], dtype=torch.float64)[:3]
    s = random_state(net, x)
    with torch.no_grad():
        got = net.step(s, net.static_terms(x), 0.5, y)[0]
    w = net.weights[0]
    d0 = -s[0] + net.rho(s[1]) @ w.weight.T + w.bias + 0.5 * (y - s[0])
    torch.testing.assert_close(got, s[0] + 0.2 * d0)


def test_primitive_of_energy_based_net_is_phi_eps():
    torch.manual_seed(0)
    net = EnergyBasedFC(SIZES, "tanh", dt=0.1).double()
    x = torch.rand(2, SIZES[-1], dtype=torch.float64)
    static = net.static_terms(x)
    s = random_state(net, x)
    half_norm = sum(0.5 * (t * t).sum(1) for t in s)
    torch.testing.assert_close(net.primitive(s, static), half_norm - 0.1 * net.energy(s, static))


def test_energy_decreases_along_the_dynamics():
    torch.manual_seed(0)
    net = EnergyBasedFC([10, 32, 16, 20], "tanh", dt=0.05, clamp=False, output_rho_prime=True)
    x = torch.rand(8, 20)
    static = net.static_terms(x)
    s = net.init_state(x)
    energies = []
    with torch.no_grad():
        for _ in range(300):
            energies.append(net.energy(s, static))
            s = net.step(s, static)
    e = torch.stack(energies)  # (steps, B)
    assert (e[1:] <= e[:-1] + 1e-6).all()
    assert (e[-1] < e[0] - 1e-3).all()


def test_clamp_keeps_states_in_unit_interval():
    torch.manual_seed(0)
    net = EnergyBasedFC([10, 32, 20], "sigm", dt=0.5, clamp=True)
    x = torch.rand(8, 20)
    static = net.static_terms(x)
    s = net.init_state(x)
    with torch.no_grad():
        for _ in range(50):
            s = net.step(s, static, 2.0, torch.eye(10)[:8])
    assert all(((t >= 0) & (t <= 1)).all() for t in s)


def test_state_layout_follows_size_tab():
    net = PrototypicalFC([10, 32, 16, 784])
    x = torch.rand(5, 784)
    assert [t.shape for t in net.init_state(x)] == [(5, 10), (5, 32), (5, 16)]
    assert [tuple(m.weight.shape) for m in net.synapse_groups()] == [(10, 32), (32, 16), (16, 784)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size_tab": [784]}, "at least 2 entries"),
        ({"size_tab": [10, 0, 784]}, "positive integers"),
        ({"size_tab": [10, 32, 784], "activation": "relu"}, "activation='relu'"),
        ({"size_tab": [10, 32, 784], "dt": 0.0}, "dt=0.0"),
    ],
)
@pytest.mark.parametrize("cls", [PrototypicalFC, EnergyBasedFC])
def test_bad_net_arguments_are_rejected(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)
