"""Per-epoch results of a run, written as ``results.json`` in the run directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


class ResultsWriter(L.Callback):
    """Appends ``{"epoch", "train_error", "test_error", "train_loss", "free_change", "seconds"}``
    (errors in percent, ``free_change`` the convergence diagnostic of
    :class:`~eqprop_lightning.module.EqPropModule`, ``seconds`` the wall time of the epoch
    including evaluation) to
    ``<run dir>/results.json`` after every epoch, like the original's ``results`` file.

    The test error is the error on the evaluation set of the epoch (the MNIST test set: the
    original has no validation split). A resumed run keeps the epochs it already has.
    """

    def __init__(self, filename: str = "results.json") -> None:
        self.filename = filename
        self.epochs: list[dict[str, float]] = []
        self.path = Path(filename)
        self._start = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # on every rank: under DDP, trainer.log_dir is a broadcast from rank 0
        self.path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning restored the loops: a resumed run's current_epoch is the epoch to run
        path = self.path
        self.epochs = []
        if trainer.current_epoch > 0 and path.exists():
            previous = json.loads(path.read_text())["epochs"]
            self.epochs = [e for e in previous if e["epoch"] <= trainer.current_epoch]

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        entry = {"epoch": trainer.current_epoch + 1}
        for key, name in (
            ("train/error", "train_error"),
            ("val/error", "test_error"),
            ("train/loss", "train_loss"),
            ("train/free_change", "free_change"),
        ):
            if key in metrics:
                entry[name] = (
                    float(f"{float(metrics[key]):.4g}")
                    if name == "free_change"
                    else round(float(metrics[key]), 4)
                )
        entry["seconds"] = round(time.perf_counter() - self._start, 3)
        self.epochs.append(entry)
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            path, {"algorithm": pl_module.hparams.get("algorithm"), "epochs": self.epochs}
        )
