"""The cost ``l`` that nudges the output, and the softmax readout of Laborieux et al. (2021).

Every net predicts from its output layer ``s_0`` and is nudged by the force ``-beta dl/ds_0``:

* squared error (the seeds): ``l = 1/2 |s_0 - y|^2``, ``-dl/ds_0 = y - s_0``;
* :class:`SoftmaxReadout`: logits ``z = W_r s_0 + b_r`` (the readout, trained by the same
  estimate), ``l = CE(z, y) = logsumexp(z) - y . z``, ``-dl/ds_0 = W_r^T (y - softmax(z))``.

The readout is not part of the primitive ``Phi`` of the dynamics: the nudged dynamics are the
fixed-point dynamics of ``Phi - beta l``, whose ``theta``-gradient gives the readout's update.
Laborieux et al. read out the last hidden layer, so that the prediction is no layer of the
dynamics: a net whose ``s_0`` is a hidden layer (``size_tab: [512, 784]``) under a readout of 10
classes, with the nudge inside the activation (``PrototypicalFC(nudge_in_activation=True)``).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from eqprop_lightning.nets.nudge import is_nudged
from eqprop_lightning.nets.protocol import State


def squared_error(output: Tensor, y: Tensor) -> Tensor:
    """``l = 1/2 |s_0 - y|^2`` per example: (B, C) -> (B,)."""
    return 0.5 * (output - y).pow(2).sum(1)


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """``l = logsumexp(z) - y . z`` per example (``y`` one-hot or a distribution):
    (B, C) -> (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def output_cost(net, output: Tensor, y: Tensor) -> Tensor:
    """The cost ``l`` of ``net``'s prediction ``output = net.output(s)`` per example, (B,)."""
    return (cross_entropy if isinstance(net, SoftmaxReadout) else squared_error)(output, y)


class SoftmaxReadout(nn.Module):
    """``net`` predicting through the softmax readout ``z = W_r s_0 + b_r`` of its output layer,
    with the cross-entropy cost (see the module docstring); ``classes`` logits (default: as many
    as output units). The readout is the first synapse group (label ``Wr``)."""

    def __init__(self, net: nn.Module, classes: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.readout = nn.Linear(net.num_classes, classes or net.num_classes)

    # the flags and the input side are the wrapped net's
    beta_scale = property(lambda self: self.net.beta_scale)
    state_dt = property(lambda self: self.net.state_dt)
    bptt_extra_step = property(lambda self: self.net.bptt_extra_step)
    uses_previous_state = property(lambda self: self.net.uses_previous_state)
    clamp = property(lambda self: self.net.clamp)
    input_fields = property(lambda self: self.net.input_fields)
    output_field = property(lambda self: "the readout's classes")
    example_shape = property(lambda self: self.net.example_shape)

    @property
    def num_classes(self) -> int:
        """Logits of the readout."""
        return self.readout.out_features

    def synapse_groups(self) -> list[nn.Module]:
        """The readout, then the net's groups."""
        return [self.readout, *self.net.synapse_groups()]

    def synapse_labels(self) -> list[str]:
        return ["Wr", *self.net.synapse_labels()]

    def init_state(self, x: Tensor) -> State:
        return self.net.init_state(x)

    def static_terms(self, x: Tensor):
        return self.net.static_terms(x)

    def primitive(self, s: State, static, *previous: State) -> Tensor:
        """The net's ``Phi(x, s)`` (the readout enters through ``-beta l``), shape (B,)."""
        return self.net.primitive(s, static, *previous)

    def output(self, s: State) -> Tensor:
        """The logits ``z = W_r s_0 + b_r``: (B, classes)."""
        return self.readout(self.net.output(s))

    def force(self, y: Tensor, s_out: Tensor) -> Tensor:
        """``-dl/ds_0 = W_r^T (y - softmax(W_r s_0 + b_r))``: (B, n_0)."""
        return (y - self.readout(s_out).softmax(1)) @ self.readout.weight

    def step(self, s: State, static, beta: float | Tensor = 0.0, y: Tensor | None = None) -> State:
        """The net's step, nudged by the cross-entropy force of the readout."""
        if not is_nudged(beta):
            return self.net.step(s, static)
        return self.net.step(s, static, beta, lambda s_out: self.force(y, s_out))
