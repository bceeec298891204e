"""Recurrent backpropagation (Almeida 1987, Pineda 1987): the gradient at the free fixed point by
the implicit function theorem.

At the fixed point ``s* = F(x, s*, theta)`` of the transition ``F`` (one free step of the net),
``ds*/dtheta = (I - dF/ds)^-1 dF/dtheta``, so that the gradient of ``L = l(s*)`` is

    dL/dtheta = lambda^T dF/dtheta(x, s*) + dl/dtheta,   lambda = (dF/ds)^T lambda + dl/ds(s*),

the adjoint ``lambda`` solved by the fixed-point iteration ``lambda_{j+1} = (dF/ds)^T lambda_j +
dl/ds``, ``lambda_0 = dl/ds``, with vector-Jacobian products of the net's own step (autograd).
After ``K`` iterations ``lambda_K = sum_{j <= K} ((dF/ds)^T)^j dl/ds``: at a converged free phase
this is BPTT through ``K + 1`` transitions, and it tends to the implicit gradient as ``K`` grows
(``J = dF/ds`` has spectral radius < 1 at a stable fixed point).
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqprop_lightning.learning.bptt import cost
from eqprop_lightning.learning.estimator import Estimate, check_phases
from eqprop_lightning.learning.guard import last_step_change
from eqprop_lightning.learning.phases import free_phase
from eqprop_lightning.nets import State, Static
from eqprop_lightning.nets.protocol import Net


def pairing(a: State, b: State) -> Tensor:
    """``<a, b> = sum_i sum(a_i * b_i)`` over the layers of two states, a scalar."""
    return sum((u * v).sum() for u, v in zip(a, b, strict=True))


def adjoint(
    net: Net, s_star: State, static: Static, y: Tensor, iterations: int
) -> tuple[State, State]:
    """``(lambda, F(s*))``: ``lambda`` after ``iterations`` steps of ``lambda <- (dF/ds)^T lambda
    + dl/ds``, and the transition ``F(x, s*, theta)`` still attached to the parameters."""
    s = [t.detach().requires_grad_(True) for t in s_star]
    loss = cost(net, net.output(s), y)
    dl_ds = torch.autograd.grad(loss, s, allow_unused=True)
    dl_ds = [torch.zeros_like(t) if g is None else g for t, g in zip(s, dl_ds, strict=True)]
    step = net.step(s, static)
    lam = dl_ds
    for _ in range(iterations):
        # (dF/ds)^T lambda: one vector-Jacobian product through the step, as the gradient of
        # <F(s), lambda> (the same numbers as passing lambda as grad_outputs, whose first use
        # costs a second of imports in torch's autograd)
        vjp = torch.autograd.grad(pairing(step, lam), s, retain_graph=True, allow_unused=True)
        lam = [g if v is None else v + g for v, g in zip(vjp, dl_ds, strict=True)]
    return lam, step


class RecurrentBackprop:
    """RBP: ``T`` free steps to ``s*``, ``K`` adjoint iterations, then the surrogate

        L_RBP = sum_i < lambda_i , F_i(x, s*, theta) > + <l(s*)>,   lambda and s* held fixed,

    whose parameter gradient is ``lambda^T dF/dtheta + dl/dtheta = dL/dtheta`` (``dl/dtheta``:
    a readout's weights; see the module docstring).
    """

    continual = False

    def __init__(self, T: int, K: int) -> None:
        check_phases(T, K, iterations=True)
        self.T, self.K = T, K

    def __call__(self, net: Net, x: Tensor, y: Tensor, step: int = 0) -> Estimate:
        static = net.static_terms(x)
        with torch.no_grad():
            before, s_star = free_phase(net, static, net.init_state(x), self.T)
        with torch.enable_grad():
            lam, transition = adjoint(net, s_star, static, y, self.K)
            objective = pairing(transition, [m.detach() for m in lam])
            # the direct term dl/dtheta at s* (a readout's weights; none for the squared error)
            objective = objective + cost(net, net.output(s_star), y)
        return Estimate(objective, net.output(s_star).detach(), last_step_change(before, s_star))
