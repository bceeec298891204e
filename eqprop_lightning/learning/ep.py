"""The equilibrium-propagation estimate, shared by every network.

For two relaxed states ``s1`` (at nudging ``beta1``) and ``s2`` (at ``beta2``) the EP update is

    Delta_theta = 1 / (beta2 - beta1) * < dPhi/dtheta(x, s2) - dPhi/dtheta(x, s1) >,

with ``<.>`` the batch mean. Two-phase EP uses ``(beta1, beta2) = (0, beta)`` (``s1`` the free
fixed point); symmetric EP uses ``(-beta, +beta)``. The betas are the effective nudges
``net.beta_scale * beta`` (EPcont nudges by ``dt beta``, its primitive is ``1/2|s|^2 - dt E``).

The estimate is expressed as the scalar surrogate

    L_EP = -(<Phi(x, s2)> - <Phi(x, s1)>) / (beta2 - beta1),   s1, s2 held fixed,

whose parameter gradient is ``-Delta_theta``. Backpropagating it (through Lightning's
``manual_backward`` under DDP) and taking an SGD step ``theta <- theta - lr grad`` applies
``theta <- theta + lr Delta_theta`` exactly as the original's hand-written update.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning.estimator import Estimate, check_phases
from eqprop_lightning.learning.phases import free_phase, nudged_phase
from eqprop_lightning.nets import State, StaticTerms


def ep_surrogate(
    net, static: StaticTerms, s1: State, s2: State, beta1: float, beta2: float
) -> Tensor:
    """Scalar ``L_EP`` whose gradient with respect to the parameters is ``-Delta_theta``."""
    if beta1 == beta2:
        raise ConfigError(f"EP needs two different nudges, got beta1 = beta2 = {beta1}")
    s1 = [t.detach() for t in s1]
    s2 = [t.detach() for t in s2]
    scale = net.beta_scale * (beta2 - beta1)
    return -(net.primitive(s2, static).mean() - net.primitive(s1, static).mean()) / scale


class EquilibriumProp:
    """EP: ``T`` free steps to ``s*``, then ``K`` nudged steps from ``s*``.

    Two-phase (the default, seed 1): one phase nudged by ``+beta``,
    ``Delta_theta = (1/beta) <dPhi/dtheta(s^beta) - dPhi/dtheta(s*)>``.
    Symmetric (``symmetric=True``, three phases): phases nudged by ``+beta`` and ``-beta``,
    ``Delta_theta = (1/(2 beta)) <dPhi/dtheta(s^beta) - dPhi/dtheta(s^-beta)>``, whose bias is
    O(beta^2) instead of O(beta).
    """

    def __init__(self, T: int, K: int, beta: float, symmetric: bool = False) -> None:
        check_phases(T, K)
        if not beta > 0:
            raise ConfigError(f"beta={beta!r} must be > 0 for EP (the nudging strength)")
        self.T, self.K, self.beta, self.symmetric = T, K, beta, symmetric

    def __call__(self, net, x: Tensor, y: Tensor) -> Estimate:
        static = net.static_terms(x)
        with torch.no_grad():
            s_free = free_phase(net, static, net.init_state(x), self.T)
            s_pos = nudged_phase(net, static, s_free, self.K, self.beta, y)
            if self.symmetric:
                s_neg = nudged_phase(net, static, s_free, self.K, -self.beta, y)
        if self.symmetric:
            objective = ep_surrogate(net, static, s_neg, s_pos, -self.beta, self.beta)
        else:
            objective = ep_surrogate(net, static, s_free, s_pos, 0.0, self.beta)
        return Estimate(objective, net.output(s_free))
