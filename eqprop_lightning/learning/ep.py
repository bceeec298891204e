"""The equilibrium-propagation estimate, shared by every network.

For two relaxed states ``s1`` (at nudging ``beta1``) and ``s2`` (at ``beta2``) the EP update is

    Delta_theta = 1 / (beta2 - beta1) * < dPhi/dtheta(x, s2) - dPhi/dtheta(x, s1) >,

with ``<.>`` the batch mean (:func:`ep_surrogate`, used by the GDU analysis). The training rule
:class:`EquilibriumProp` combines any number of nudged phases by the schemes of
:mod:`eqprop_lightning.learning.nudging` (two-phase, symmetric, random-sign, holomorphic). The
betas are the effective nudges ``net.beta_scale * beta`` (EPcont nudges by ``dt beta``, its
primitive is ``1/2|s|^2 - dt E``).

The estimate is expressed as a scalar surrogate, e.g. for two phases

    L_EP = -(<Phi(x, s2)> - <Phi(x, s1)>) / (beta2 - beta1),   s1, s2 held fixed,

whose parameter gradient is ``-Delta_theta``. Backpropagating it (through Lightning's
``manual_backward`` under DDP) and taking an SGD step ``theta <- theta - lr grad`` applies
``theta <- theta + lr Delta_theta`` exactly as the original's hand-written update.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.func import functional_call

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning.estimator import Estimate, check_beta, check_phases
from eqprop_lightning.learning.guard import last_step_change
from eqprop_lightning.learning.nudging import (
    Nudges,
    check_nudging,
    holomorphic,
    positive,
    random_sign,
    symmetric,
)
from eqprop_lightning.learning.phases import free_phase, nudged_phase
from eqprop_lightning.nets import LayeredFC, State, Static, ToyEnergyBased, output_cost
from eqprop_lightning.nets.protocol import Net, repeat_batch


def ep_surrogate(
    net: Net,
    static: Static,
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
        before = None if before is None else [t.detach() for t in before]
        return _primitive(net, static, [t.detach() for t in s], before).mean()

    p1, p2 = previous or (None, None)
    return -(phi(s2, p2) - phi(s1, p1)) / (net.beta_scale * (beta2 - beta1))


def _primitive(net: Net, static: Static, s: State, previous: State | None) -> Tensor:
    """``Phi(x, s)`` per example (conv legacy pooling reads ``previous``), shape (B,)."""
    if net.uses_previous_state:
        return net.primitive(s, static, previous)
    return net.primitive(s, static)


class _NudgedPrimitives(nn.Module):
    """``<Phi(x, s_k) - beta_scale beta_k l(s_k)>`` for each nudge ``beta_k`` (the nudged
    phase's total primitive; ``l`` depends on the parameters through a readout only): the phases
    start from ``s*`` and relax ``K`` steps as one batch of ``n B`` examples (one nudge per
    example), so that each step reads the weights once. A module, so that holomorphic EP can call
    it with complex weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, y: Tensor, s_free: State, static: Static, K: int, betas: tuple[complex, ...]
    ) -> Tensor:
        """``static``: the free phase's static terms (complex for complex nudges), repeated
        here for the ``n`` phases, so that the input terms are computed, and backpropagated,
        once per batch."""
        n, B = len(betas), y.shape[0]
        if n == 1:
            beta = betas[0]
        else:  # (n B, 1): beta_k for the k-th block of B examples
            beta = torch.tensor(betas, dtype=s_free[0].dtype, device=y.device)
            beta = beta.repeat_interleave(B).unsqueeze(1)
        static = static.repeat(n)
        with torch.no_grad():
            start = [repeat_batch(t, n) for t in s_free]
            previous, s = nudged_phase(self.net, static, start, K, beta, repeat_batch(y, n))
        phi = _primitive(self.net, static, s, previous)  # (n B,)
        nudge = self.net.beta_scale * (beta if n == 1 else beta.view(-1))
        phi = phi - nudge * output_cost(self.net, self.net.output(s), repeat_batch(y, n))
        return phi.view(n, B).mean(1)  # (n,)


def _cast_static(static: Static, dtype: torch.dtype) -> Static:
    """The static terms in ``dtype``, still attached to the real parameters: the input and the
    weights are real, so the terms computed with complex weights are these, cast. Floating
    tensors are cast (also in lists and tuples), once each, so that a term that is another
    (``drive is input_term``) stays so; other fields (None, numbers, index tensors) are kept."""
    if not dataclasses.is_dataclass(static):
        raise ConfigError(
            f"nudging: holomorphic casts the static terms field by field: "
            f"{type(static).__name__} is not a dataclass (nets/protocol.py's Static)"
        )
    cast: dict[int, Tensor] = {}

    def to(value: object) -> object:
        if type(value) in (list, tuple):
            return type(value)(to(v) for v in value)
        if not isinstance(value, Tensor) or not value.is_floating_point():
            return value
        if id(value) not in cast:
            cast[id(value)] = value.to(dtype)
        return cast[id(value)]

    fields = dataclasses.fields(static)
    return dataclasses.replace(static, **{f.name: to(getattr(static, f.name)) for f in fields})


def check_static(net: Net, static: object) -> None:
    """``net.static_terms`` returns a :class:`Static`, whose ``repeat(n)`` gives the terms of the
    batched nudged phases (a tensor's own ``repeat`` failed deep inside with a shape error)."""
    if isinstance(static, Tensor) or not callable(getattr(static, "repeat", None)):
        raise ConfigError(
            f"model.net: {type(net).__name__}.static_terms returned a {type(static).__name__}, "
            "not a Static: return an object with repeat(n), the terms of n copies of the batch "
            "(e.g. a dataclass, as StaticTerms; nets/protocol.py)"
        )


HOLOMORPHIC_ACTIVATIONS = ("tanh", "sigm", "sigmoid", "my_sigmoid")


def check_holomorphic(net: Net) -> None:
    """Holomorphic EP needs dynamics holomorphic in the state: a fully connected or toy net with
    a smooth activation and no clamp."""
    alternatives = "use nudging: symmetric or random_sign"
    if not isinstance(net, (LayeredFC, ToyEnergyBased)):
        raise ConfigError(
            f"nudging: holomorphic needs a fully connected or toy net (LayeredFC, "
            f"ToyEnergyBased), whose dynamics are known to be holomorphic in the state, not "
            f"{type(net).__name__}: {alternatives}"
        )
    if net.clamp:
        raise ConfigError(
            f"nudging: holomorphic cannot clamp the states (clamp: true is not holomorphic): "
            f"set clamp: false or {alternatives}"
        )
    if net.rho.name not in HOLOMORPHIC_ACTIVATIONS:
        raise ConfigError(
            f"nudging: holomorphic needs a holomorphic activation, one of "
            f"{list(HOLOMORPHIC_ACTIVATIONS)}, not {net.rho.name!r}: {alternatives}"
        )


class EquilibriumProp:
    """EP: ``T`` free steps to ``s*``, then nudged phases of ``K`` steps from ``s*``, combined by
    the ``nudging`` scheme (``positive``, ``symmetric``, ``random_sign`` or ``holomorphic`` with
    ``points`` complex nudges; the equations are in :mod:`eqprop_lightning.learning.nudging`).
    The surrogate is

        L_EP = -Re [ c_0 <Phi(s*)> + sum_k c_k <Phi(s_k) - beta_scale beta_k l(s_k)> ] / beta_scale,

    the states held fixed, whose parameter gradient is ``-Delta_theta`` (the cost ``l`` has
    parameters only with a softmax readout, whose weights it trains). The nudged phases run as
    one batched relaxation; holomorphic EP relaxes them in complex arithmetic (the weights and
    the free phase's static terms cast to the complex dtype, the gradient taken with respect to
    the real weights). ``random_sign`` draws its sign from ``(seed, step)``, ``step`` being the
    optimizer step.
    """

    continual = False

    def __init__(
        self,
        T: int,
        K: int,
        beta: float,
        nudging: str = "positive",
        points: int | None = None,
        seed: int = 0,
    ) -> None:
        check_phases(T, K)
        check_beta(beta, "for EP (the nudging strength)")
        self.points = check_nudging(nudging, points)
        self.T, self.K, self.beta, self.nudging, self.seed = T, K, beta, nudging, seed

    def nudges(self, step: int = 0) -> Nudges:
        """The nudged phases and coefficients of batch ``step``."""
        if self.nudging == "symmetric":
            return symmetric(self.beta)
        if self.nudging == "holomorphic":
            return holomorphic(self.beta, self.points)
        if self.nudging == "random_sign":
            return positive(random_sign(self.seed, step) * self.beta)
        return positive(self.beta)

    def __call__(self, net: Net, x: Tensor, y: Tensor, step: int = 0) -> Estimate:
        static = net.static_terms(x)
        check_static(net, static)
        nudges = self.nudges(step)
        with torch.no_grad():
            before_free, s_free = free_phase(net, static, net.init_state(x), self.T)
        phases = _NudgedPrimitives(net)
        if nudges.is_complex:
            check_holomorphic(net)
            dtype = (x.new_zeros(()) * 1j).dtype
            weights = {f"net.{k}": p.to(dtype) for k, p in net.named_parameters()}
            args = (y.to(dtype), [t.to(dtype) for t in s_free], _cast_static(static, dtype))
            phis = functional_call(phases, weights, (*args, self.K, nudges.betas))
        else:
            phis = phases(y, s_free, static, self.K, nudges.betas)
        total = sum(c * phi for c, phi in zip(nudges.coefs, phis, strict=True))
        if nudges.free_coef:
            total = total + nudges.free_coef * _primitive(net, static, s_free, before_free).mean()
        objective = -torch.real(total) / net.beta_scale
        return Estimate(
            objective, net.output(s_free).detach(), last_step_change(before_free, s_free)
        )
