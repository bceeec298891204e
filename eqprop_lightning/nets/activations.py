"""Activation functions rho of the seed-1 networks, with their derivatives rho'.

Each activation is written as ``rho(z) = g(a * z + c)`` for a cheap elementwise ``g``. The
prototypical nets fold the affine part into their weights once per batch (``a W``, ``a b + c``)
so that one relaxation step costs one ``addmm`` and one ``g`` per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from eqprop_lightning.errors import ConfigError


@dataclass(frozen=True)
class Activation:
    """``rho(z) = g(scale * z + shift)`` and its derivative
    ``rho'(z) = derivative_scale * derivative_factor(z, rho(z))``."""

    name: str
    g: Callable[[Tensor], Tensor]
    scale: float
    shift: float
    derivative_factor: Callable[[Tensor, Tensor], Tensor]
    """``rho'(z) / derivative_scale`` given ``z`` and ``rho(z)``, in as few ops as possible (the
    energy-based steps fold ``derivative_scale`` into one ``addcmul``)."""
    derivative_scale: float = 1.0

    def __call__(self, z: Tensor) -> Tensor:
        if self.scale == 1.0 and self.shift == 0.0:
            return self.g(z)
        return self.g(z * self.scale + self.shift)

    def derivative(self, z: Tensor, r: Tensor) -> Tensor:
        """``rho'(z)`` given ``z`` and ``r = rho(z)``."""
        factor = self.derivative_factor(z, r)
        return factor if self.derivative_scale == 1.0 else self.derivative_scale * factor


def _logistic_factor(z: Tensor, r: Tensor) -> Tensor:
    return torch.addcmul(r, r, r, value=-1.0)  # r (1 - r)


def _tanh_factor(z: Tensor, r: Tensor) -> Tensor:
    return 1.0 - r * r


def _unit_clamp(z: Tensor) -> Tensor:
    return torch.clamp(z, 0.0, 1.0)


def _hardsigm_factor(z: Tensor, r: Tensor) -> Tensor:
    # 1[0 <= z <= 1]: exactly where clamp(z, 0, 1) leaves z unchanged
    return (r == z).to(z.dtype)


def _half_hardsigm_factor(z: Tensor, r: Tensor) -> Tensor:
    # 1[0 <= z <= 2] with r = clamp(z / 2, 0, 1) (doubling is exact in floating point)
    return (r * 2.0 == z).to(z.dtype)


ACTIVATIONS: dict[str, Activation] = {
    # sigm: rho(z) = 1 / (1 + exp(-4 (z - 0.5))), rho' = 4 rho (1 - rho)
    "sigm": Activation("sigm", torch.sigmoid, 4.0, -2.0, _logistic_factor, 4.0),
    # tanh: rho' = 1 - tanh^2
    "tanh": Activation("tanh", torch.tanh, 1.0, 0.0, _tanh_factor),
    # hardsigm: rho(z) = clamp(z, 0, 1), rho' = 1[0 <= z <= 1]
    "hardsigm": Activation("hardsigm", _unit_clamp, 1.0, 0.0, _hardsigm_factor),
    # seed 2 (Bal & Sengupta, 2023): sigmoid, rho' = rho (1 - rho); my_hard_sig: rho(z) =
    # clamp(z / 2, 0, 1), rho' = 1/2 1[0 <= z <= 2]
    "sigmoid": Activation("sigmoid", torch.sigmoid, 1.0, 0.0, _logistic_factor),
    "my_hard_sig": Activation("my_hard_sig", _unit_clamp, 0.5, 0.0, _half_hardsigm_factor, 0.5),
}
# seed 2's names for the seed-1 activations
ACTIVATIONS["my_sigmoid"] = ACTIVATIONS["sigm"]
ACTIVATIONS["hard_sigmoid"] = ACTIVATIONS["hardsigm"]


def get_activation(name: str) -> Activation:
    """Look up an activation by its name in either seed (``tanh``, ``sigm``, ``hardsigm``,
    ``sigmoid``, ``my_sigmoid``, ``hard_sigmoid``, ``my_hard_sig``)."""
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"activation={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]
