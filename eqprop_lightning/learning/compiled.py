"""The relaxations through ``torch.compile``: a phase's steps are unrolled into one graph
(chunks of at most :data:`UNROLL` steps), so that inductor fuses each step's chain of small
elementwise kernels on the CPU and the per-step Python and dispatch overhead is paid once per
chunk; on CUDA ``mode="reduce-overhead"`` replays each chunk as one CUDA graph (one launch instead
of hundreds).

Shapes are static (``dynamic=False``): one graph per chunk length, batch size, grad mode and
nudge, so a smaller last batch compiles once more and no batch recompiles after that. Where
compilation fails (no C compiler, an unsupported platform) the first call warns and the dynamics
run eagerly from then on. Complex (holomorphic) relaxations always run eagerly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from eqprop_lightning.nets import State, Static

#: Steps unrolled into one graph: compile time grows with it, the per-call overhead (tens of
#: microseconds) is shared by its steps; a longer phase runs the same graph several times.
UNROLL = 20
#: Graphs dynamo keeps per function before it gives up and runs eagerly (its default is 8): each
#: net kind, chunk length, batch size, grad mode and nudge is one.
RECOMPILE_LIMIT = 64

#: ``(step, s, static, steps, beta, y) -> (state one step before the end, state)``
Loop = Callable[..., tuple[State, State]]

#: the net's attribute that holds its :class:`CompiledRelaxation` (freed with the net)
ATTRIBUTE = "_compiled_relaxation"


class CompiledRelaxation:
    """A relaxation loop of ``net`` compiled on its first call, with an eager fallback. It is
    an attribute of the net, collected with it; ``copy.deepcopy`` or a pickle of the net leaves
    it behind (the copy relaxes eagerly)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.step = net.step  # one bound method, so that the graphs' guards hold across calls
        self.compiled: dict[str, Loop] = {}  # by device type
        self.failed = False

    def __reduce__(self):
        return type(None), ()

    def _compiled_for(self, device: torch.device, loop: Loop) -> Loop:
        if device.type not in self.compiled:
            mode = "reduce-overhead" if device.type == "cuda" else None
            self.compiled[device.type] = torch.compile(loop, dynamic=False, mode=mode)
        return self.compiled[device.type]

    def _chunk(
        self,
        loop: Loop,
        s: State,
        static: Static,
        steps: int,
        beta: float | Tensor,
        y: Tensor | None,
    ) -> tuple[State, State]:
        device = s[0].device
        if device.type == "cuda":
            # a CUDA graph overwrites its outputs at the next replay: keep copies
            torch.compiler.cudagraph_mark_step_begin()
            previous, s = self._compiled_for(device, loop)(self.step, s, static, steps, beta, y)
            return [t.clone() for t in previous], [t.clone() for t in s]
        return self._compiled_for(device, loop)(self.step, s, static, steps, beta, y)

    def __call__(
        self,
        loop: Loop,
        s: State,
        static: Static,
        steps: int,
        beta: float | Tensor = 0.0,
        y: Tensor | None = None,
    ) -> tuple[State, State]:
        """``loop(net.step, s, static, steps, beta, y)``, compiled in chunks of ``UNROLL``."""
        complex_nudge = isinstance(beta, Tensor) and beta.is_complex()
        if self.failed or complex_nudge or s[0].is_complex():
            return loop(self.step, s, static, steps, beta, y)
        try:
            previous, state, done = s, s, 0
            while done < steps:
                n = min(UNROLL, steps - done)
                previous, state = self._chunk(loop, state, static, n, beta, y)
                done += n
            return previous, state
        except Exception as caught:  # noqa: BLE001 (a compiler failure, if eager runs)
            err = caught
        # from the phase's first state, outside the except (an eager error is not chained to
        # the compiler's); an error eager raises too is the inputs': compilation stays on
        result = loop(self.step, s, static, steps, beta, y)
        self.failed = True
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(
            f"compile=True: torch.compile failed on {type(self.net).__name__}.step "
            f"({type(err).__name__}: {reason[:200]}); the dynamics run eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        return result


def compile_dynamics(net: nn.Module, enabled: bool = True) -> None:
    """Run ``net``'s relaxations (:func:`~eqprop_lightning.learning.phases.relax`) through
    :class:`CompiledRelaxation` (``enabled``) or eagerly again."""
    if enabled:
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
        if compiled_relaxation(net) is None:
            net.__dict__[ATTRIBUTE] = CompiledRelaxation(net)
    else:
        net.__dict__.pop(ATTRIBUTE, None)


def compiled_relaxation(net: nn.Module) -> CompiledRelaxation | None:
    """The compiled relaxation of ``net``, or ``None`` when it relaxes eagerly."""
    return net.__dict__.get(ATTRIBUTE)
