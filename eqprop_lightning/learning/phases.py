"""Relaxation of the dynamics: the free phase and the nudged phase (through ``net.step``, or its
compiled version after :func:`~eqprop_lightning.learning.compiled.compile_dynamics`)."""

from __future__ import annotations

from torch import Tensor

from eqprop_lightning.learning.compiled import step_function
from eqprop_lightning.nets import State, StaticTerms


def relax(
    net, s: State, static: StaticTerms, steps: int, beta: float = 0.0, y: Tensor | None = None
) -> State:
    """Apply ``s <- F(x, s, theta) - beta dl/ds`` ``steps`` times (free when ``beta = 0``)."""
    step = step_function(net)
    for _ in range(steps):
        s = step(s, static, beta, y)
    return s


def relax_with_previous(
    net, s: State, static: StaticTerms, steps: int, beta: float = 0.0, y: Tensor | None = None
) -> tuple[State, State]:
    """:func:`relax`, also returning the state one step before the end (``s`` if no step)."""
    previous, step = s, step_function(net)
    for _ in range(steps):
        previous, s = s, step(s, static, beta, y)
    return previous, s


def free_phase(net, static: StaticTerms, s: State, T: int) -> State:
    """First phase: ``T`` steps at ``beta = 0`` towards the free fixed point ``s*``."""
    return relax(net, s, static, T)


def nudged_phase(net, static: StaticTerms, s_free: State, K: int, beta: float, y: Tensor) -> State:
    """Second phase: ``K`` steps from ``s*`` with the output nudged towards ``y`` by ``beta``."""
    return relax(net, s_free, static, K, beta, y)
