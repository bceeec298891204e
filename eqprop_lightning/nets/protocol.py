"""What a convergent RNN provides to the learning rules, the module and the analyses.

A net holds the parameters ``theta`` and defines the dynamics ``s_{t+1} = F(x, s_t, theta)``
(plus ``beta (y - s_0)``-style nudging in the output's update) and the primitive ``Phi(x, s)``,
from which EP's update ``dPhi/dtheta`` follows. How ``F`` derives from ``Phi`` is the net's own:
``s + dt (-dE/ds) = dPhi/ds`` with ``Phi = 1/2 |s|^2 - dt E`` for the energy-based nets (the
exact gradient flow with ``output_rho_prime``; the toy net), ``rho(dPhi/ds)`` for the
prototypical ones (fully connected, conv, Hopfield projections), whose fixed points are
therefore not stationary points of ``Phi``; each class's docstring states its equations.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from eqprop_lightning.nets.nudge import Target

#: The state of every layer of a batch, one tensor per layer (output first for the layered nets).
State = list[Tensor]


def repeat_batch(t: Tensor | None, n: int) -> Tensor | None:
    """``n`` copies of ``t`` along the batch axis, phase-major: (B, ...) -> (n B, ...)."""
    return t if t is None or n == 1 else torch.cat([t] * n)


class Static(Protocol):
    """Per-batch constants of a net's dynamics (its input terms, attached to the parameters),
    computed once per batch by :meth:`Net.static_terms`; each net has its own dataclass."""

    def repeat(self, n: int) -> Static:
        """The terms of ``n`` copies of the batch, phase-major (the couplings are shared)."""
        ...


@runtime_checkable
class Net(Protocol):
    """The interface every net of :mod:`eqprop_lightning.nets` implements (as ``nn.Module``).

    Flags, declared by every net class:

    * ``beta_scale``: factor of ``beta`` in the effective nudge (EPcont nudges by ``dt beta``).
    * ``state_dt``: the fraction of its update that a step applies, ``s_{t+1} = s_t + state_dt
      d_t`` (the Euler ``dt`` of the energy-based nets, the leaky ``dt`` of a prototypical one;
      1 otherwise): the GDU's EP neuron updates are ``-d_t / beta``, per unit of it.
    * ``bptt_extra_step``: truncated BPTT tracks ``K + 1`` transitions (the original's fully
      connected nets) instead of ``K``.
    * ``uses_previous_state``: :meth:`primitive` takes the state one step before ``s`` as a
      third argument (the conv net's legacy pooling).
    * ``clamp``: the states are clipped to [0, 1] after each step (not holomorphic).
    * ``input_fields`` / ``output_field``: the constructor arguments that set
      :attr:`example_shape` / :attr:`num_classes`, named in error messages.
    """

    beta_scale: float
    state_dt: float
    bptt_extra_step: bool
    uses_previous_state: bool
    clamp: bool
    input_fields: str
    output_field: str

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch axis)."""
        ...

    @property
    def num_classes(self) -> int:
        """Output units."""
        ...

    def init_state(self, x: Tensor) -> State:
        """The free phase's starting state for the batch ``x`` (zeros)."""
        ...

    def static_terms(self, x: Tensor) -> Static:
        """The batch's :class:`Static` terms; ``repeat(n)`` gives those of the nudged phases of
        one batched relaxation (the gradient of every copy flows back to the one computation)."""
        ...

    def step(
        self, s: State, static: Static, beta: float | Tensor = 0.0, y: Target | None = None
    ) -> State:
        """One synchronous update ``s <- F(x, s, theta)``, the output layer's nudged by the
        force ``-dl/ds_out`` times ``beta_scale beta`` where ``beta`` nudges
        (``nets.nudge.is_nudged``). ``beta`` is a number (0: free, and ``y`` may be None) or a
        ``(B, 1)`` tensor, one nudge per example (the batched nudged phases); ``y`` is the
        target tensor or, under a softmax readout (``loss: cross_entropy``), a function
        ``s_out -> -dl/ds_out``: take the force from ``nets.nudge.nudge_force(y, s_out)``
        rather than ``y - s_out``."""
        ...

    def primitive(self, s: State, static: Static, *previous: State) -> Tensor:
        """``Phi(x, s)`` per example, shape (B,)."""
        ...

    def output(self, s: State) -> Tensor:
        """The output layer's state, shape (B, num_classes)."""
        ...

    def synapse_groups(self) -> list[nn.Module]:
        """The weight layers, one learning rate each, in the order of ``lrs``."""
        ...

    def synapse_labels(self) -> list[str]:
        """A label per synapse group (``W01``, ``W1x``, ``P0``, ...), same order."""
        ...


def layered_labels(num_states: int) -> list[str]:
    """``W01, W12, ..., WLx`` of a layered net with ``num_states`` state layers (``W{i}{i+1}``
    couples state ``i+1`` to ``i``, ``WLx`` the input to the last), output layer first."""
    L = num_states - 1
    return [f"W{i}{i + 1}" for i in range(L)] + [f"W{L}x"]


#: The flags of :class:`Net` and their types, checked for every net class by the tests.
NET_FLAGS: dict[str, type] = {
    "beta_scale": float,
    "state_dt": float,
    "bptt_extra_step": bool,
    "uses_previous_state": bool,
    "clamp": bool,
    "input_fields": str,
    "output_field": str,
}


def missing_members(obj: object) -> list[str]:
    """The flags, properties and methods of :class:`Net` that ``obj`` lacks (none: it is a net)."""
    methods = [n for n, v in vars(Net).items() if callable(v) or isinstance(v, property)]
    members = [*NET_FLAGS, *(n for n in methods if not n.startswith("_"))]
    return [name for name in members if not hasattr(obj, name)]
