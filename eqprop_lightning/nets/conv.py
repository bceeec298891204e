"""Convolutional convergent RNN with static input, prototypical setting (convEP, Ernoult et al.,
NeurIPS 2019, Table 1 "P-conv").

Layers are indexed backward from the output, as in :mod:`eqprop_lightning.nets.fc`. With
``size_tab = [n_0, ..., n_{m-1}]`` (the fully connected "classifier" sizes, output first) and
``C_tab = [C_0, ..., C_{n-1}, C_in]`` (channels from the classifier backwards to the input), the
states are ``s[0] ... s[m-1]`` (vectors, ``s[0]`` the output) followed by the conv states
``c_0 = s[m] ... c_{n-1} = s[m+n-1]``, where ``c_j`` (shape ``(C_j, h_j, h_j)``) is the max-pooled
output of ``conv[j]`` applied to ``c_{j+1}`` (``c_n = x``, the input, is not a state):

* ``conv[j] = Conv2d(C_{j+1} -> C_j, kernel_size, padding=P)``, ``conv[0]`` nearest the classifier;
* ``fc[i] = Linear(n_{i+1} -> n_i)`` couples ``s[i+1] -> s[i]``; ``fc[m-1]`` reads ``vec(c_0)``.

The primitive, with ``Pool`` the max-pooling (kernel = stride = ``pool_size``) and ``.`` the full
tensor dot product, is

    Phi = sum_i s_i . (W_i vec(s_{i+1}) + b_i) + sum_j c_j . Pool(conv_j(c_{j+1}) + b'_j),

and the dynamics are ``s <- rho(dPhi/ds)`` (full replacement, dt = 1). Holding the argmax of
each pooling window fixed, ``d/dc_{j+1} [c_j . Pool(conv_j(c_{j+1}))] = conv_j^T(unpool(c_j))``: a
transposed convolution (no bias) of ``c_j`` unpooled at the argmax positions. So one step is

    s_0 <- rho(W_0 vec(s_1) + b_0)                                 [+ beta (y - s_0)]
    s_i <- rho(W_i vec(s_{i+1}) + b_i + W_{i-1}^T s_{i-1})           0 < i < m
    c_0 <- rho(Pool(conv_0(c_1)) + reshape(W_{m-1}^T s_{m-1}))
    c_j <- rho(Pool(conv_j(c_{j+1})) + conv_{j-1}^T(unpool(c_{j-1}, idx_{j-1})))   j > 0

with ``idx_{j-1}`` the argmax positions of ``Pool(conv_{j-1}(c_j))`` in the same step and the
input ``x`` entering raw (no ``rho``). The parameter gradient of ``Phi`` is the original's EP
increment: fc outer products, ``corr(c_{j+1}, unpool(c_j))`` for the conv weights and the
channel sums of ``c_j`` for the conv biases.

One difference from the original: its EP update unpools ``c_j`` with the argmax positions stored
by the last step, i.e. those of ``Pool(conv_j(c_{j+1}))`` for the state *before* that step, while
here ``dPhi/dtheta`` uses the argmax of the state itself (the paper's definition). The two agree
whenever no argmax changed in the last step, as at a fixed point; on the recorded original runs
(T=30, K=10) 1 and 3 of 512 pooling windows changed in the last nudged step.
``legacy_pooling=True`` reproduces the original: ``primitive(s, static, previous)`` then pools at
the argmax positions of ``previous``, the state one step before ``s``, which the EP rule passes.

The conv states are kept in channels-last memory format, where the CPU max-pooling is ~20x
faster than in NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.nets.activations import get_activation
from eqprop_lightning.nets.nudge import is_nudged, nudge_force
from eqprop_lightning.nets.protocol import State, layered_labels, repeat_batch

#: memory format of the conv states (see the module docstring)
CHANNELS_LAST = torch.channels_last


@dataclass
class ConvStaticTerms:
    """Per-batch constants of the conv dynamics, computed once by
    :meth:`ConvPrototypical.static_terms` and kept attached to the parameters (the EP surrogate
    and BPTT differentiate through them).
    """

    input_term: Tensor  # (B, C_tab[-2], conv side, conv side): conv[-1](x) + bias, before pooling
    input_drive: Tensor  # (B, C_tab[-2], h, h): Pool(input_term), the bottom-up drive of c_{n-1}
    conv_weights: list[Tensor]  # conv[j].weight in channels-last, j < n - 1 (used every step)

    def repeat(self, n: int) -> ConvStaticTerms:
        """The terms of ``n`` copies of the batch (the weights are shared)."""
        rep = repeat_batch
        return ConvStaticTerms(rep(self.input_term, n), rep(self.input_drive, n), self.conv_weights)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_int_list(name: str, value, min_len: int, example: str) -> None:
    if not isinstance(value, (list, tuple)) or len(value) < min_len:
        raise ConfigError(
            f"{name}={value!r} must be a list of at least {min_len} entries, {example}"
        )
    if not all(_is_positive_int(n) for n in value):
        raise ConfigError(f"{name}={value!r} must contain positive integers")


class ConvPrototypical(nn.Module):
    """convEP: ``s <- rho(dPhi/ds)`` (+ ``beta (y - s_0)`` on the output) with dt = 1.

    Args:
        C_tab: channels from the classifier backwards, the input channels last
            (``[64, 32, 1]``: ``conv[0]`` 32 -> 64, ``conv[1]`` 1 -> 32); at least 2 conv layers.
        size_tab: fully connected sizes, output first (``[10]``: one Linear to the output).
        activation: ``hardsigm`` (Table 1), ``sigm`` or ``tanh``.
        kernel_size: side of the square conv filters.
        pool_size: kernel and stride of the max-pooling.
        padding: zero-pad the convolutions by ``(kernel_size - 1) // 2``.
        input_size: side of the square input images.

    Shape:
        x: (B, C_tab[-1], input_size, input_size); states ``s[i]``: (B, size_tab[i]), then
        (B, C_tab[j], h_j, h_j) for the conv layers (``[4, 12]`` for 28x28 without padding).
    """

    #: factor of beta in the effective nudge; a step applies its whole update.
    beta_scale: float = 1.0
    state_dt: float = 1.0
    #: BPTT through the original's ``K`` last transitions (the fc nets use ``K + 1``).
    bptt_extra_step: bool = False
    #: the primitive reads the previous state only with legacy pooling; no clipping
    uses_previous_state: bool = False
    clamp: bool = False

    def __init__(
        self,
        C_tab: list[int] = [64, 32, 1],  # noqa: B006 (read only; a list for the CLI)
        size_tab: list[int] = [10],  # noqa: B006
        activation: str = "hardsigm",
        kernel_size: int = 5,
        pool_size: int = 2,
        padding: bool = False,
        input_size: int = 28,
        legacy_pooling: bool = False,
    ) -> None:
        super().__init__()
        _check_int_list("C_tab", C_tab, 3, "e.g. [64, 32, 1] (2 conv layers, input channels last)")
        _check_int_list("size_tab", size_tab, 1, "e.g. [10]")
        for name, value in (
            ("kernel_size", kernel_size),
            ("pool_size", pool_size),
            ("input_size", input_size),
        ):
            if not _is_positive_int(value):
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if padding not in (False, True):  # a bool, or the original's --padding 0 / 1
            raise ConfigError(f"padding={padding!r} must be true or false")
        self.rho = get_activation(activation)
        self.C_tab, self.size_tab = list(C_tab), list(size_tab)
        self.kernel_size, self.pool_size, self.input_size = kernel_size, pool_size, input_size
        self.padded = bool(padding)
        #: the original's EP update: argmax positions of the state one step before (see above)
        self.uses_previous_state = bool(legacy_pooling)
        #: zero-padding P of every convolution (the transposed ones included)
        self.conv_padding = (kernel_size - 1) // 2 if padding else 0

        # spatial sides from the input up: conv_sides[j] = conv[j] output, sides[j] = state c_j
        n_conv = len(C_tab) - 1
        self.conv_sides, self.sides = [0] * n_conv, [0] * n_conv
        side = input_size
        for j in reversed(range(n_conv)):
            conv_side = side - kernel_size + 1 + 2 * self.conv_padding
            if conv_side < pool_size or conv_side % pool_size:
                raise ConfigError(
                    f"conv[{j}] (C_tab[{j + 1}]={C_tab[j + 1]} -> C_tab[{j}]={C_tab[j]}) gets a "
                    f"{side}x{side} input and outputs {conv_side}x{conv_side} with "
                    f"kernel_size={kernel_size}, padding={padding}; this must be a positive "
                    f"multiple of pool_size={pool_size}: use fewer conv layers (C_tab={C_tab}), "
                    "a smaller kernel_size or pool_size, padding or a larger input_size"
                )
            side = conv_side // pool_size
            self.conv_sides[j], self.sides[j] = conv_side, side

        self.conv = nn.ModuleList(
            nn.Conv2d(C_tab[j + 1], C_tab[j], kernel_size, padding=self.conv_padding)
            for j in range(n_conv)
        )
        classifier = self.size_tab + [C_tab[0] * self.sides[0] ** 2]
        self.fc = nn.ModuleList(
            nn.Linear(classifier[i + 1], classifier[i]) for i in range(len(size_tab))
        )

    input_fields = "C_tab[-1] and input_size; the data needs flatten: false"
    output_field = "size_tab[0]"

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one input image: ``(C_tab[-1], input_size, input_size)``."""
        return (self.C_tab[-1], self.input_size, self.input_size)

    @property
    def num_classes(self) -> int:
        """Output units: ``size_tab[0]``."""
        return self.size_tab[0]

    @property
    def num_states(self) -> int:
        """Number of state layers, fc then conv (the input is not a state)."""
        return len(self.size_tab) + len(self.C_tab) - 1

    def synapse_groups(self) -> list[nn.Module]:
        """Weight layers in learning-rate order: ``fc[0], ..., conv[0], conv[1], ...``
        (``--lr_tab`` of the original: output layer first, then conv nearest the classifier)."""
        return [*self.fc, *self.conv]

    def synapse_labels(self) -> list[str]:
        """``W01, W12, ..., WLx`` (``W{i}{i+1}`` couples state ``i+1`` to ``i``) in the order of
        :meth:`synapse_groups`: ``[W01, W12, W2x]`` for ``size_tab=[10]`` and two conv layers."""
        return layered_labels(self.num_states)

    def init_state(self, x: Tensor) -> State:
        """All-zero states for the batch ``x`` (conv states in channels-last memory format)."""
        B = x.shape[0]
        fc = [x.new_zeros(B, n) for n in self.size_tab]
        conv = [
            x.new_zeros(B, c, h, h).contiguous(memory_format=CHANNELS_LAST)
            for c, h in zip(self.C_tab[:-1], self.sides, strict=True)
        ]
        return fc + conv

    def output(self, s: State) -> Tensor:
        return s[0]

    def _pool(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Max-pooling of ``z`` (B, C, k h, k h) -> values and argmax positions (B, C, h, h)."""
        return F.max_pool2d(z, self.pool_size, return_indices=True)

    def _conv(self, j: int, c: Tensor, weight: Tensor | None = None) -> Tensor:
        """``conv_j(c) + b_j``, not pooled: (B, C_{j+1}, h, h) -> (B, C_j, conv side, conv side);
        ``weight`` is ``conv[j].weight`` in another memory format."""
        weight = self.conv[j].weight if weight is None else weight
        return F.conv2d(c, weight, self.conv[j].bias, padding=self.conv_padding)

    def static_terms(self, x: Tensor) -> ConvStaticTerms:
        """Input term ``conv[-1](x) + b`` and its pooled drive, once per batch."""
        expected = self.example_shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ConfigError(
                f"ConvPrototypical expects images of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}: serve unflattened images (data flatten: false) and set "
                "C_tab[-1] and input_size to the image's channels and side"
            )
        input_term = self._conv(len(self.conv) - 1, x).contiguous(memory_format=CHANNELS_LAST)
        weights = [c.weight.contiguous(memory_format=CHANNELS_LAST) for c in self.conv[:-1]]
        return ConvStaticTerms(input_term, self._pool(input_term)[0], weights)

    def primitive(self, s: State, static: ConvStaticTerms, previous: State | None = None) -> Tensor:
        """``Phi(x, s)`` per example, shape (B,); with ``previous`` (legacy pooling) each
        ``Pool`` takes the values at the argmax positions of ``previous`` instead of ``s``."""
        m = len(self.fc)
        phi = (s[-1] * static.input_drive).flatten(1).sum(1)
        for i, layer in enumerate(self.fc):
            # s[i+1]: (B, n_{i+1}) or the top conv state (B, C_0, h_0, h_0) -> (B, C_0 h_0^2)
            z = F.linear(s[i + 1].reshape(s[i + 1].shape[0], -1), layer.weight, layer.bias)
            phi = phi + (s[i] * z).sum(1)
        for j in range(len(self.conv) - 1):
            conv = self._conv(j, s[m + j + 1])  # (B, C_j, conv side, conv side)
            if previous is None:
                pooled = self._pool(conv)[0]  # (B, C_j, h_j, h_j)
            else:
                idx = self._pool(self._conv(j, previous[m + j + 1]))[1]
                # values of conv at the flat positions idx: (B, C_j, side^2) -> (B, C_j, h_j, h_j)
                pooled = conv.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
            phi = phi + (s[m + j] * pooled).flatten(1).sum(1)
        return phi

    def step(
        self, s: State, static: ConvStaticTerms, beta: float = 0.0, y: Tensor | None = None
    ) -> State:
        """One synchronous update of all layers from ``s`` (see the module docstring)."""
        rho, m, n_conv, B = self.rho, len(self.fc), len(self.conv), s[0].shape[0]
        fc = list(self.fc)
        new = []
        for i in range(m):
            # bottom-up W_i vec(s_{i+1}) + b_i: (B, n_{i+1}) or (B, C_0, h_0, h_0) -> (B, n_i)
            z = F.linear(s[i + 1].reshape(B, -1), fc[i].weight, fc[i].bias)
            if i > 0:
                z = torch.addmm(z, s[i - 1], fc[i - 1].weight)  # top-down W_{i-1}^T s_{i-1}
            new.append(rho(z))
        if is_nudged(beta):
            new[0] = new[0] + beta * nudge_force(y, s[0])  # as the original rounds it
        idx_above = None  # argmax positions of the pooling that produced c_{j-1}'s drive
        for j in range(n_conv):
            if j + 1 < n_conv:
                conv = self._conv(j, s[m + j + 1], static.conv_weights[j])
                drive, idx = self._pool(conv)  # (B, C_j, h_j, h_j)
            else:
                drive, idx = static.input_drive, None
            if j == 0:
                # W_{m-1}^T s_{m-1}: (B, C_0 h_0^2) -> (B, C_0, h_0, h_0)
                top_down = (s[m - 1] @ fc[m - 1].weight).view(drive.shape)
            else:
                # conv_{j-1}^T(unpool(c_{j-1})): (B, C_{j-1}, h_{j-1}, h_{j-1}) -> unpooled
                # (B, C_{j-1}, conv side, conv side) -> (B, C_j, h_j, h_j)
                side = self.conv_sides[j - 1]
                unpooled = F.max_unpool2d(
                    s[m + j - 1], idx_above, self.pool_size, output_size=(side, side)
                )
                top_down = F.conv_transpose2d(
                    unpooled, static.conv_weights[j - 1], padding=self.conv_padding
                )
            new.append(rho(drive + top_down))  # channels-last like drive
            idx_above = idx
        return new
