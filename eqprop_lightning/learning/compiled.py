"""The step of the dynamics through ``torch.compile``: inductor fuses the chain of small
elementwise kernels of one step on the CPU; on CUDA ``mode="reduce-overhead"`` replays each step
as a CUDA graph (one launch instead of dozens).

Shapes are static (``dynamic=False``): one graph per batch size, grad mode and nudge, so a smaller
last batch compiles once more and no batch recompiles after that. Where compilation fails (no C
compiler, an unsupported platform) the first call warns and the dynamics run eagerly from then on.
Complex (tensor) nudges always run eagerly.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from eqprop_lightning.nets import State

_COMPILED: weakref.WeakKeyDictionary[nn.Module, CompiledStep] = weakref.WeakKeyDictionary()


class CompiledStep:
    """``net.step`` compiled on its first call, with an eager fallback."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.compiled: dict[str, Callable] = {}  # by device type
        self.failed = False

    def _compiled_for(self, device: torch.device) -> Callable:
        if device.type not in self.compiled:
            mode = "reduce-overhead" if device.type == "cuda" else None
            self.compiled[device.type] = torch.compile(self.net.step, dynamic=False, mode=mode)
        return self.compiled[device.type]

    def __call__(
        self, s: State, static, beta: float | Tensor = 0.0, y: Tensor | None = None
    ) -> State:
        if self.failed or isinstance(beta, Tensor) or s[0].is_complex():
            return self.net.step(s, static, beta, y)
        device = s[0].device
        try:
            if device.type == "cuda":
                # a CUDA graph overwrites its outputs at the next replay: keep copies
                torch.compiler.cudagraph_mark_step_begin()
                return [t.clone() for t in self._compiled_for(device)(s, static, beta, y)]
            return self._compiled_for(device)(s, static, beta, y)
        except Exception as err:  # noqa: BLE001 (any compiler failure: eager raises real errors)
            self.failed = True
            reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
            warnings.warn(
                f"compile=True: torch.compile failed on {type(self.net).__name__}.step "
                f"({type(err).__name__}: {reason[:200]}); the dynamics run eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.net.step(s, static, beta, y)


def compile_dynamics(net: nn.Module, enabled: bool = True) -> None:
    """Run ``net``'s relaxations (:func:`~eqprop_lightning.learning.phases.relax`) through
    :class:`CompiledStep` (``enabled``) or eagerly again."""
    if enabled:
        _COMPILED.setdefault(net, CompiledStep(net))
    else:
        _COMPILED.pop(net, None)


def step_function(net: nn.Module) -> Callable:
    """The step that the relaxations of ``net`` use: compiled or ``net.step``."""
    return _COMPILED.get(net, net.step)
