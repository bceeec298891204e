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


#: beyond it the complex terms below are below 1e-34 in absolute value (sinh(40)^2 > 1e34), under
#: float64's resolution of tanh's value; the clamp keeps exp finite (its backward would be NaN)
_SINH_ARG_MAX = 40.0


def _complex_tanh_terms(a: Tensor, tanh_a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``(u, v)`` of ``tanh(a + ib) = tanh(a) (1 + u) + i v``: ``(sin^2 b, sin b cos b) / q``
    with ``q = sinh^2 a + cos^2 b`` (``cosh 2a + cos 2b = 2 q``: a sum of squares, so no
    cancellation near the poles ``a = 0, b = pi/2 + k pi``), ``sinh a = tanh a cosh a`` (torch's
    ``sinh`` is several times slower than ``exp`` on a CPU)."""
    e = torch.exp(a.clamp(-_SINH_ARG_MAX, _SINH_ARG_MAX))
    sin, cos = torch.sin(b), torch.cos(b)
    inv_q = ((0.5 * tanh_a * (e + e.reciprocal())).square() + cos.square()).reciprocal()
    return sin.square() * inv_q, sin * cos * inv_q


def _tanh(z: Tensor) -> Tensor:
    """``tanh``; for complex ``z = a + ib`` in real arithmetic (:func:`_complex_tanh_terms`),
    several times faster on a CPU than torch's complex ``tanh`` (holomorphic EP)."""
    if not z.is_complex():
        return torch.tanh(z)
    t = torch.tanh(z.real)
    u, v = _complex_tanh_terms(z.real, t, z.imag)
    return torch.complex(t + t * u, v)


def _sigmoid(z: Tensor) -> Tensor:
    """The logistic function; for complex ``z = a + ib``, from ``sigmoid(z) = (1 + tanh(z/2))/2``:
    ``sigmoid(a) + tanh(a/2) u/2 + i v/2`` with ``(u, v)`` the terms of ``tanh(a/2 + ib/2)``
    (real arithmetic, several times faster on a CPU than torch's complex ``sigmoid``, which in
    complex64 returns NaN for some real parts below -88)."""
    if not z.is_complex():
        return torch.sigmoid(z)
    half_a = 0.5 * z.real
    t = torch.tanh(half_a)
    u, v = _complex_tanh_terms(half_a, t, 0.5 * z.imag)
    return torch.complex(torch.sigmoid(z.real) + 0.5 * t * u, 0.5 * v)


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
    "sigm": Activation("sigm", _sigmoid, 4.0, -2.0, _logistic_factor, 4.0),
    # tanh: rho' = 1 - tanh^2
    "tanh": Activation("tanh", _tanh, 1.0, 0.0, _tanh_factor),
    # hardsigm: rho(z) = clamp(z, 0, 1), rho' = 1[0 <= z <= 1]
    "hardsigm": Activation("hardsigm", _unit_clamp, 1.0, 0.0, _hardsigm_factor),
    # seed 2 (Bal & Sengupta, 2023): sigmoid, rho' = rho (1 - rho); my_hard_sig: rho(z) =
    # clamp(z / 2, 0, 1), rho' = 1/2 1[0 <= z <= 2]
    "sigmoid": Activation("sigmoid", _sigmoid, 1.0, 0.0, _logistic_factor),
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
