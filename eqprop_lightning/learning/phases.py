"""Relaxation of the dynamics: the free phase and the nudged phase (through ``net.step``, or
compiled after :func:`~eqprop_lightning.learning.compiled.compile_dynamics`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from eqprop_lightning.learning.compiled import compiled_relaxation
from eqprop_lightning.nets import State, Static
from eqprop_lightning.nets.protocol import Net


def _loop(
    step: Callable,
    s: State,
    static: Static,
    steps: int,
    beta: float | Tensor = 0.0,
    y: Tensor | None = None,
) -> tuple[State, State]:
    """``steps`` applications of ``step``; the state one step before the end, and the end."""
    previous = s
    for _ in range(steps):
        previous, s = s, step(s, static, beta, y)
    return previous, s


def relax_with_previous(
    net: Net,
    s: State,
    static: Static,
    steps: int,
    beta: float | Tensor = 0.0,
    y: Tensor | None = None,
) -> tuple[State, State]:
    """Apply ``s <- F(x, s, theta) - beta dl/ds`` ``steps`` times (free when ``beta = 0``);
    also return the state one step before the end (``s`` if no step)."""
    compiled = compiled_relaxation(net)
    if compiled is None:
        return _loop(net.step, s, static, steps, beta, y)
    return compiled(_loop, s, static, steps, beta, y)


def relax(
    net: Net,
    s: State,
    static: Static,
    steps: int,
    beta: float | Tensor = 0.0,
    y: Tensor | None = None,
) -> State:
    """:func:`relax_with_previous` without the state before the end."""
    return relax_with_previous(net, s, static, steps, beta, y)[1]


def free_phase(net: Net, static: Static, s: State, T: int) -> tuple[State, State]:
    """First phase: ``T`` steps at ``beta = 0`` towards the free fixed point ``s*``. Returns
    the state one step before the end and ``s*`` (their difference is the convergence check;
    the conv net's legacy pooling reads the former)."""
    return relax_with_previous(net, s, static, T)


def nudged_phase(
    net: Net, static: Static, s_free: State, K: int, beta: float | Tensor, y: Tensor
) -> tuple[State, State]:
    """Second phase: ``K`` steps from ``s*`` with the output nudged towards ``y`` by ``beta``
    (a tensor: one nudge per example). Returns the state one step before the end and the end."""
    return relax_with_previous(net, s_free, static, K, beta, y)
