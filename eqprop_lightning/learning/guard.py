"""Divergence and convergence diagnostics of the dynamics: how far the free phase still moves at
its last step, and where a state first stops being finite."""

from __future__ import annotations

import torch
from torch import Tensor

from eqprop_lightning.nets import State
from eqprop_lightning.nets.protocol import Net


class DivergenceError(RuntimeError):
    """Training produced a non-finite state or weight, or a free phase that has not converged;
    the message names the layer, the phase and the step."""


def last_step_change(previous: State, s: State) -> Tensor:
    """Per state layer ``l``: the batch mean of ``max_i |s_l,i(T) - s_l,i(T-1)|``, how far the
    free phase still moves at its last step (0 at a fixed point, NaN once a state is NaN)."""
    changes = [(a - b).abs().flatten(1).amax(1).mean() for a, b in zip(s, previous, strict=True)]
    return torch.stack(changes)


def _first_nonfinite_layer(s: State) -> int | None:
    for i, layer in enumerate(s):
        if not torch.isfinite(layer).all():
            return i
    return None


def first_nonfinite_weight(net: Net) -> str | None:
    """The label of the first synapse group with a non-finite parameter, else ``None``."""
    for label, group in zip(net.synapse_labels(), net.synapse_groups(), strict=True):
        if not all(torch.isfinite(p).all() for p in group.parameters()):
            return label
    return None


def locate_nonfinite(
    net, x: Tensor, y: Tensor, T: int, K: int, nudges: tuple[float, ...]
) -> str | None:
    """Replay one batch step by step: the input, the weights, then the free phase (``T`` steps)
    and each nudged phase (``K`` steps at each ``beta`` in ``nudges``); describe the first
    non-finite value found, or return ``None`` if everything stays finite."""
    if not torch.isfinite(x).all():
        return "the input batch is not finite"
    if (label := first_nonfinite_weight(net)) is not None:
        return f"weight {label} is not finite"
    phases = [("the free phase", 0.0, T)]
    phases += [(f"the nudged phase (beta = {beta:g})", beta, K) for beta in nudges]
    with torch.no_grad():
        static = net.static_terms(x)
        start = net.init_state(x)  # the free phase starts from zeros, the nudged ones from s*
        for phase, beta, steps in phases:
            s = start
            for t in range(1, steps + 1):
                s = net.step(s, static, beta, y)
                if (layer := _first_nonfinite_layer(s)) is not None:
                    return f"state s{layer} is not finite in {phase} at step {t} of {steps}"
            if beta == 0.0:
                start = s
    return None
