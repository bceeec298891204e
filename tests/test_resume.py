"""An interrupted run resumed with `--ckpt_path last` ends exactly as an uninterrupted one."""

import json
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
    weights = [
        torch.load(runs / v / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for v in ("straight", "cut")
    ]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=0, atol=0)


class Interrupt(__import__("lightning").Callback):
    """Presses Ctrl-C in the middle of the second epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(fake_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "3"]
    with pytest.raises(SystemExit):  # Lightning shuts down gracefully, then exits with status 1
        main([*args, "--trainer.callbacks+=tests.test_resume.Interrupt"])
    last = tmp_path / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 5 + 3  # one epoch of 5 batches, then 3 batches
    main([*args, "--ckpt_path", "last"])
    results = json.loads(last.parent.parent.joinpath("results.json").read_text())
    assert [e["epoch"] for e in results["epochs"]] == [1, 2, 3]
    assert torch.load(last, weights_only=True)["epoch"] == 2
