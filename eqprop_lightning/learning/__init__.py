"""Learning rules (EP, truncated BPTT) built on the relaxation of the dynamics. No Lightning."""

from eqprop_lightning.learning.bptt import TruncatedBPTT, bptt_transitions, cost
from eqprop_lightning.learning.ep import EquilibriumProp, ep_surrogate
from eqprop_lightning.learning.estimator import Estimate, GradientEstimator, check_phases
from eqprop_lightning.learning.guard import (
    DivergenceError,
    first_nonfinite_weight,
    last_step_change,
    locate_nonfinite,
)
from eqprop_lightning.learning.phases import free_phase, nudged_phase, relax

__all__ = [
    "DivergenceError",
    "Estimate",
    "EquilibriumProp",
    "GradientEstimator",
    "TruncatedBPTT",
    "bptt_transitions",
    "check_phases",
    "cost",
    "ep_surrogate",
    "first_nonfinite_weight",
    "free_phase",
    "last_step_change",
    "locate_nonfinite",
    "nudged_phase",
    "relax",
]
