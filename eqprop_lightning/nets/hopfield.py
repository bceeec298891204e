"""Convergent RNNs with modern-Hopfield (attention) projection layers (Bal & Sengupta, IJCAI 2023).

The whole embedded sequence ``x`` (B, L, d) is the static input, split into segments (IMDB: the
review; SNLI: premise and hypothesis). Each projection layer ``k`` has a bias-free weight
``P_k`` (d x d) applied token-wise to its query segment and a state ``s_k`` (B, L_k, d); fully
connected layers ``W_1 .. W_n`` (with biases) follow on ``vec(s_1, ..., s_m)``. The primitive is

    Phi = sum_k (x_{q(k)} P_k^T) . s_k + sum_i (W_i h_{i-1} + b_i) . h_i,
    h_0 = vec(concat_seq(s_1 .. s_m)),  h_i the fc states (h_n the output),

and the dynamics update every layer from the same state:

    s_k <- softmax(scale * dPhi/ds_k  x_{v(k)}^T) x_{v(k)}     (modern-Hopfield update: the query
                                                               dPhi/ds_k attends over the tokens
                                                               of segment v(k), keys = values)
    h_i <- rho(dPhi/dh_i) = rho(W_i h_{i-1} + b_i + W_{i+1}^T h_{i+1})
    h_n <- rho(W_n h_{n-1} + b_n + beta (y - h_n))             (the nudge acts inside rho)

IMDB: one projection (query and keys the review), ``fc_layers = [1000, 40, 2]``,
``attn_scale = 1/sqrt(300)``. SNLI: four projections, premise->hypothesis, hypothesis->premise,
premise->premise, hypothesis->hypothesis, ``fc_layers = [400, 3]``, ``attn_scale = 0.16``. As in the
original, zero-padded tokens take part in the softmax unless ``padding_mask`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqprop_lightning.errors import ConfigError
from eqprop_lightning.nets.activations import get_activation
from eqprop_lightning.nets.nudge import add_nudge, is_nudged
from eqprop_lightning.nets.protocol import State, repeat_batch


@dataclass
class HopfieldStaticTerms:
    """Per-batch constants: the token-wise input terms ``x_{q(k)} P_k^T`` (attached to ``P_k``),
    the keys/values of each projection (detached segments of ``x``) and their padding masks."""

    input_terms: list[Tensor]  # (B, L_q(k), d) per projection
    keys: list[Tensor]  # (B, L_v(k), d) per projection
    key_masks: list[Tensor | None]  # (B, 1, L_v(k)) bool, True for real tokens, or None

    def repeat(self, n: int) -> HopfieldStaticTerms:
        """The terms of ``n`` copies of the batch."""
        return HopfieldStaticTerms(
            [repeat_batch(t, n) for t in self.input_terms],
            [repeat_batch(k, n) for k in self.keys],
            [repeat_batch(m, n) for m in self.key_masks],
        )


class HopfieldClassifier(nn.Module):
    """Modern-Hopfield projection layers followed by fully connected layers.

    Args:
        segments: lengths of the segments of ``x`` along the sequence axis (IMDB ``[600]``,
            SNLI ``[25, 25]``).
        projections: ``[query segment, key segment]`` of each projection layer (IMDB
            ``[[0, 0]]``, SNLI ``[[0, 1], [1, 0], [0, 0], [1, 1]]``).
        fc_layers: sizes of the fully connected states, output last (IMDB ``[1000, 40, 2]``).
        embed_dim: token dimension ``d``.
        activation: ``rho`` of the fc layers (the seed's ``my_hard_sig`` in its runs).
        attn_scale: inverse temperature of the softmax.
        padding_mask: exclude all-zero (padding) tokens from the softmax.

    Shape:
        x: (B, sum(segments), embed_dim); s[k]: (B, segments[query of k], embed_dim) for the
        projections, then (B, fc_layers[i]).
    """

    beta_scale: float = 1.0
    state_dt: float = 1.0
    bptt_extra_step: bool = False
    uses_previous_state: bool = False
    clamp: bool = False

    def __init__(
        self,
        segments: list[int] = [600],  # noqa: B006 (read only; a list for the CLI)
        projections: list[list[int]] = [[0, 0]],  # noqa: B006
        fc_layers: list[int] = [1000, 40, 2],  # noqa: B006
        embed_dim: int = 300,
        activation: str = "my_hard_sig",
        attn_scale: float = 300**-0.5,
        padding_mask: bool = False,
    ) -> None:
        super().__init__()
        for name, values in (("segments", segments), ("fc_layers", fc_layers)):
            if not values or any(not isinstance(n, int) or n < 1 for n in values):
                raise ConfigError(f"{name}={values} must be a non-empty list of positive integers")
        if not projections or any(
            len(p) != 2 or not all(isinstance(i, int) and 0 <= i < len(segments) for i in p)
            for p in projections
        ):
            raise ConfigError(
                f"projections={projections} must list [query segment, key segment] pairs with "
                f"indices in 0..{len(segments) - 1}"
            )
        if not attn_scale > 0:
            raise ConfigError(f"attn_scale={attn_scale} must be > 0")
        self.segments, self.projection_pairs = list(segments), [list(p) for p in projections]
        self.fc_layers, self.embed_dim = list(fc_layers), embed_dim
        self.rho = get_activation(activation)
        self.attn_scale, self.padding_mask = attn_scale, padding_mask
        self.query_lengths = [segments[q] for q, _ in projections]
        self.projections = nn.ModuleList(
            nn.Linear(embed_dim, embed_dim, bias=False) for _ in projections
        )
        sizes = [sum(self.query_lengths) * embed_dim, *fc_layers]
        self.fc = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(fc_layers)))

    input_fields = "segments and embed_dim"
    output_field = "fc_layers[-1]"

    @property
    def example_shape(self) -> tuple[int, ...]:
        """Shape of one embedded input: ``(sum(segments), embed_dim)``."""
        return (sum(self.segments), self.embed_dim)

    @property
    def num_classes(self) -> int:
        """Output units: ``fc_layers[-1]``."""
        return self.fc_layers[-1]

    def synapse_groups(self) -> list[nn.Module]:
        """Learning-rate order of the original: the projections, then the fc layers upwards."""
        return [*self.projections, *self.fc]

    def synapse_labels(self) -> list[str]:
        return [f"P{k}" for k in range(len(self.projections))] + [
            f"W{i + 1}" for i in range(len(self.fc))
        ]

    def init_state(self, x: Tensor) -> State:
        B, d = x.shape[0], self.embed_dim
        return [x.new_zeros(B, n, d) for n in self.query_lengths] + [
            x.new_zeros(B, n) for n in self.fc_layers
        ]

    def output(self, s: State) -> Tensor:
        return s[-1]

    def static_terms(self, x: Tensor) -> HopfieldStaticTerms:
        expected = (sum(self.segments), self.embed_dim)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ConfigError(
                f"HopfieldClassifier expects x of shape (B, {expected[0]}, {expected[1]}) "
                f"(segments={self.segments}, embed_dim={self.embed_dim}), got {tuple(x.shape)}"
            )
        parts = torch.split(x, self.segments, dim=1)  # (B, L_j, d) per segment
        keys = [parts[v].detach() for _, v in self.projection_pairs]
        masks = [
            (k.abs().sum(-1) > 0).unsqueeze(1) if self.padding_mask else None for k in keys
        ]  # (B, 1, L_v)
        terms = [
            F.linear(parts[q], p.weight)
            for (q, _), p in zip(self.projection_pairs, self.projections, strict=True)
        ]
        return HopfieldStaticTerms(terms, keys, masks)

    def primitive(self, s: State, static: HopfieldStaticTerms) -> Tensor:
        """``Phi(x, s)`` per example, shape (B,)."""
        m = len(self.projections)
        phi = sum((t * sk).sum((1, 2)) for t, sk in zip(static.input_terms, s[:m], strict=True))
        h = torch.cat(s[:m], dim=1).flatten(1)  # (B, sum L_q d)
        for i, layer in enumerate(self.fc):
            phi = phi + (s[m + i] * layer(h)).sum(1)
            h = s[m + i]
        return phi

    def _attend(self, query: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
        """``softmax(scale q K^T) K`` over the key positions: (B, L_q, d) -> (B, L_q, d)."""
        logits = self.attn_scale * query @ keys.transpose(1, 2)  # (B, L_q, L_v)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
            return torch.softmax(logits, -1).nan_to_num(0.0) @ keys  # all-padding rows -> 0
        return torch.softmax(logits, -1) @ keys

    def step(
        self, s: State, static: HopfieldStaticTerms, beta: float = 0.0, y: Tensor | None = None
    ) -> State:
        """One synchronous update of every layer from ``s`` (see the module docstring)."""
        m, n, B = len(self.projections), len(self.fc), s[0].shape[0]
        fc = list(self.fc)
        # top-down W_1^T h_1 into the projections: (B, sum L_q d) -> (B, L_q(k), d) per k
        feedback = (s[m] @ fc[0].weight).view(B, -1, self.embed_dim)
        feedback = torch.split(feedback, self.query_lengths, dim=1)
        new = [
            self._attend(term + fb, keys, mask)
            for term, fb, keys, mask in zip(
                static.input_terms, feedback, static.keys, static.key_masks, strict=True
            )
        ]
        h = torch.cat(s[:m], dim=1).flatten(1)  # h_0 = vec(s_1 .. s_m): (B, sum L_q d)
        for i in range(n):
            z = fc[i](h)
            if i + 1 < n:
                z = torch.addmm(z, s[m + i + 1], fc[i + 1].weight)  # W_{i+1}^T h_{i+1}
            elif is_nudged(beta):
                z = add_nudge(z, beta, y, s[m + i])
            new.append(self.rho(z))
            h = s[m + i]
        return new
