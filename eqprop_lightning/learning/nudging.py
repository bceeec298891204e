"""Nudging schemes of EP: which nudged phases to relax from the free fixed point ``s*`` and how
their primitives combine into the estimate. The equations of every variant are here.

Write ``g(beta) = <dPhi/dtheta(x, s_beta)>`` (batch mean) for the state ``s_beta`` relaxed with
the output nudged by ``beta`` (``s_0 = s*``). Where the nudged dynamics are the fixed-point
dynamics of ``Phi - beta l`` (the energy-based nets), ``g'(0) = -dL/dtheta`` (the EP theorem;
for the prototypical nets, whose ``F = rho(dPhi/ds)``, approximately), and every scheme estimates

    Delta_theta = Re [ c_0 g(0) + sum_k c_k g(beta_k) ]  ~  g'(0) = -dL/dtheta,

with the coefficients ``c``:

* ``positive`` (two-phase, Scellier & Bengio 2017): ``beta_1 = beta``, ``c_1 = -c_0 = 1/beta``;
  ``Delta = (g(beta) - g(0)) / beta``, bias O(beta).
* ``symmetric`` (Laborieux et al. 2021): ``beta_{1,2} = +-beta``, ``c_{1,2} = +-1/(2 beta)``,
  ``c_0 = 0``; ``Delta = (g(beta) - g(-beta)) / (2 beta)``, bias O(beta^2).
* ``random_sign`` (Laborieux et al. 2021): two-phase with ``beta`` replaced by ``sigma beta``,
  ``sigma = +-1`` drawn per batch; ``Delta = (g(sigma beta) - g(0)) / (sigma beta)``, whose mean
  over ``sigma`` is the symmetric estimate.
* ``holomorphic`` (Laborieux & Zenke 2022), ``N >= 2`` points: ``beta_k = beta w^k``,
  ``w = exp(2 pi i / N)``, ``k = 0 .. N-1``, ``c_k = w^-k / (N beta)``, ``c_0 = 0``:
  ``Delta = Re (1/(N beta)) sum_k w^-k g(beta w^k)``. For ``g`` holomorphic in ``beta``, Cauchy's
  formula ``g'(0) = (1/(2 pi i)) oint g(b) / b^2 db`` on the circle ``|b| = beta`` (``b = beta
  e^{i phi}``, ``db = i b dphi``) is ``(1/(2 pi beta)) int g(beta e^{i phi}) e^{-i phi} dphi``,
  whose N-point trapezoidal rule is the sum above; it aliases only the Taylor terms of order
  ``1 + N m`` (m >= 1) into ``g'(0)``, so the bias is O(beta^N). ``N = 2`` is ``symmetric``.

Each ``beta`` is the nominal nudge; the effective one is ``net.beta_scale * beta`` (EPcont nudges
by ``dt beta``), so every ``c`` is divided by ``net.beta_scale`` in the surrogate.
"""

from __future__ import annotations

import cmath
import math
from dataclasses import dataclass

import numpy as np

from eqprop_lightning.errors import ConfigError

NUDGINGS = ("positive", "symmetric", "random_sign", "holomorphic")


@dataclass(frozen=True)
class Nudges:
    """Nudged phases ``betas`` (all from ``s*``, none zero), their coefficients ``coefs`` and
    the coefficient ``free_coef`` of the free phase ``g(0)`` (see the module docstring)."""

    betas: tuple[complex, ...]
    coefs: tuple[complex, ...]
    free_coef: float

    @property
    def is_complex(self) -> bool:
        return any(isinstance(b, complex) for b in self.betas)


def positive(beta: float) -> Nudges:
    """Two-phase EP: ``(g(beta) - g(0)) / beta``."""
    return Nudges((beta,), (1.0 / beta,), -1.0 / beta)


def symmetric(beta: float) -> Nudges:
    """Symmetric EP: ``(g(beta) - g(-beta)) / (2 beta)``."""
    return Nudges((beta, -beta), (0.5 / beta, -0.5 / beta), 0.0)


def holomorphic(beta: float, points: int) -> Nudges:
    """Holomorphic EP: ``Re (1/(N beta)) sum_k w^-k g(beta w^k)``, ``w = exp(2 pi i / N)``."""
    w = [cmath.exp(2j * math.pi * k / points) for k in range(points)]
    return Nudges(tuple(beta * wk for wk in w), tuple(1.0 / (points * beta * wk) for wk in w), 0.0)


def random_sign(seed: int, step: int) -> int:
    """The sign ``sigma = +-1`` of batch ``step``: a function of ``(seed, step)`` only, so that
    DDP ranks agree and a resumed run draws the same signs. numpy's ``SeedSequence`` mixes both
    numbers into the generator's state (torch's CPU generator keeps 32 bits of a seed only)."""
    return 1 if np.random.default_rng([seed % 2**32, step]).integers(2) else -1


def check_nudging(nudging: str, points: int | None) -> int | None:
    """Validate the scheme's name and ``points`` (holomorphic only, >= 2, default 4)."""
    if nudging not in NUDGINGS:
        raise ConfigError(f"nudging={nudging!r} is not supported; choose one of {list(NUDGINGS)}")
    if nudging != "holomorphic":
        if points is not None:
            raise ConfigError(
                f"holomorphic_points={points} applies to nudging: holomorphic only "
                f"(nudging is {nudging!r})"
            )
        return None
    if points is None:
        return 4
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        raise ConfigError(f"holomorphic_points={points!r} must be an integer >= 2")
    return points
