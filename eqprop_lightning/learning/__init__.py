"""Learning rules (EP and its nudging schemes, continual EP, truncated BPTT, RBP) built on the
relaxation of the dynamics. No Lightning."""

from eqprop_lightning.learning.bptt import TruncatedBPTT, bptt_transitions, cost
from eqprop_lightning.learning.cep import ContinualEP
from eqprop_lightning.learning.ep import EquilibriumProp, check_holomorphic, ep_surrogate
from eqprop_lightning.learning.estimator import (
    Estimate,
    GradientEstimator,
    check_beta,
    check_phases,
)
from eqprop_lightning.learning.guard import (
    DivergenceError,
    first_nonfinite_weight,
    last_step_change,
    locate_nonfinite,
)
from eqprop_lightning.learning.nudging import NUDGINGS, Nudges
from eqprop_lightning.learning.phases import free_phase, nudged_phase, relax
from eqprop_lightning.learning.rbp import RecurrentBackprop
from eqprop_lightning.learning.rules import make_rule, net_and_rule, real_nudges

__all__ = [
    "ContinualEP",
    "NUDGINGS",
    "DivergenceError",
    "Estimate",
    "EquilibriumProp",
    "GradientEstimator",
    "Nudges",
    "RecurrentBackprop",
    "TruncatedBPTT",
    "bptt_transitions",
    "check_holomorphic",
    "check_beta",
    "check_phases",
    "cost",
    "ep_surrogate",
    "first_nonfinite_weight",
    "free_phase",
    "last_step_change",
    "locate_nonfinite",
    "make_rule",
    "net_and_rule",
    "nudged_phase",
    "real_nudges",
    "relax",
]
