"""Gradient-descending updates (GDU): EP updates against BPTT gradients, step by step.

Over the last ``K`` steps of a ``T``-step free phase (index ``t`` counts steps back from the end
for BPTT and forward from the free fixed point ``s*`` for EP):

* ``nS[i][t] = dL/ds_i(T - t)``, the BPTT gradient with respect to the neurons;
* ``dS[i][t] = -(s^beta_{t+1} - s^beta_t) / (state_dt beta)``, minus the EP update of the neurons
  (per unit of the net's ``state_dt``: the original's update before ``dt``);
* ``nT[t] = dL/dtheta_{T-1-t}``, the contribution of the ``(t+1)``-th last transition (theta treated
  as a separate copy per transition), and ``NT[t] = sum_{u <= t} nT[u]``, the gradient of BPTT
  truncated to the last ``t + 1`` transitions;
* ``DT[t] = -(dPhi/dtheta(s^beta_{t+1}) - dPhi/dtheta(s*)) / beta`` (batch mean), minus the
  cumulative EP update, and ``dT[t] = DT[t] - DT[t-1]`` (``dT[0] = DT[0]``).

All quantities are batch means, ``L = 1/(2B) sum |s_out - y|^2`` (or the cross-entropy of a
softmax readout, whose weights enter ``L`` only and are not compared), and the ``beta`` of ``DT``
is the effective nudge ``net.beta_scale * beta``. The GDU property (Ernoult et al., 2019) states
``nS = dS`` and ``nT = dT`` as ``beta -> 0`` when the free phase has converged and the transition
derives from a primitive function.

Conventions, compared with the original code: all the per-step BPTT gradients come from one
forward and one backward pass over the last ``K`` transitions (the original reruns BPTT ``K``
times); ``nT[0] = NT[0]`` and ``dT[0] = DT[0]`` as in the paper (the original leaves both at zero);
``dS[i][t]`` is set to zero where the output cannot yet depend on layer ``i`` (``nS[i][u] = 0`` for
all ``u <= t``, every unit of the batch), as the original does for the layered nets (it keeps the
free-phase residue there for the toy model); a layer whose every unit is saturated for all those
steps (zero BPTT gradient through a clamp) would be zeroed too. Only the weights (not the biases)
are compared, as in the paper. With ``clamp``, ``dS`` is the move of the clamped state (the
original zeroes the update of a unit sitting at 0 or 1, also one that moves off the bound).
``NT[K-1]``, which the recipe compares with ``DT[K-1]``, is BPTT through ``K`` transitions for
every net, paired with the ``K`` nudged steps (the original's recipe took ``K + 1`` for the fully
connected nets, as their training does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning.bptt import TruncatedBPTT, cost
from eqprop_lightning.learning.ep import ep_surrogate
from eqprop_lightning.learning.estimator import GradientEstimator, check_phases
from eqprop_lightning.learning.phases import relax
from eqprop_lightning.learning.rbp import RecurrentBackprop
from eqprop_lightning.nets import SoftmaxReadout, State
from eqprop_lightning.nets.protocol import Net


@dataclass
class GDUResult:
    """``nS``/``dS``: one (K, *layer shape) tensor per state layer; ``NT``/``DT``: one (K, *weight
    shape) tensor per synapse, keyed by the net's synapse label (``W01``, ``W1x``, ...)."""

    nS: list[Tensor]
    dS: list[Tensor]
    NT: dict[str, Tensor]
    DT: dict[str, Tensor]

    @property
    def nT(self) -> dict[str, Tensor]:
        return {k: instantaneous(v) for k, v in self.NT.items()}

    @property
    def dT(self) -> dict[str, Tensor]:
        return {k: instantaneous(v) for k, v in self.DT.items()}


def instantaneous(cumulative: Tensor) -> Tensor:
    """``x[t] - x[t-1]`` along the first axis, with ``x[0]`` kept."""
    return torch.cat([cumulative[:1], cumulative[1:] - cumulative[:-1]])


class _Transition(nn.Module):
    """One transition ``s -> F(x, s, theta)`` computed from scratch (static terms included), so
    that ``functional_call`` can give every transition its own copy of ``theta``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, s, x: Tensor):
        return self.net.step(s, self.net.static_terms(x))


def synapse_weights(net: Net) -> dict[str, Tensor]:
    """The compared weights, keyed by label (biases are not compared)."""
    return dict(zip(net.synapse_labels(), (g.weight for g in net.synapse_groups()), strict=True))


def transition_weights(net: Net) -> dict[str, Tensor]:
    """The weights compared step by step: those of the transition ``F``. A softmax readout's
    weights enter the cost of the final state, not a transition, and are left out."""
    weights = synapse_weights(net)
    if isinstance(net, SoftmaxReadout):
        del weights["Wr"]
    return weights


def bptt_per_step(net: Net, x: Tensor, y: Tensor, s: State, K: int) -> tuple[list, dict, tuple]:
    """``nS``, ``nT`` and the last two states, from one forward and one backward pass over the
    ``K`` transitions that follow ``s`` (the state ``T - K`` steps into the free phase).

    Each tracked transition runs with its own leaf copy of the parameters, so that one backward
    pass leaves on each copy the contribution of its transition to the BPTT gradient.
    """
    s_start = s
    transition = _Transition(net)
    names = _weight_names(net)
    params = {f"net.{k}": p.detach() for k, p in net.named_parameters()}
    states, copies = [], []
    for _ in range(K):
        theta = {k: p.clone().requires_grad_(True) for k, p in params.items()}
        s = functional_call(transition, theta, (s, x))
        copies.append(theta)
        states.append(s)
    loss = cost(net, net.output(s), y)
    flat_states = [t for st in states for t in st]
    weights = [c[f"net.{names[k]}"] for c in copies for k in names]
    grads = torch.autograd.grad(loss, flat_states + weights, allow_unused=True)
    n_layers, n_weights = len(s), len(names)
    # nS[i][t] = dL/ds_i(T - t), t = 0 .. K-1, is the gradient of states[K - 1 - t]; batch sum
    nS = [
        torch.stack([_or_zeros(grads[(K - 1 - t) * n_layers + i], s[i]) for t in range(K)]).sum(1)
        for i in range(n_layers)
    ]
    # nT[t] is the gradient of the copy used by the (t+1)-th last transition, copies[K - 1 - t]
    w_grads = grads[len(flat_states) :]
    nT = {
        k: torch.stack(
            [
                _or_zeros(w_grads[(K - 1 - t) * n_weights + j], params[f"net.{names[k]}"])
                for t in range(K)
            ]
        )
        for j, k in enumerate(names)
    }
    before = states[-2] if K > 1 else s_start
    return nS, nT, ([t.detach() for t in before], [t.detach() for t in s])


def _weight_names(net: Net) -> dict[str, str]:
    """Synapse label -> parameter name of each compared weight."""
    by_id = {id(p): name for name, p in net.named_parameters()}
    return {label: by_id[id(w)] for label, w in transition_weights(net).items()}


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def ep_per_step(
    net: Net,
    x: Tensor,
    y: Tensor,
    s_free: State,
    K: int,
    beta: float,
    before_free: State,
    symmetric: bool = False,
) -> tuple:
    """``dS`` and cumulative ``DT`` over ``K`` nudged steps from the free state ``s_free``
    (``before_free``, the state one step before it, serves the conv net's legacy pooling).

    Symmetric: the phases at ``+beta`` and ``-beta`` run side by side and
    ``dS[t] = -((s+_{t+1} - s+_t) - (s-_{t+1} - s-_t)) / (2 state_dt beta)``,
    ``DT[t] = -(dPhi/dtheta(s+_{t+1}) - dPhi/dtheta(s-_{t+1})) / (2 beta)``.
    """
    static = net.static_terms(x)
    weights = transition_weights(net)
    dS = [[] for _ in s_free]
    DT = {k: [] for k in weights}
    s_pos = s_neg = s_free
    for _ in range(K):
        with torch.no_grad():
            next_pos = net.step(s_pos, static, beta, y)
            next_neg = net.step(s_neg, static, -beta, y) if symmetric else s_free
        for i in range(len(s_free)):
            move = next_pos[i] - s_pos[i]
            if symmetric:
                move = (move - (next_neg[i] - s_neg[i])) / 2
            dS[i].append(-move.mean(0) / (net.state_dt * beta))
        if symmetric:
            pair = (next_neg, next_pos, -beta, beta, (s_neg, s_pos))
        else:
            pair = (s_free, next_pos, 0.0, beta, (before_free, s_pos))
        surrogate = ep_surrogate(net, static, *pair)
        grads = torch.autograd.grad(surrogate, list(weights.values()), retain_graph=True)
        for k, g in zip(weights, grads, strict=True):
            DT[k].append(g)
        s_pos, s_neg = next_pos, next_neg
    return [torch.stack(d) for d in dS], {k: torch.stack(v) for k, v in DT.items()}


def gdu(
    net, x: Tensor, y: Tensor, T: int, K: int, beta: float, symmetric: bool = False
) -> GDUResult:
    """All GDU quantities on the batch ``(x, y)`` (see the module docstring); ``symmetric``
    compares the symmetric (+beta / -beta) EP estimate."""
    check_phases(T, K)
    with torch.no_grad():
        s = relax(net, net.init_state(x), net.static_terms(x), T - K)
    nS, nT, (before_free, s_free) = bptt_per_step(net, x, y, s, K)
    dS, DT = ep_per_step(net, x, y, s_free, K, beta, before_free, symmetric)
    for n, d in zip(nS, dS, strict=True):
        unreached = (n.flatten(1) == 0).all(1).cumprod(0).bool()  # t < depth of the layer
        d[unreached] = 0.0
    NT = {k: v.cumsum(0) for k, v in nT.items()}
    return GDUResult(nS=nS, dS=dS, NT=NT, DT=DT)


def relative_rmse(n: Tensor, d: Tensor) -> Tensor:
    """Per component (over the time axis 0): ``sqrt(sum_t (n - d)^2 / max(sum_t n^2, sum_t d^2))``,
    0 where both are identically 0, NaN where either is not finite. Shape: (K, *c) -> (*c)."""
    num = (n - d).pow(2).sum(0)
    den = torch.maximum(n.pow(2).sum(0), d.pow(2).sum(0))
    return torch.where(den == 0, 0.0, (num / den.clamp_min(torch.finfo(den.dtype).tiny)).sqrt())


def rmse_table(result: GDUResult) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std over components of the relative RMSE, per neuron layer (``nS`` vs ``dS``) and
    per weight (cumulative ``NT`` vs ``DT``, as the paper)."""

    def stats(e: Tensor) -> dict[str, float]:
        return {"mean": e.mean().item(), "std": e.std().item() if e.numel() > 1 else 0.0}

    return {
        "neurons": {
            f"s{i}": stats(relative_rmse(n, d))
            for i, (n, d) in enumerate(zip(result.nS, result.dS, strict=True))
        },
        "weights": {k: stats(relative_rmse(result.NT[k], result.DT[k])) for k in result.NT},
    }


def sign_agreement(NT: dict[str, Tensor], DT: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """Per weight, in percent of its entries, at the last step: ``same_sign`` (both non-zero with
    the same sign), ``both_zero``, and their sum ``total`` (the original's "receipe")."""
    out = {}
    for k in NT:
        n, d = NT[k][-1], DT[k][-1]
        same = ((torch.sign(n) == torch.sign(d)) & (n != 0) & (d != 0)).float().mean().item()
        zero = ((n == 0) & (d == 0)).float().mean().item()
        out[k] = {"same_sign": 100 * same, "both_zero": 100 * zero, "total": 100 * (same + zero)}
    return out


def estimated_gradients(
    net: Net, x: Tensor, y: Tensor, rule: GradientEstimator
) -> dict[str, Tensor]:
    """The rule's estimate of ``dL/dW`` per compared weight (the gradient of its objective),
    computed with ``torch.autograd.grad``: the parameters' ``.grad`` are left untouched."""
    if rule.continual:
        raise ConfigError(
            "continual EP moves the weights during its nudged phase and has no estimate at fixed "
            "weights to compare: its lr -> 0 limit is two-phase EP (algorithm: ep)"
        )
    weights = synapse_weights(net)
    with torch.enable_grad():
        objective = rule(net, x, y).objective
        grads = torch.autograd.grad(objective, list(weights.values()), allow_unused=True)
    return {k: _or_zeros(g, w) for (k, w), g in zip(weights.items(), grads, strict=True)}


def estimate_errors(
    net, x: Tensor, y: Tensor, rule: GradientEstimator
) -> dict[str, dict[str, float | None]]:
    """Any rule's estimate against truncated BPTT (``rule.T``, ``rule.K``) and against RBP (the
    implicit gradient at the free fixed point, ``rule.K`` adjoint iterations): per reference and
    weight, the relative error ``|g_rule - g_ref| / |g_ref|`` (``None`` where it is undefined: the
    reference is 0 and the estimate is not, as when every output unit is dead on the batch)."""
    estimate = estimated_gradients(net, x, y, rule)
    references = {"bptt": TruncatedBPTT(rule.T, rule.K), "rbp": RecurrentBackprop(rule.T, rule.K)}
    out = {}
    for name, reference in references.items():
        expected = estimated_gradients(net, x, y, reference)
        out[name] = {k: _relative(estimate[k], expected[k]) for k in estimate}
    return out


def _relative(a: Tensor, b: Tensor) -> float | None:
    """``|a - b| / |b|``: 0 where both are 0, ``None`` (undefined) where only ``b`` is 0."""
    num, den = (a - b).norm().item(), b.norm().item()
    if den > 0:
        return num / den
    return None if num > 0 else 0.0
