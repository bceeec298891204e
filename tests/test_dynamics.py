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


HOLOMORPHIC = ["sigm", "sigmoid", "tanh"]


def complex_grid(dtype):
    """Real parts from -100 to 100 (beyond float32's exp range), imaginary parts up to 2 (past
    tanh's pole at pi/2 and sigm's, at pi/8 after its scale 4), and points 1e-3 from the poles."""
    a = torch.tensor([-100.0, -30, -5, -1, -0.2, -1e-3, 0, 1e-3, 0.3, 1, 4, 30, 100])
    b = torch.tensor([-2.0, -0.4, -1e-2, 0, 1e-4, 0.05, 0.3, 1, 2])
    z = torch.complex(a[:, None].expand(-1, len(b)), b.expand(len(a), -1)).flatten()
    near_poles = torch.tensor([1e-3 + 1.5698j, -1e-3 + 1.5718j, 2.4e-3 - 0.3927j, 0.5 + 0.7858j])
    return torch.cat([z, near_poles]).to(dtype)


@pytest.mark.parametrize("name", HOLOMORPHIC)
def test_complex_activation_is_torchs_within_rounding(name):
    """The activations' own complex arithmetic (holomorphic EP) against torch's complex
    functions in complex128, relative to the value: float32-rounding close in complex64, and to
    1e-13 in complex128 (a term's sign or a swapped part is off by 1 or more)."""
    rho = get_activation(name)
    exact = {"tanh": torch.tanh}.get(name, torch.sigmoid)
    scale, shift = rho.scale, rho.shift
    for dtype, rtol in ((torch.complex64, 2e-6), (torch.complex128, 1e-13)):
        z = complex_grid(dtype)
        ref = exact(z.to(torch.complex128) * scale + shift)
        error = (rho(z).to(torch.complex128) - ref).abs() / ref.abs().clamp(min=1.0)
        assert error.max() < rtol, (dtype, z[error.argmax()], error.max())
    real = torch.linspace(-100, 100, 2001)
    assert torch.equal(rho(real), exact(real * scale + shift))  # real inputs: torch's own


@pytest.mark.parametrize("name", HOLOMORPHIC)
def test_complex_activation_gradient_is_torchs(name):
    """The gradient with respect to a real parameter through the complex activation, as
    holomorphic EP takes it, is the one through torch's complex function, and finite where
    exp overflows (real parts beyond 88 in float32)."""
    rho = get_activation(name)
    exact = {"tanh": torch.tanh}.get(name, torch.sigmoid)
    z = complex_grid(torch.complex128)
    z = z[z.real.abs() < 50]  # torch's complex sigmoid gives NaN further out
    w = torch.linspace(0.5, 1.5, len(z), dtype=torch.float64).requires_grad_(True)
    coef = torch.exp(1j * torch.linspace(0, 6, len(z), dtype=torch.float64))
    (ours,) = torch.autograd.grad(torch.real(coef * rho(z * w)).sum(), w)
    (ref,) = torch.autograd.grad(torch.real(coef * exact(z * w * rho.scale + rho.shift)).sum(), w)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    far = torch.tensor([60.0 + 0.1j, -60.0 - 0.1j, 95.0 + 0.2j, 1e4 + 1j])
    v = torch.ones(4, requires_grad=True)
    (grad,) = torch.autograd.grad(torch.real(rho(far * v)).sum(), v)
    assert torch.isfinite(grad).all()


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


def clamp_pair() -> tuple[EnergyBasedFC, EnergyBasedFC]:
    """Two EPcont nets with the same weights (scaled by 3, so that the states leave [0, 1]
    unless clamped), with and without ``clamp``."""
    torch.manual_seed(0)
    clamped = EnergyBasedFC([10, 32, 20], "sigm", dt=0.5, clamp=True)
    with torch.no_grad():
        for p in clamped.parameters():
            p.mul_(3.0)
    free = EnergyBasedFC([10, 32, 20], "sigm", dt=0.5, clamp=False)
    free.load_state_dict(clamped.state_dict())
    return clamped, free


def nudged_states(net: EnergyBasedFC, steps: int = 50) -> list[list[torch.Tensor]]:
    """The states after each of ``steps`` steps nudged by ``beta = 2`` from ``s = 0``."""
    x = torch.rand(8, 20, generator=torch.Generator().manual_seed(0))
    y = torch.eye(10)[:8]
    static, s, states = net.static_terms(x), net.init_state(x), []
    with torch.no_grad():
        for _ in range(steps):
            s = net.step(s, static, 2.0, y)
            states.append(s)
    return states


def test_clamp_keeps_states_in_unit_interval():
    """Every layer stays in [0, 1] at every step and reaches both bounds; the same steps
    without the clamp leave [0, 1] on both sides in every layer (the control)."""
    clamped, free = clamp_pair()
    for layer in zip(*nudged_states(clamped), strict=True):  # (steps,) of one layer
        t = torch.stack(layer)
        assert ((t >= 0) & (t <= 1)).all()
        assert (t == 0).any() and (t == 1).any()
    for layer in zip(*nudged_states(free), strict=True):
        t = torch.stack(layer)
        assert (t < 0).any() and (t > 1).any()


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_clamped_step_is_the_unclamped_step_clipped(beta):
    """``step`` with clamp is exactly ``step`` without clamp followed by ``clamp(0, 1)``."""
    clamped, free = clamp_pair()
    x = torch.rand(8, 20)
    y = torch.eye(10)[:8]
    s = random_state(clamped, x)
    with torch.no_grad():
        got = clamped.step(s, clamped.static_terms(x), beta, y)
        unclamped = free.step(s, free.static_terms(x), beta, y)
    for g, u in zip(got, unclamped, strict=True):
        assert (u < 0).any() and (u > 1).any()  # both bounds have work to do
        assert torch.equal(g, u.clamp(0.0, 1.0))


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


@pytest.mark.parametrize(
    ("name", "kinks"),
    [("hardsigm", [0.0, 1.0]), ("hard_sigmoid", [0.0, 1.0]), ("my_hard_sig", [0.0, 2.0])],
)
def test_hard_sigmoid_derivative_at_the_kinks_is_the_closed_interval(name, kinks):
    """``rho'(z) = 1[0 <= z <= 1]`` (the original's ``rhop``, closed interval; my_hard_sig:
    1/2 on [0, 2]). Autograd cannot pin this down: ``torch.clamp``'s gradient is 0 at its
    bounds, and the states start at exactly 0."""
    rho = ACTIVATIONS[name]
    z = torch.tensor([-1e-9, *kinks, kinks[1] + 1e-9], dtype=torch.float64)
    expected = [0.0, rho.derivative_scale, rho.derivative_scale, 0.0]
    assert rho.derivative(z, rho(z)).tolist() == expected


def test_energy_based_hardsigm_net_leaves_the_zero_state():
    """From ``s = 0`` one Euler step of the ``rho'``-weighted dynamics moves the states
    (``rho'(0) = 1``); with the open interval every state would stay at 0 for ever."""
    torch.manual_seed(0)
    net = EnergyBasedFC([3, 4, 5], "hardsigm", dt=0.5, clamp=False, output_rho_prime=True)
    net = net.double()
    x = torch.rand(2, 5, dtype=torch.float64)
    with torch.no_grad():
        new = net.step(net.init_state(x), net.static_terms(x))
    assert all(bool((t != 0).any()) for t in new)
