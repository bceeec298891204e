"""``eqprop predict``'s output file: every example's predicted class and output state."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from eqprop_lightning.io import check_file_to_write, write_atomic


class PredictionWriter(BasePredictionWriter):
    """Writes the ``predict_step`` results of all batches, concatenated in the order of the data
    module's ``predict_dataloader``, to ``path`` (default ``<run directory>/predictions.pt``):
    ``{"prediction": (N,) class indices, "output": (N, classes) output states, "index": (N,)
    each row's example in the dataset, "name": N strings, where each example comes from}``
    (``index`` where Lightning knows it: a ``DataLoader``; ``name`` where the dataset names its
    examples, as the text data modules do: ``aclImdb/test/neg/0_2.txt``,
    ``snli_1.0/snli_1.0_test.jsonl:12``). Under DDP each rank writes its share to ``<path
    stem>.rank<r>.pt``: examples ``r``, ``r + world size``, ... of the set, as ``index``
    says."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.path = path

    def _file(self, trainer: L.Trainer) -> Path:
        """The file this rank writes."""
        run_dir = trainer.log_dir or trainer.default_root_dir  # no logger: fast_dev_run, false
        path = Path(self.path) if self.path else Path(run_dir) / "predictions.pt"
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Before predicting: ``ConfigError`` if the file cannot be written, being a directory
        or under a regular file (rather than failing after the whole set is predicted)."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        path = self._file(trainer)
        given = f"--predictions.path {self.path}" if self.path else f"predictions file {path}"
        if self.path and path != Path(self.path):  # under DDP
            given += f": rank {trainer.global_rank}'s file {path}"
        check_file_to_write(path, given, "predictions.pt")

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices
    ) -> None:
        path = self._file(trainer)
        if predictions and isinstance(predictions[0], list):  # several loaders: the first
            predictions = predictions[0]
        merged = {key: torch.cat([b[key] for b in predictions]) for key in predictions[0]}
        indices = batch_indices[0] if batch_indices else []  # per loader, per batch
        if indices:
            merged["index"] = torch.tensor([i for batch in indices for i in batch])
            loader = trainer.predict_dataloaders
            dataset = (loader[0] if isinstance(loader, (list, tuple)) else loader).dataset
            if (names := getattr(dataset, "names", None)) is not None:
                merged["name"] = [names[i] for i in merged["index"].tolist()]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda name: torch.save(merged, name))
        rank_zero_info(f"predictions of {len(merged['prediction'])} examples: {path}")
