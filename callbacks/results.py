"""Per-epoch results of a run, written as ``results.json`` in the run directory."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from eqprop_lightning.io import write_json_atomic
from eqprop_lightning.module import evaluation_sets
from eqprop_lightning.rng import run_seed


class ResultsWriter(L.Callback):
    """Writes ``<run dir>/results.json`` after every completed training epoch, like the
    original's ``results`` file::

        {"algorithm": "ep", "seed": 0, "sets": {"test_error": "<set>", "val_error": "<set>"},
         "epochs": [{"epoch", "train_error", "test_error", "val_error", "train_loss",
                     "free_change", "seconds"}, ...]}

    Errors are in percent; ``test_error`` is the error on the test set and ``val_error`` (only
    with a validation split) on the validation set, both evaluated after the epoch's last
    training step; ``sets`` says which set each comes from. An epoch without such an
    evaluation (``check_val_every_n_epoch > 1``, ``limit_val_batches 0``) has ``null`` there.
    ``free_change`` is the convergence diagnostic of
    :class:`~eqprop_lightning.module.EqPropModule`, ``seconds`` the wall time of the epoch with
    its evaluation. An epoch that stops before its last batch (``max_steps``, ``max_time``, a
    graceful stop) gets no entry: its numbers do not exist; a resumed run completes it, and its
    ``seconds`` add the time before the stop (kept in the checkpoint) to the time after the
    resume. A resumed run keeps the epochs it already has; one resumed at an epoch's end (its
    checkpoint written at the evaluation's end, as with ``check_val_every_n_epoch > 1``) keeps
    that epoch's entry, or writes it from the checkpoint's evaluation and running means.
    ``fast_dev_run`` writes no file.
    """

    def __init__(self, filename: str = "results.json") -> None:
        self.filename = filename
        self.epochs: list[dict[str, Any]] = []
        self.path: Path | None = None  # <run dir>/<filename>; None under fast_dev_run
        self._start: float | None = None  # perf_counter() at the start of the epoch in progress
        self._resumed_seconds = 0.0  # of the epoch in progress, before the stop that saved it
        self._evaluation: dict[str, float] = {}
        self._evaluated_at: int | None = None  # global step of the last evaluation
        self._ending: int | None = None  # the epoch a run resumed at its end ends again

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # on every rank: under DDP, trainer.log_dir is a broadcast from rank 0; fast_dev_run
        # writes no run files (Lightning's loggers, configs and checkpoints neither)
        self.path = None
        if not trainer.fast_dev_run:
            self.path = Path(trainer.log_dir or trainer.default_root_dir) / self.filename

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the data is checked and the run directory written (config.yaml) by now
        if self.path is not None:
            rank_zero_info(f"run directory: {self.path.parent}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning restored the loops: a resumed run's current_epoch is the epoch to run
        path = self.path
        self.epochs = []
        # a checkpoint written at an evaluation after the epoch's last batch, before its entry:
        # Lightning resumes it "mid-epoch" with every batch done and ends the epoch (again);
        # every rank knows, as every rank computes the running means then
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        mid_epoch = trainer.fit_loop.restarted_mid_epoch
        at_end = mid_epoch and done == trainer.num_training_batches > 0
        self._ending = trainer.current_epoch + 1 if at_end else None
        if not trainer.is_global_zero:
            return
        if path is not None and trainer.current_epoch > 0 and path.exists():
            previous = json.loads(path.read_text())["epochs"]
            kept = self._ending or trainer.current_epoch
            self.epochs = [e for e in previous if e["epoch"] <= kept]
        # resumed inside an epoch, Lightning does not call on_train_epoch_start again
        self._start = time.perf_counter() - self._resumed_seconds
        self._resumed_seconds = 0.0  # counted once, in the resumed epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        """The seconds the epoch in progress has taken (0 between epochs) and the last
        evaluation (a checkpoint written at an evaluation's end precedes the epoch's entry)."""
        running = self._start is not None
        return {
            "epoch_seconds": time.perf_counter() - self._start if running else 0.0,
            "evaluation": self._evaluation,
            "evaluated_at": self._evaluated_at,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resumed_seconds = float(state_dict.get("epoch_seconds", 0.0))
        self._evaluation = dict(state_dict.get("evaluation", {}))
        self._evaluated_at = state_dict.get("evaluated_at")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        self._evaluation = {
            f"{name}_error": round(float(metrics[f"{name}/error"]), 4)
            for name in evaluation_sets(trainer.datamodule)
            if f"{name}/error" in metrics
        }
        self._evaluated_at = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if done < trainer.num_training_batches:
            rank_zero_info(
                f"epoch {epoch} stopped after {done} of {trainer.num_training_batches} batches: "
                f"no entry in {self.filename} (resuming the run completes the epoch)"
            )
            return
        metrics = trainer.callback_metrics
        if self._ending == epoch:  # resumed at this epoch's end: the checkpoint's running means
            self._ending = None  # (computed on every rank: under DDP they sum the ranks' shares)
            with warnings.catch_warnings():  # "compute before update": the states are loaded
                warnings.filterwarnings("ignore", "The ``compute`` method", UserWarning)
                metrics = {name: m.compute() for name, m in pl_module.train_metrics.items()}
            if not trainer.is_global_zero or any(e["epoch"] == epoch for e in self.epochs):
                return
        elif not trainer.is_global_zero:
            return
        sets = evaluation_sets(trainer.datamodule)
        # the evaluation belongs to this epoch if it ran after its last step
        evaluated = self._evaluated_at == trainer.global_step
        entry: dict[str, Any] = {"epoch": epoch}
        if "train/error" in metrics:
            entry["train_error"] = round(float(metrics["train/error"]), 4)
        for name in sorted(sets, key=("test", "val").index):
            key = f"{name}_error"
            entry[key] = self._evaluation.get(key) if evaluated else None
        if "train/loss" in metrics:
            entry["train_loss"] = round(float(metrics["train/loss"]), 4)
        if "train/free_change" in metrics:
            entry["free_change"] = float(f"{float(metrics['train/free_change']):.4g}")
        entry["seconds"] = round(time.perf_counter() - self._start, 3)
        self._start = None
        self.epochs.append(entry)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "algorithm": pl_module.hparams.get("algorithm"),
            "seed": run_seed(),
            "sets": {f"{name}_error": what for name, what in sets.items()},
            "epochs": self.epochs,
        }
        write_json_atomic(self.path, payload)
