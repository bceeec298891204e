"""The interface every learning rule implements."""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

from torch import Tensor

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.nets.protocol import Net


class Estimate(NamedTuple):
    """A rule's result on one batch: ``objective.backward()`` writes the gradient estimate into
    the parameters' ``.grad``; ``output`` is the free-phase output used for the prediction;
    ``last_change`` is :func:`~eqprop_lightning.learning.guard.last_step_change` of the free
    phase, per state layer."""

    objective: Tensor
    output: Tensor
    last_change: Tensor


class GradientEstimator(Protocol):
    """A learning rule: ``T`` free steps, ``K`` nudged, tracked or adjoint steps (BPTT tracks
    ``K + 1`` on the fully connected nets, as the original: :func:`.bptt.bptt_transitions`);
    ``step`` is the optimizer step (random-sign EP draws its sign from it). A ``continual`` rule
    (continual EP) updates the weights during its nudged phase, through an ``apply`` callback,
    instead of returning one estimate at fixed weights."""

    T: int
    K: int
    continual: bool

    def __call__(self, net: Net, x: Tensor, y: Tensor, step: int = 0) -> Estimate: ...


def check_phases(T: int, K: int, iterations: bool = False) -> None:
    """``T`` free steps, ``K`` nudged (or tracked) steps, ``1 <= K <= T``; ``iterations``: ``K``
    counts RBP's adjoint iterations instead, any ``K >= 1``."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ConfigError(f"T={T!r} must be a positive integer (number of free-phase steps)")
    what = "adjoint iterations" if iterations else "nudged/BPTT steps"
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ConfigError(f"K={K!r} must be a positive integer (number of {what})")
    if K > T and not iterations:
        raise ConfigError(f"K={K} must not exceed T={T} (K <= T)")


def check_beta(beta: object, note: str, field: str = "beta") -> None:
    """``beta``, a nudging strength, is a finite number > 0 (the one check of every rule and of
    the GDU callback; ``note`` ends the message, e.g. ``for EP (the nudging strength)``)."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
        raise ConfigError(f"{field}={beta!r} must be finite and > 0 {note}")
