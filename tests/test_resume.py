"""An interrupted run resumed with `--ckpt_path last` ends exactly as an uninterrupted one."""

import json
import signal as signal_
from pathlib import Path

import pytest
import torch

from eqprop_lightning.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist" / "p1h.yaml"


def small_fit(data_dir: Path) -> list[str]:
    """`eqprop fit` of a tiny P-1h on the fake MNIST: 5 batches per epoch."""
    return [
        "fit", "--config", str(CONFIG), "--data.data_dir", str(data_dir),
        "--data.verify_checksums", "false", "--data.batch_size", "10",
        "--model.net.init_args.size_tab", "[10, 16, 784]", "--model.T", "8", "--model.K", "3",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "1",
    ]  # fmt: skip


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, msg=key)


def test_resume_equals_uninterrupted_run(fake_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = small_fit(fake_mnist)
    main([*args, "--trainer.max_epochs", "3", "--trainer.logger.init_args.version", "straight"])
    main([*args, "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "cut"])
    main([*args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])  # picks runs/p1h/cut

    runs = tmp_path / "runs" / "p1h"
    assert sorted(p.name for p in runs.iterdir()) == ["cut", "straight"]
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )
    assert [e["epoch"] for e in resumed] == [1, 2, 3]
    assert [e["test_error"] for e in resumed] == [e["test_error"] for e in straight]
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))


class Interrupt(__import__("lightning").Callback):
    """Sends ``signal`` (SIGINT is Ctrl-C) while batch ``batch_idx`` of epoch ``epoch``
    (0-based) trains, or during the epoch's evaluation (``batch_idx = -1``)."""

    def __init__(self, epoch: int = 1, batch_idx: int = 2, signal: str = "SIGINT") -> None:
        self.epoch, self.batch_idx, self.signal = epoch, batch_idx, getattr(signal_, signal)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch_idx):
            signal_.raise_signal(self.signal)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and (trainer.current_epoch, -1) == (
            self.epoch,
            self.batch_idx,
        ):
            signal_.raise_signal(self.signal)


@pytest.mark.parametrize(
    ("signal", "batch_idx", "test_batch_size", "saved_step"),
    [
        ("SIGINT", 0, 100, 5 + 1),  # Ctrl-C: stops after the batch in progress, mid-epoch
        ("SIGINT", 2, 100, 5 + 3),
        ("SIGTERM", 2, 100, 5 + 3),
        ("SIGINT", 4, 100, 10),  # in the last batch: stops after the (one-batch) evaluation
        ("SIGINT", 4, 10, 5),  # Lightning stops inside the evaluation: epoch 1's checkpoint kept
        ("SIGTERM", -1, 10, 5),
    ],
)
def test_interrupt_then_resume_equals_uninterrupted_run(
    fake_mnist, tmp_path, monkeypatch, signal, batch_idx, test_batch_size, saved_step
):
    """A stop leaves last.ckpt; resuming from it trains on the batches the uninterrupted run
    sees and ends with identical weights and results (deterministic algorithms on)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [
        *small_fit(fake_mnist), "--trainer.max_epochs", "3", "--trainer.deterministic", "true",
        "--data.test_batch_size", str(test_batch_size), "--trainer.limit_val_batches", "2",
    ]  # fmt: skip
    main([*args, "--trainer.logger.init_args.version", "straight"])
    interrupt = [
        "--trainer.callbacks+=tests.test_resume.Interrupt",
        f"--trainer.callbacks.init_args.batch_idx={batch_idx}",
        f"--trainer.callbacks.init_args.signal={signal}",
        "--trainer.logger.init_args.version=cut",
    ]
    with pytest.raises(SystemExit) as stop:
        main([*args, *interrupt])
    assert stop.value.code == 1
    runs = tmp_path / "runs" / "p1h"
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == saved_step  # 5 batches per epoch
    main([*args, "--ckpt_path", "last"])
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )
    assert [e["epoch"] for e in resumed] == [1, 2, 3]
    for key in ("train_error", "test_error", "train_loss"):
        assert [e[key] for e in resumed] == [e[key] for e in straight], key
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))
    assert torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
