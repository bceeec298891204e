"""Argument checks shared by the data modules: each raises ``ConfigError`` naming the field."""

from __future__ import annotations

from eqprop_lightning.errors import ConfigError


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """Raise ``ConfigError`` unless ``value`` is a positive int (or ``None`` if allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        extra = " or null" if allow_none else ""
        raise ConfigError(f"{name} must be a positive integer{extra}, got {value!r}")


def check_nonneg_int(name: str, value: object) -> None:
    """Raise ``ConfigError`` unless ``value`` is an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
