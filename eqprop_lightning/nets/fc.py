"""Fully connected convergent RNNs with static input (Ernoult et al., NeurIPS 2019).

Layers are indexed backward from the output, as in the paper: ``size_tab = [n_out, h_1, ..., n_in]``
gives the states ``s[0]`` (output) ... ``s[L]`` (hidden layer nearest the input); the input ``x`` is
not a state. ``weights[i]`` couples ``s[i+1] -> s[i]`` (a ``Linear(size_tab[i+1], size_tab[i])``
whose bias is layer ``i``'s bias) and ``weights[L]`` couples ``x -> s[L]``. The original code's
``w.{2i}`` is ``weights.{i}`` here.

Two settings share this layout:

* :class:`PrototypicalFC` (EPdisc): ``s <- rho(dPhi/ds)`` with the primitive
  ``Phi = sum_i s_i . (W_i s_{i+1} + b_i) + s_L . (W_L x + b_L)``.
* :class:`EnergyBasedFC` (EPcont): ``s <- s - dt dE/ds`` with the Hopfield energy
  ``E = 1/2 sum_i |s_i|^2 - sum_i rho(s_i) . (W_i rho(s_{i+1}) + b_i)
  - rho(s_L) . (W_L rho(x) + b_L)``,
  i.e. ``F = dPhi_eps/ds`` for the primitive ``Phi_eps = 1/2 |s|^2 - dt E``, exactly with
  ``output_rho_prime``; by default (the original) the output's update lacks ``rho'(s_0)``.

In the nudged phase the output layer feels the extra force ``-beta dl/ds_0 = beta (y - s_0)`` of the
cost ``l = 1/2 |s_0 - y|^2`` (or of a readout's cost, :mod:`eqprop_lightning.nets.readout`),
inside the step's increment (so EPcont nudges by ``dt beta``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError, check_flag
from eqprop_lightning.nets.activations import get_activation
from eqprop_lightning.nets.nudge import add_nudge, euler_update, is_nudged
from eqprop_lightning.nets.protocol import State, layered_labels, repeat_batch


@dataclass
class StaticTerms:
    """Per-batch constants of the dynamics, computed once by :meth:`LayeredFC.static_terms`.

    ``input_term`` is ``W_L in(x) + b_L`` (``in`` is the identity for EPdisc and ``rho`` for EPcont)
    and stays attached to the parameters so that the EP surrogate can differentiate through it.
    ``weights``, ``biases`` and ``drive`` are the couplings in the form the closed-form step uses
    (EPdisc folds the activation's affine part into them).
    """

    input_term: Tensor  # (B, size_tab[-2])
    drive: Tensor  # (B, size_tab[-2])
    weights: list[Tensor]  # weights[i]: (size_tab[i], size_tab[i+1]), i < L
    biases: list[Tensor]  # biases[i]: (size_tab[i],), i < L

    def repeat(self, n: int) -> StaticTerms:
        """The terms of ``n`` copies of the batch (the couplings are shared)."""
        input_term = repeat_batch(self.input_term, n)
        drive = input_term if self.drive is self.input_term else repeat_batch(self.drive, n)
        return StaticTerms(input_term, drive, self.weights, self.biases)


def _check_size_tab(size_tab: list[int]) -> None:
    if len(size_tab) < 2:
        raise ConfigError(
            f"size_tab={size_tab} needs at least 2 entries (output, hidden..., input), "
            "e.g. [10, 512, 784], or [512, 784] under a softmax readout"
        )
    if any(not isinstance(n, int) or n < 1 for n in size_tab):
        raise ConfigError(f"size_tab={size_tab} must contain positive integers")


class LayeredFC(nn.Module):
    """Layout, state and primitive shared by the fully connected nets.

    Shape:
        x: (B, size_tab[-1]); state s[i]: (B, size_tab[i]).
    """

    #: factor of beta in the effective nudge (EPcont nudges by ``dt * beta``).
    beta_scale: float = 1.0
    #: fraction of its update a step applies (the leaky or Euler ``dt``).
    state_dt: float = 1.0
    #: BPTT through the original's ``K + 1`` last transitions (conv and toy nets use ``K``).
    bptt_extra_step: bool = True
    #: the primitive reads no previous state; the states are not clipped (EPcont may clamp)
    uses_previous_state: bool = False
    clamp: bool = False

    def __init__(self, size_tab: list[int], activation: str) -> None:
        super().__init__()
        _check_size_tab(size_tab)
        self.size_tab = list(size_tab)
        self.rho = get_activation(activation)
        self.weights = nn.ModuleList(
            nn.Linear(size_tab[i + 1], size_tab[i]) for i in range(len(size_tab) - 1)
        )

    input_fields = "size_tab[-1]"
    output_field = "size_tab[0]"

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example: ``(size_tab[-1],)``."""
        return (self.size_tab[-1],)

    @property
    def num_classes(self) -> int:
        """Output units: ``size_tab[0]``."""
        return self.size_tab[0]

    @property
    def num_states(self) -> int:
        """Number of state layers ``L + 1`` (the input is not a state)."""
        return len(self.size_tab) - 1

    def synapse_groups(self) -> list[nn.Module]:
        """Weight layers in learning-rate order (output layer first, as ``--lr_tab``)."""
        return list(self.weights)

    def synapse_labels(self) -> list[str]:
        """``W01, W12, ..., WLx`` in the order of :meth:`synapse_groups`."""
        return layered_labels(self.num_states)

    def init_state(self, x: Tensor) -> State:
        """All-zero states for the batch ``x``."""
        return [x.new_zeros(x.shape[0], n) for n in self.size_tab[:-1]]

    def output(self, s: State) -> Tensor:
        return s[0]


class PrototypicalFC(LayeredFC):
    """EPdisc: ``s_{t+1} = s_t + dt (rho(dPhi/ds) - s_t) + dt beta (y - s_0)`` with ``dt = 1``.

    ``dt`` other than 1 reproduces the leaky update that the original's HEAD code ran by mistake
    (SEEDS_SPEC A.3); the paper and the original June-2019 code use ``dt = 1``.

    ``nudge_in_activation`` moves the nudge inside the activation, as Laborieux et al. (2021)
    relax ``s_{t+1} = rho(d(Phi - beta l)/ds)``: ``s_0 <- rho(dPhi/ds_0 + beta (y - s_0))``, so
    that a saturated output unit is not moved by the nudge (Ernoult et al. add it after ``rho``).
    """

    def __init__(
        self,
        size_tab: list[int],
        activation: str = "sigm",
        dt: float = 1.0,
        nudge_in_activation: bool = False,
    ) -> None:
        super().__init__(size_tab, activation)
        if not 0.0 < dt <= 1.0:
            raise ConfigError(f"dt={dt} must be in (0, 1] for the prototypical net")
        check_flag("nudge_in_activation", nudge_in_activation)
        self.dt = self.state_dt = float(dt)
        self.nudge_in_activation = nudge_in_activation

    def static_terms(self, x: Tensor) -> StaticTerms:
        """Input term ``W_L x + b_L`` and the couplings folded into ``rho = g(a z + c)``."""
        a, c = self.rho.scale, self.rho.shift
        layers = list(self.weights)
        input_term = F.linear(x, layers[-1].weight, layers[-1].bias)
        weights = [m.weight for m in layers[:-1]]
        biases = [m.bias for m in layers[:-1]]
        if a == 1.0 and c == 0.0:
            return StaticTerms(input_term, input_term, weights, biases)
        return StaticTerms(
            input_term=input_term,
            drive=input_term * a + c,
            weights=[w * a for w in weights],
            biases=[b * a + c for b in biases],
        )

    def primitive(self, s: State, static: StaticTerms) -> Tensor:
        """``Phi(x, s)`` per example, shape (B,)."""
        phi = (s[-1] * static.input_term).sum(1)
        for i, layer in enumerate(list(self.weights)[:-1]):
            phi = phi + (s[i] * F.linear(s[i + 1], layer.weight, layer.bias)).sum(1)
        return phi

    def step(
        self, s: State, static: StaticTerms, beta: float = 0.0, y: Tensor | None = None
    ) -> State:
        """One synchronous update of all layers from ``s``:
        ``s_i <- rho(W_i s_{i+1} + b_i + W_{i-1}^T s_{i-1})`` (input term for the last layer)."""
        g, w, b, L = self.rho.g, static.weights, static.biases, len(s) - 1
        nudge_inside = self.nudge_in_activation and is_nudged(beta)
        new = []
        for i in range(L + 1):
            # pre-activation of layer i, already scaled and shifted into g's argument: (B, size_i)
            z = static.drive if i == L else torch.addmm(b[i], s[i + 1], w[i].t())
            if i > 0:
                z = torch.addmm(z, s[i - 1], w[i - 1])  # top-down W_{i-1}^T s_{i-1}
            if i == 0 and nudge_inside:  # rho = g(a z + c): the nudge scaled by a
                z = add_nudge(z, self.rho.scale * beta, y, s[0])
            new.append(g(z))
        if self.dt != 1.0:
            new = [torch.lerp(si, ni, self.dt) for si, ni in zip(s, new, strict=True)]
        if is_nudged(beta) and not nudge_inside:
            new[0] = add_nudge(new[0], self.dt * beta, y, s[0])
        return new


class EnergyBasedFC(LayeredFC):
    """EPcont: ``s_{t+1} = s_t - dt dE/ds + dt beta (y - s_0)``, optionally clamped to [0, 1].

    As in the original, the output layer's increment has no ``rho'(s_0)`` factor
    (``output_rho_prime=False``), so the output is not an exact gradient flow of ``E``;
    ``output_rho_prime=True`` gives the exact flow. With ``clamp`` every layer is clipped to [0, 1]
    after each step.
    """

    def __init__(
        self,
        size_tab: list[int],
        activation: str = "sigm",
        dt: float = 0.2,
        clamp: bool = True,
        output_rho_prime: bool = False,
    ) -> None:
        super().__init__(size_tab, activation)
        if not 0.0 < dt <= 1.0:
            raise ConfigError(f"dt={dt} must be in (0, 1] for the energy-based net")
        check_flag("clamp", clamp)
        check_flag("output_rho_prime", output_rho_prime)
        self.dt = self.beta_scale = self.state_dt = float(dt)
        self.clamp = clamp
        self.output_rho_prime = output_rho_prime

    def static_terms(self, x: Tensor) -> StaticTerms:
        """Input term ``W_L rho(x) + b_L``."""
        layers = list(self.weights)
        input_term = F.linear(self.rho(x), layers[-1].weight, layers[-1].bias)
        return StaticTerms(
            input_term, input_term, [m.weight for m in layers[:-1]], [m.bias for m in layers[:-1]]
        )

    def energy(self, s: State, static: StaticTerms) -> Tensor:
        """Hopfield energy ``E(x, s)`` per example, shape (B,)."""
        r = [self.rho(si) for si in s]
        e = sum(0.5 * (si * si).sum(1) for si in s) - (r[-1] * static.input_term).sum(1)
        for i, layer in enumerate(list(self.weights)[:-1]):
            e = e - (r[i] * F.linear(r[i + 1], layer.weight, layer.bias)).sum(1)
        return e

    def primitive(self, s: State, static: StaticTerms) -> Tensor:
        """``Phi_eps(x, s) = 1/2 |s|^2 - dt E(x, s)`` per example, shape (B,)."""
        return sum(0.5 * (si * si).sum(1) for si in s) - self.dt * self.energy(s, static)

    def step(
        self, s: State, static: StaticTerms, beta: float = 0.0, y: Tensor | None = None
    ) -> State:
        """One synchronous update of all layers from ``s``:
        ``s_i <- s_i + dt (-s_i + rho'(s_i) (W_i rho(s_{i+1}) + b_i + W_{i-1}^T rho(s_{i-1})))``,
        without ``rho'(s_0)`` for the output unless ``output_rho_prime``."""
        rho, w, b, L = self.rho, static.weights, static.biases, len(s) - 1
        r = [rho(si) for si in s]
        new = []
        for i in range(L + 1):
            # -dE/ds_i without the leak and rho'(s_i): (B, size_i)
            z = static.drive if i == L else torch.addmm(b[i], r[i + 1], w[i].t())
            if i > 0:
                z = torch.addmm(z, r[i - 1], w[i - 1])
            rho_prime = i > 0 or self.output_rho_prime
            si = euler_update(s[i], z, r[i], rho, self.dt, rho_prime, beta if i == 0 else 0.0, y)
            new.append(si.clamp(0.0, 1.0) if self.clamp else si)
        return new
