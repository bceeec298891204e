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

import math

import torch
from torch import Tensor

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning.estimator import Estimate, check_phases
from eqprop_lightning.learning.guard import last_step_change
from eqprop_lightning.learning.phases import relax_with_previous
from eqprop_lightning.nets import State, StaticTerms


def ep_surrogate(
    net,
    static: StaticTerms,
    s1: State,
    s2: State,
    beta1: float,
    beta2: float,
    previous: tuple[State, State] | None = None,
) -> Tensor:
    """Scalar ``L_EP`` whose gradient with respect to the parameters is ``-Delta_theta``.

    ``previous`` holds the states one step before ``s1`` and ``s2``; only nets with
    ``uses_previous_state`` (the conv net's legacy pooling) read them.
    """
    if beta1 == beta2:
        raise ConfigError(f"EP needs two different nudges, got beta1 = beta2 = {beta1}")

    def phi(s: State, before: State | None) -> Tensor:
        s = [t.detach() for t in s]
        if getattr(net, "uses_previous_state", False):
            return net.primitive(s, static, [t.detach() for t in before]).mean()
        return net.primitive(s, static).mean()

    p1, p2 = previous or (None, None)
    return -(phi(s2, p2) - phi(s1, p1)) / (net.beta_scale * (beta2 - beta1))


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
        if not 0 < beta < math.inf:
            raise ConfigError(f"beta={beta!r} must be finite and > 0 for EP (the nudging strength)")
        self.T, self.K, self.beta, self.symmetric = T, K, beta, symmetric

    def __call__(self, net, x: Tensor, y: Tensor) -> Estimate:
        static = net.static_terms(x)
        K, beta = self.K, self.beta
        with torch.no_grad():
            before_free, s_free = relax_with_previous(net, net.init_state(x), static, self.T)
            before_pos, s_pos = relax_with_previous(net, s_free, static, K, beta, y)
            if self.symmetric:
                before_neg, s_neg = relax_with_previous(net, s_free, static, K, -beta, y)
        if self.symmetric:
            objective = ep_surrogate(
                net, static, s_neg, s_pos, -beta, beta, (before_neg, before_pos)
            )
        else:
            objective = ep_surrogate(
                net, static, s_free, s_pos, 0.0, beta, (before_free, before_pos)
            )
        return Estimate(objective, net.output(s_free), last_step_change(before_free, s_free))
