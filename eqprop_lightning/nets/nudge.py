"""The nudge of EP's nudged phase, shared by every net: the force ``-beta dl/ds_out`` of the
cost on the output layer, and the Euler step of the energy-based nets that adds it to the
increment."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from eqprop_lightning.nets.activations import Activation


def is_nudged(beta: float | Tensor) -> bool:
    """Whether ``beta`` nudges: a non-zero number, or a tensor (a complex nudge)."""
    return isinstance(beta, Tensor) or beta != 0.0


#: ``y`` of a nudged step: the target (squared error ``l = 1/2 |s_out - y|^2``, whose force
#: ``-dl/ds_out`` is ``y - s_out``), or a function ``s_out -> -dl/ds_out`` (a readout's cost,
#: :mod:`eqprop_lightning.nets.readout`).
Target = Tensor | Callable[[Tensor], Tensor]


def nudge_force(y: Target, s: Tensor) -> Tensor:
    """``-dl/ds`` of the cost at the output state ``s``: ``y - s``, or ``y(s)``."""
    return y - s if isinstance(y, Tensor) else y(s)


def add_nudge(t: Tensor, coef: float | Tensor, y: Target, s: Tensor) -> Tensor:
    """``t - coef dl/ds = t + coef nudge_force(y, s)``: one fused op for a target tensor and a
    number ``coef``. A readout's force is added as ``t + coef * force``: torch.compile's CPU
    backend (torch 2.14) miscompiles ``torch.add(t, a @ W, alpha=c)`` (tests/test_compile.py)."""
    if isinstance(y, Tensor) and not isinstance(coef, Tensor):
        return torch.add(t, y - s, alpha=coef)
    return t + coef * nudge_force(y, s)


def euler_update(
    s: Tensor,
    z: Tensor,
    r: Tensor,
    rho: Activation,
    dt: float,
    rho_prime: bool,
    beta: float | Tensor = 0.0,
    y: Target | None = None,
) -> Tensor:
    """``s + dt (rho'(s) z - s - beta dl/ds)`` (without ``rho'(s)`` unless ``rho_prime``; the
    force ``-dl/ds`` is :func:`nudge_force`), with ``r = rho(s)``, in three to five fused ops
    (``addcmul``, ``add`` with ``alpha``). The increment is formed before it is added to ``s``, as
    in the original code: near a fixed point it is small, and a small nudge must not be rounded
    to the precision of ``s``."""
    if rho_prime:
        d = torch.addcmul(s.neg(), rho.derivative_factor(s, r), z, value=rho.derivative_scale)
    else:
        d = z - s
    if is_nudged(beta):
        d = add_nudge(d, beta, y, s)
    return torch.add(s, d, alpha=dt)
