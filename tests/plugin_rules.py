"""Learning rules written outside the package, as a user would: what
``model.algorithm: tests.plugin_rules.<Class>`` builds (``tests/test_user_rule.py``)."""

from __future__ import annotations

from torch import Tensor

from eqprop_lightning.learning import EquilibriumProp, Estimate, TruncatedBPTT
from eqprop_lightning.nets import Net


class ScaledNudgeEP(EquilibriumProp):
    """EP nudged with ``scale`` times the model's ``beta``: a rule built on one of ours, with an
    option of its own (``model.rule_args``)."""

    def __init__(self, T: int, K: int, beta: float, scale: float = 0.5) -> None:
        super().__init__(T, K, scale * beta)


class RecordingBPTT:
    """A rule from scratch (no base class): truncated BPTT that records the steps it is
    called at."""

    continual = False

    def __init__(self, T: int, K: int, beta: float | None) -> None:
        self.T, self.K = T, K
        self.bptt = TruncatedBPTT(T, K)
        self.steps: list[int] = []

    def __call__(self, net: Net, x: Tensor, y: Tensor, step: int = 0) -> Estimate:
        self.steps.append(step)
        return self.bptt(net, x, y, step)


class NotARule:
    """Built like a rule, with none of its interface."""

    def __init__(self, T: int, K: int, beta: float | None) -> None:
        self.T = T


class OwnT(RecordingBPTT):
    """Keeps a ``T`` of its own instead of the model's."""

    def __init__(self, T: int, K: int, beta: float | None) -> None:
        super().__init__(2 * T, K, beta)


class NoBeta(TruncatedBPTT):
    """Takes no ``beta``."""


class Broken(RecordingBPTT):
    """A bug of its own in ``__init__``."""

    def __init__(self, T: int, K: int, beta: float | None) -> None:
        super().__init__(T, K, beta)
        len(T)  # TypeError: the class's, not the config's
