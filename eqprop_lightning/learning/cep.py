"""Continual EP (Ernoult et al. 2020): the weights move at every step of the nudged phase.

After ``T`` free steps to ``s_0 = s*``, each of the ``K`` nudged steps is

    s_{t+1} = F(x, s_t, theta_t) - beta dl/ds(s_t),
    theta_{t+1} = theta_t + (eta / beta) < dPhi/dtheta(x, s_{t+1}, theta_t)
                                           - dPhi/dtheta(x, s_t, theta_t) >,

with ``eta`` the optimizer's learning rate of the synapse group (the paper's per-step update,
with its ``1/beta`` scaling; ``beta`` is the effective nudge ``net.beta_scale * beta``). At
fixed ``theta`` the ``K`` updates telescope to ``(eta / beta) <dPhi/dtheta(s_K) -
dPhi/dtheta(s*)>``, two-phase EP's update, so that with the same learning rates continual EP
tracks EP's total update as ``eta -> 0`` (the C-EP theorem). Each step's update is the
gradient of the two-phase surrogate of ``(s_t, s_{t+1})`` and goes through the caller's
``apply`` (``manual_backward`` and an optimizer step: all-reduced under DDP). The telescoping
needs plain SGD (Adam would rescale each of the ``K`` updates): Adam is refused. The nudged
steps run eagerly (``compile`` affects the free phase only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning.ep import ep_surrogate
from eqprop_lightning.learning.estimator import Estimate, check_beta, check_phases
from eqprop_lightning.learning.guard import last_step_change
from eqprop_lightning.learning.phases import free_phase
from eqprop_lightning.nets.protocol import Net


class ContinualEP:
    """C-EP with ``T`` free and ``K`` nudged steps at ``+beta``; ``continual``: the rule applies
    its ``K`` per-step updates itself through ``apply`` (see the module docstring)."""

    continual = True

    def __init__(self, T: int, K: int, beta: float) -> None:
        check_phases(T, K)
        check_beta(beta, "for continual EP")
        self.T, self.K, self.beta = T, K, beta

    def __call__(
        self,
        net: Net,
        x: Tensor,
        y: Tensor,
        step: int = 0,
        apply: Callable[[Estimate], None] | None = None,
    ) -> Estimate:
        """Relax and update; ``apply(estimate)`` takes one optimizer step on
        ``estimate.objective``'s gradient. Returns the free-phase output and convergence, and
        the sum of the per-step surrogates (detached: already applied)."""
        if apply is None:
            raise ConfigError("continual EP updates the weights at every step: give apply")
        with torch.no_grad():
            before, s_free = free_phase(net, net.static_terms(x), net.init_state(x), self.T)
        output, change = net.output(s_free).detach(), last_step_change(before, s_free)
        previous, s = before, s_free
        total = torch.zeros((), dtype=output.dtype, device=output.device)
        for _ in range(self.K):
            static = net.static_terms(x)  # with the current theta_t
            with torch.no_grad():
                s_next = net.step(s, static, self.beta, y)
            objective = ep_surrogate(net, static, s, s_next, 0.0, self.beta, (previous, s))
            apply(Estimate(objective, output, change))
            total = total + objective.detach()
            previous, s = s, s_next
        return Estimate(total, output, change)
