"""The learning rules by name, and the checks of the options that choose one: what
:class:`~eqprop_lightning.module.EqPropModule` builds from its settings, and what the analyses
build from a config without Lightning (:func:`net_and_rule`)."""

from __future__ import annotations

import inspect
import pkgutil
from typing import Any

from torch import nn

from eqprop_lightning.errors import ConfigError, check_flag
from eqprop_lightning.learning.bptt import TruncatedBPTT
from eqprop_lightning.learning.cep import ContinualEP
from eqprop_lightning.learning.compiled import compile_dynamics
from eqprop_lightning.learning.ep import EquilibriumProp, check_holomorphic
from eqprop_lightning.learning.estimator import GradientEstimator
from eqprop_lightning.learning.rbp import RecurrentBackprop
from eqprop_lightning.nets import SoftmaxReadout
from eqprop_lightning.nets.protocol import missing_members

RULES = ("ep", "cep", "bptt", "rbp")


def make_rule(
    algorithm: str,
    T: int,
    K: int,
    beta: float | None = None,
    nudging: str | None = None,
    holomorphic_points: int | None = None,
    seed: int = 0,
    net: nn.Module | None = None,
    rule_args: dict[str, Any] | None = None,
) -> GradientEstimator:
    """The learning rule named by ``algorithm``: ``ep`` (with the ``nudging`` scheme, default
    ``positive``; ``seed`` seeds random-sign nudging), ``cep`` (continual EP), ``bptt``, ``rbp``,
    or the import path of a rule of your own, with its ``rule_args`` (:func:`user_rule`). With
    ``net``, a scheme the net cannot run (holomorphic nudges of a clamped net) is rejected here."""
    if rule_args and algorithm in RULES:
        raise ConfigError(
            f"rule_args={rule_args!r} applies to a rule of your own (model.algorithm "
            f"package.module.Class), not {algorithm!r}: set model.rule_args null"
        )
    if algorithm == "ep":
        rule = EquilibriumProp(T, K, beta, nudging or "positive", holomorphic_points, seed)
        if net is not None and rule.nudging == "holomorphic":
            check_holomorphic(net)
        return rule
    if algorithm not in RULES and "." not in algorithm:
        raise ConfigError(
            f"algorithm={algorithm!r} is not supported; choose one of {list(RULES)} or give the "
            "import path of a rule of your own (package.module.Class)"
        )
    for name, value in (("nudging", nudging), ("holomorphic_points", holomorphic_points)):
        if value is not None and not (algorithm == "cep" and value == "positive"):
            raise ConfigError(f"{name}={value!r} applies to algorithm 'ep' only, not {algorithm!r}")
    if algorithm == "cep":
        return ContinualEP(T, K, beta)
    if algorithm not in RULES:
        return user_rule(algorithm, T, K, beta, rule_args or {})
    if beta is not None:  # bptt, rbp: no nudge
        raise ConfigError(
            f"beta={beta} does not apply to algorithm {algorithm!r} (it has no nudge): "
            "set model.beta null"
        )
    return RecurrentBackprop(T, K) if algorithm == "rbp" else TruncatedBPTT(T, K)


def user_rule(
    path: str, T: int, K: int, beta: float | None, rule_args: dict[str, Any]
) -> GradientEstimator:
    """A rule of your own: the class at ``path`` (``package.module.Class``, imported by
    :func:`pkgutil.resolve_name`), built as ``Class(T=T, K=K, beta=beta, **rule_args)`` from the
    model's settings; its instance implements :class:`GradientEstimator` with these ``T`` and
    ``K``. Errors raised inside the class's ``__init__`` are the class's, and propagate."""
    if not isinstance(rule_args, dict) or {"T", "K", "beta"} & set(rule_args):
        raise ConfigError(
            f"rule_args={rule_args!r} must be a mapping of the rule's own options, without T, "
            "K or beta (they are model.T, model.K and model.beta)"
        )
    try:
        cls = pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"algorithm={path!r} is not one of {list(RULES)} and does not import as a class "
            f"({type(error).__name__}: {error})"
        ) from None
    if not inspect.isclass(cls):
        raise ConfigError(f"algorithm={path!r} is a {type(cls).__name__}, not a class")
    try:
        inspect.signature(cls).bind(T=T, K=K, beta=beta, **rule_args)
    except TypeError as error:
        options = "".join(f", {k}={v!r}" for k, v in rule_args.items())
        raise ConfigError(
            f"algorithm={path!r}: {path}(T={T}, K={K}, beta={beta}{options}) does not match "
            f"its signature ({error}); a rule of your own is built from model.T, model.K, "
            "model.beta and model.rule_args"
        ) from None
    rule = cls(T=T, K=K, beta=beta, **rule_args)
    members = GradientEstimator.__annotations__  # T, K, continual; and a call
    missing = [name for name in members if not hasattr(rule, name)]
    missing += [] if callable(rule) else ["__call__"]
    if missing:
        raise ConfigError(
            f"algorithm={path!r} is not a learning rule: it lacks {', '.join(missing)} (the "
            "interface eqprop_lightning.learning.GradientEstimator, learning/estimator.py)"
        )
    if (rule.T, rule.K) != (T, K):
        raise ConfigError(
            f"algorithm={path!r} built with T={T}, K={K} has T={rule.T}, K={rule.K}: a rule "
            "keeps the model's T and K (the guard and the GDU callback read them there)"
        )
    return rule


def real_nudges(rule: GradientEstimator, step: int) -> tuple[tuple[float, ...], bool]:
    """The rule's real nudged phases at ``step``, replayed by the guard, and whether it has
    complex ones (holomorphic EP's, which are not)."""
    if isinstance(rule, ContinualEP):
        return (rule.beta,), False
    if not isinstance(rule, EquilibriumProp):
        return (), False
    betas = rule.nudges(step).betas
    real = tuple(float(b.real) for b in betas if complex(b).imag == 0)
    return real, len(real) < len(betas)


def nudging_option(algorithm: str, nudging: str | None, symmetric: bool) -> str | None:
    """``symmetric: true`` is the old spelling of ``nudging: symmetric`` (kept as an alias, so
    that old configs and checkpoints load)."""
    if not symmetric:
        return nudging
    if algorithm != "ep":
        raise ConfigError(
            f"symmetric=True applies to algorithm 'ep' only, not {algorithm!r} (it is the old "
            "spelling of nudging: symmetric): set model.symmetric false"
        )
    if nudging not in (None, "symmetric"):
        raise ConfigError(
            f"symmetric=True contradicts nudging={nudging!r}: symmetric: true is the old "
            "spelling of nudging: symmetric; drop it"
        )
    return "symmetric"


LOSSES = ("mse", "cross_entropy")


def check_loss(loss: str, nudging: str | None, readout_classes: int | None = None) -> None:
    """``mse`` for every rule; ``cross_entropy`` for EP (real nudges), BPTT, RBP and any rule
    that is not continual (:func:`net_and_rule` checks that), with ``readout_classes`` (a
    positive number of logits, or None: as many as output units)."""
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is not supported; choose one of {list(LOSSES)}")
    if loss == "mse":
        if readout_classes is not None:
            raise ConfigError(
                f"readout_classes={readout_classes} applies to loss cross_entropy only (the "
                "softmax readout): set model.readout_classes null or model.loss cross_entropy"
            )
        return
    if readout_classes is not None and (
        isinstance(readout_classes, bool)
        or not isinstance(readout_classes, int)
        or readout_classes < 2
    ):
        raise ConfigError(
            f"readout_classes={readout_classes!r} must be an integer >= 2 (the readout's logits) "
            "or null (as many as the net's output units)"
        )
    if nudging == "holomorphic":
        raise ConfigError(
            "loss=cross_entropy is not implemented for holomorphic nudging (a complex softmax "
            "readout): use nudging positive, symmetric or random_sign, or loss mse"
        )


def net_and_rule(
    net: nn.Module,
    algorithm: str = "ep",
    T: int = 40,
    K: int = 15,
    beta: float | None = None,
    symmetric: bool = False,
    nudging: str | None = None,
    holomorphic_points: int | None = None,
    compile: bool = False,
    loss: str = "mse",
    readout_classes: int | None = None,
    rule_args: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[nn.Module, GradientEstimator]:
    """The net as it is trained (inside a softmax readout of ``readout_classes`` logits for
    ``loss: cross_entropy``, its relaxations compiled with ``compile``) and its learning rule,
    after the options' checks. The defaults are
    :class:`~eqprop_lightning.module.EqPropModule`'s (a test holds them equal)."""
    if missing := missing_members(net):
        raise ConfigError(
            f"model.net: {type(net).__name__} is not a net of eqprop_lightning: it lacks "
            f"{', '.join(missing)} (the interface eqprop_lightning.nets.Net, nets/protocol.py)"
        )
    check_flag("symmetric", symmetric)
    nudging = nudging_option(algorithm, nudging, symmetric)
    check_loss(loss, nudging, readout_classes)
    check_flag("compile", compile)
    net = SoftmaxReadout(net, readout_classes) if loss == "cross_entropy" else net
    compile_dynamics(net, compile)
    rule = make_rule(
        algorithm, T, K, beta, nudging, holomorphic_points, seed, net, rule_args=rule_args
    )
    if loss == "cross_entropy" and rule.continual:
        raise ConfigError(
            f"loss=cross_entropy is not implemented for continual EP (algorithm {algorithm!r} is "
            "continual: its per-step update has no readout term): use loss mse, or a rule that "
            "is not continual (ep, bptt, rbp)"
        )
    return net, rule
