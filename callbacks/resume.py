"""What an exact resume needs beyond Lightning's checkpoint: the random number generators."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Stores the torch, Python and NumPy random states in every checkpoint and restores them on
    resume, so that a resumed run draws the same shuffles as an uninterrupted one. The states are
    kept as tensors and tuples, so checkpoints still load with ``torch.load(weights_only=True)``.

    The states are put back when training starts, after the sanity check, whose data loader
    iterators draw from the torch generator (the uninterrupted run drew those before saving).
    """

    def __init__(self) -> None:
        self.pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.pending = checkpoint.get("rng_states")

    def on_train_start(self, trainer, pl_module) -> None:
        states, self.pending = self.pending, None
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
