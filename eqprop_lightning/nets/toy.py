"""The energy-based toy model of Ernoult et al. (2019), Fig. 2.

Two states, the output ``s[0]`` and one hidden layer ``s[1]``, with the input connected to both (a
skip connection input -> output) and a symmetric hidden <-> output coupling:

    E = 1/2 (|s_0|^2 + |s_1|^2) - rho(s_0) . (W_01 rho(s_1) + b_01 + W_0x rho(x) + b_0x)
        - rho(s_1) . (W_1x rho(x) + b_1x)

    s <- s - dt dE/ds  (+ dt beta (y - s_0) on the output), optionally clamped to [0, 1].

Unlike EPcont, the output update carries ``rho'(s_0)``. The original cannot train this model
(its weight update has no bias increments); here the EP estimate comes from the primitive
``Phi_eps = 1/2 |s|^2 - dt E`` like every other net, biases included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError, check_flag
from eqprop_lightning.nets.activations import get_activation
from eqprop_lightning.nets.nudge import euler_update
from eqprop_lightning.nets.protocol import State, repeat_batch


@dataclass
class ToyStaticTerms:
    """Constant drives ``W_0x rho(x) + b_0x + b_01`` (B, n_out) and ``W_1x rho(x) + b_1x``
    (B, n_hid): the input terms with the output's two biases."""

    to_output: Tensor
    to_hidden: Tensor

    def repeat(self, n: int) -> ToyStaticTerms:
        """The drives of ``n`` copies of the batch."""
        return ToyStaticTerms(repeat_batch(self.to_output, n), repeat_batch(self.to_hidden, n))


class ToyEnergyBased(nn.Module):
    """Toy EB net, ``size_tab = [n_out, n_hid, n_in]`` (the paper's ``10 50 5``).

    Shape:
        x: (B, n_in); s[0]: (B, n_out); s[1]: (B, n_hid).
    """

    bptt_extra_step = False
    uses_previous_state = False

    def __init__(
        self, size_tab: list[int], activation: str = "tanh", dt: float = 0.08, clamp: bool = False
    ) -> None:
        super().__init__()
        if len(size_tab) != 3 or any(not isinstance(n, int) or n < 1 for n in size_tab):
            raise ConfigError(
                f"size_tab={size_tab} must be 3 positive integers [n_out, n_hid, n_in] "
                "for the toy model"
            )
        if not 0.0 < dt <= 1.0:
            raise ConfigError(f"dt={dt} must be in (0, 1] for the toy model")
        check_flag("clamp", clamp)
        n_out, n_hid, n_in = size_tab
        self.size_tab = list(size_tab)
        self.rho = get_activation(activation)
        self.dt = self.beta_scale = self.state_dt = dt
        self.clamp = clamp
        self.w01 = nn.Linear(n_hid, n_out)  # hidden -> output (symmetric coupling)
        self.w0x = nn.Linear(n_in, n_out)  # input -> output (skip connection)
        self.w1x = nn.Linear(n_in, n_hid)  # input -> hidden

    input_fields = "size_tab[2]"
    output_field = "size_tab[0]"

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example: ``(n_in,)``."""
        return (self.size_tab[2],)

    @property
    def num_classes(self) -> int:
        """Output units: ``n_out``."""
        return self.size_tab[0]

    def synapse_groups(self) -> list[nn.Module]:
        """Learning-rate order of the original: W_01, W_0x, W_1x."""
        return [self.w01, self.w0x, self.w1x]

    def synapse_labels(self) -> list[str]:
        return ["W01", "W0x", "W1x"]

    def init_state(self, x: Tensor) -> State:
        return [x.new_zeros(x.shape[0], n) for n in self.size_tab[:2]]

    def output(self, s: State) -> Tensor:
        return s[0]

    def static_terms(self, x: Tensor) -> ToyStaticTerms:
        rx = self.rho(x)
        return ToyStaticTerms(self.w0x(rx) + self.w01.bias, self.w1x(rx))

    def energy(self, s: State, static: ToyStaticTerms) -> Tensor:
        """``E(x, s)`` per example, shape (B,)."""
        r0, r1 = self.rho(s[0]), self.rho(s[1])
        half_norm = 0.5 * ((s[0] * s[0]).sum(1) + (s[1] * s[1]).sum(1))
        to_output = F.linear(r1, self.w01.weight) + static.to_output
        return half_norm - (r0 * to_output).sum(1) - (r1 * static.to_hidden).sum(1)

    def primitive(self, s: State, static: ToyStaticTerms) -> Tensor:
        """``Phi_eps(x, s) = 1/2 |s|^2 - dt E(x, s)`` per example, shape (B,)."""
        half_norm = 0.5 * ((s[0] * s[0]).sum(1) + (s[1] * s[1]).sum(1))
        return half_norm - self.dt * self.energy(s, static)

    def step(
        self, s: State, static: ToyStaticTerms, beta: float = 0.0, y: Tensor | None = None
    ) -> State:
        """``s_i <- s_i - dt dE/ds_i`` for both layers from the same ``s`` (+ the output nudge)."""
        rho, w = self.rho, self.w01.weight
        r0, r1 = rho(s[0]), rho(s[1])
        z0 = torch.addmm(static.to_output, r1, w.t())  # (B, n_out)
        z1 = torch.addmm(static.to_hidden, r0, w)  # (B, n_hid)
        new = [
            euler_update(s[0], z0, r0, rho, self.dt, True, beta, y),
            euler_update(s[1], z1, r1, rho, self.dt, True),
        ]
        return [t.clamp(0.0, 1.0) for t in new] if self.clamp else new
