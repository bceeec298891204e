"""The run's seed, and the torch, Python and NumPy random states as checkpoints store them for
an exact resume.

Checkpoints keep the seed under ``checkpoint["seed_everything"]`` and the random states under
``checkpoint["rng_states"]``, as tensors and tuples, so that they still load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

#: The checkpoint key of the random states (older checkpoints use the same).
CHECKPOINT_KEY = "rng_states"
#: The checkpoint key of the run's seed (checkpoints written before 2026-12-07 have none).
SEED_KEY = "seed_everything"


def run_seed() -> int | None:
    """The run's ``seed_everything`` seed (Lightning's ``PL_GLOBAL_SEED``), or None when it was
    not set."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return None if seed is None else int(seed)


def capture_rng_states() -> dict[str, Any]:
    """The current torch (CPU), Python and NumPy random states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put back the states of :func:`capture_rng_states` (also read back from a checkpoint,
    where the tuples may have become lists)."""
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
