"""Truncated backpropagation through time on the relaxation of the free phase."""

from __future__ import annotations

import torch
from torch import Tensor

from eqprop_lightning.learning.estimator import Estimate, check_phases
from eqprop_lightning.learning.guard import last_step_change
from eqprop_lightning.learning.phases import relax, relax_with_previous
from eqprop_lightning.nets import output_cost
from eqprop_lightning.nets.protocol import Net


def cost(net: Net, output: Tensor, y: Tensor) -> Tensor:
    """Loss ``<l(output, y)>``, the nudging cost of ``net`` batch-averaged (``1/(2B) sum_b
    |s_out - y|^2`` for the squared error, see :mod:`eqprop_lightning.nets.readout`)."""
    return output_cost(net, output, y).mean()


def bptt_transitions(net: Net, K: int) -> int:
    """Tracked transitions: ``K + 1`` for the fully connected nets (as the original), else ``K``."""
    return K + 1 if net.bptt_extra_step else K


class TruncatedBPTT:
    """BPTT of the cost of ``s_T`` through the last :func:`bptt_transitions` transitions of a
    ``T``-step free phase (all ``T`` where ``K + 1`` would exceed them, ``K = T``)."""

    continual = False

    def __init__(self, T: int, K: int) -> None:
        check_phases(T, K)
        self.T, self.K = T, K

    def __call__(self, net: Net, x: Tensor, y: Tensor, step: int = 0) -> Estimate:
        static = net.static_terms(x)
        tracked = min(bptt_transitions(net, self.K), self.T)
        with torch.no_grad():
            s = relax(net, net.init_state(x), static, self.T - tracked)
        previous, s = relax_with_previous(net, s, static, tracked)
        change = last_step_change([t.detach() for t in previous], [t.detach() for t in s])
        return Estimate(cost(net, net.output(s), y), net.output(s).detach(), change)
