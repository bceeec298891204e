"""Lightning data modules for eqprop-lightning, imported when first used (so that the
Lightning-free parts, e.g. :mod:`.mnist_files` and :mod:`.sampling`, import without Lightning)."""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "IMDBDataModule": "imdb",
    "MNISTDataModule": "mnist",
    "SNLIDataModule": "snli",
    "ToyDataModule": "synthetic",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULES[name]}", __name__), name)
