"""Helpers for the tests against outputs recorded from the original code (``reference/``)."""

import os
from pathlib import Path

import pytest

from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC


def reference_dir() -> Path | None:
    """``$EQPROP_DATA_DIR/reference`` or ``../shared/data/reference`` beside the repository."""
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data" / "reference"]
    if os.environ.get("EQPROP_DATA_DIR"):
        candidates.insert(0, Path(os.environ["EQPROP_DATA_DIR"]) / "reference")
    return next((p for p in candidates if (p / "README.md").exists()), None)


REFERENCE = reference_dir()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason="reference fixtures not found")


def original_to_ours(state_dict: dict) -> dict:
    """The original's ``w.{2i}.*`` is ``weights.{i}.*`` here."""
    out = {}
    for key, value in state_dict.items():
        _, index, field = key.split(".")
        out[f"weights.{int(index) // 2}.{field}"] = value
    return out


def build_net(args: dict):
    """The net with the original's options (clamp on unless ``--no-clamp``, dt as recorded)."""
    if args["discrete"]:
        return PrototypicalFC(args["size_tab"], args["activation_function"], dt=args["dt"])
    return EnergyBasedFC(
        args["size_tab"], args["activation_function"], dt=args["dt"], clamp=not args["no_clamp"]
    )
