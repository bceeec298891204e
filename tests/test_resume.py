"""An interrupted run resumed with `--ckpt_path last` ends exactly as an uninterrupted one."""

import json
import os
import random
import signal as signal_
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from eqprop_lightning.callbacks import resume
from eqprop_lightning.callbacks.results import ResultsWriter
from eqprop_lightning.cli import main
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.rng import capture_rng_states, restore_rng_states
from tests.test_rule_options import batches, fit, model

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


def assert_resumed_like_straight(runs: Path, keys: tuple[str, ...]) -> None:
    """``runs/cut`` (interrupted, then resumed) ended as ``runs/straight``: epochs 1-3, each
    epoch's ``keys`` and the final weights."""
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )
    assert [e["epoch"] for e in resumed] == [1, 2, 3]
    for key in keys:
        assert [e[key] for e in resumed] == [e[key] for e in straight], key
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "optimizer",
    [
        [],  # plain SGD: no optimizer state to lose
        # Adam's moments and the cosine schedule's epoch count (the IMDB/SNLI settings)
        [
            "--model.optimizer",
            "adam",
            "--model.lrs",
            "[0.001, 0.0005]",
            "--model.cosine_t_max",
            "2",
        ],
    ],
    ids=["sgd", "adam-cosine"],
)
def test_resume_equals_uninterrupted_run(fake_mnist, tmp_path, monkeypatch, optimizer):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), *optimizer]
    main([*args, "--trainer.max_epochs", "3", "--trainer.logger.init_args.version", "straight"])
    main([*args, "--trainer.max_epochs", "1", "--trainer.logger.init_args.version", "cut"])
    main([*args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])  # picks runs/p1h/cut

    runs = tmp_path / "runs" / "p1h"
    assert sorted(p.name for p in runs.iterdir()) == ["cut", "straight"]
    assert_resumed_like_straight(runs, ("test_error",))
    saved = [torch.load(runs / v / "checkpoints" / "last.ckpt") for v in ("straight", "cut")]
    assert bool(saved[0]["optimizer_states"][0]["state"]) == bool(optimizer)  # Adam's moments
    assert saved[0]["lr_schedulers"] == saved[1]["lr_schedulers"]
    assert_same_optimizer_state(*(s["optimizer_states"][0] for s in saved))


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    """Same per-parameter buffers (Adam's moments, bitwise) and the same learning rates."""
    assert [g["lr"] for g in a["param_groups"]] == [g["lr"] for g in b["param_groups"]]
    assert a["state"].keys() == b["state"].keys()
    for index, buffers in a["state"].items():
        assert buffers.keys() == b["state"][index].keys()
        for name, value in buffers.items():
            torch.testing.assert_close(b["state"][index][name], value, rtol=0, atol=0)


@pytest.mark.parametrize("stop", ["max_steps", "max_time"])
def test_resume_after_a_max_steps_or_max_time_stop_completes_the_epoch(
    fake_mnist, tmp_path, monkeypatch, stop
):
    """A run stopped inside epoch 2 by max_steps (step 7 of 5 a epoch) or max_time resumes
    inside it: the old last.ckpt, written at the cut-short epoch's end, marked the epoch done,
    so the resumed run skipped its last batches (and went on to epoch 3 with other weights)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "3"]
    main([*args, "--trainer.logger.init_args.version", "straight"])
    cut = {
        "max_steps": ["--trainer.max_steps", "7"],
        "max_time": [
            "--trainer.max_time",
            "00:00:00:02",
            "--trainer.callbacks+=tests.test_evaluation.SlowBatch",
        ],
    }[stop]
    main([*args, *cut, "--trainer.logger.init_args.version", "cut"])
    runs = tmp_path / "runs" / "p1h"
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 7)  # 2 of epoch 2's 5 batches
    main([*args, "--ckpt_path", "last"])  # picks runs/p1h/cut, the newest

    assert_resumed_like_straight(runs, ("test_error", "train_error"))


@pytest.mark.parametrize(
    ("extra", "stop", "saved_step"),
    [
        # max_steps falls on an epoch's last batch: the epoch ends as usual and is saved done
        ([], ["--trainer.max_steps", "10"], 10),
        # no evaluation: the epoch's end, not the evaluation's, would save the cut-short epoch
        (["--trainer.limit_val_batches", "0"], ["--trainer.max_steps", "7"], 7),
    ],
)
def test_a_max_steps_stop_at_an_epochs_end_or_without_evaluation_resumes_exactly(
    fake_mnist, tmp_path, monkeypatch, extra, stop, saved_step
):
    """The two max_steps stops the mid-epoch test leaves out resume exactly too (Lightning's
    checkpoint callback saves once per global step, so the epoch-end save of a cut-short epoch
    is skipped either way)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "3", *extra]
    main([*args, "--trainer.logger.init_args.version", "straight"])
    main([*args, *stop, "--trainer.logger.init_args.version", "cut"])
    runs = tmp_path / "runs" / "p1h"
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == saved_step
    main([*args, "--ckpt_path", "last"])
    assert_resumed_like_straight(runs, ("train_error",))


def test_a_stop_inside_the_first_epoch_names_the_checkpoint_it_wrote(
    fake_mnist, tmp_path, monkeypatch, caplog
):
    """max_steps inside the first epoch saves last.ckpt there (resumable), and the end of fit
    names it: it said "none written", as the mid-epoch save set no path the CLI read."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    with caplog.at_level("INFO"):
        main([*small_fit(fake_mnist), "--trainer.max_epochs", "1", "--trainer.max_steps", "2"])
    last = Path("runs/p1h/version_0/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert f"last checkpoint: {last}\n" in caplog.text + "\n"


def resume_a_copy_elsewhere(tmp_path: Path, args: list[str], caplog) -> None:
    """Resumes a copy of runs/p1h/version_0's last.ckpt after the runs moved away (as on
    another machine); ``caplog`` holds that fit's log only."""
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes((tmp_path / "runs/p1h/version_0/checkpoints/last.ckpt").read_bytes())
    (tmp_path / "runs").rename(tmp_path / "elsewhere")
    caplog.clear()
    with caplog.at_level("INFO"):
        main([*args, "--ckpt_path", str(copy)])


def test_resuming_a_finished_run_elsewhere_names_no_file_it_did_not_write(
    fake_mnist, tmp_path, monkeypatch, caplog
):
    """A copy of a finished run's last.ckpt, resumed with the same max_epochs, trains nothing:
    the end of fit says so instead of naming a results.json that was never written, or the
    last.ckpt of the run the copy came from (restored with the callback's state), which is
    not there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "1"]
    main(args)
    resume_a_copy_elsewhere(tmp_path, args, caplog)
    assert "results: none written (no epoch completed; max_epochs=1)" in caplog.text
    assert "last checkpoint: none written" in caplog.text
    assert "version_0/checkpoints/last.ckpt" not in caplog.text
    assert list((tmp_path / "runs").glob("*/*/results.json")) == []


def test_resuming_a_finished_run_with_a_split_elsewhere_names_no_best_checkpoint(
    fake_mnist, tmp_path, monkeypatch, caplog
):
    """With a validation split, the resumed best-checkpoint callback holds the path of the
    run the copy came from, which is not there: the end of fit names no best checkpoint (nor
    reads that file for its epoch)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "1", "--data.val_split", "20"]
    with caplog.at_level("INFO"):
        main(args)
    best = Path("runs/p1h/version_0/checkpoints/epoch000.ckpt")
    assert f"best checkpoint by val/error: {best} (epoch 1 of results.json)" in caplog.text
    resume_a_copy_elsewhere(tmp_path, args, caplog)
    assert "best checkpoint by val/error: None\n" in caplog.text + "\n"
    assert "epoch000.ckpt" not in caplog.text


class Interrupt(__import__("lightning").Callback):
    """Sends ``signal`` (SIGINT is Ctrl-C) while batch ``batch_idx`` of epoch ``epoch``
    (0-based) trains, or during the first batch of the epoch's evaluation (``batch_idx = -1``);
    ``again``: a second time, during the evaluation's second batch."""

    def __init__(
        self, epoch: int = 1, batch_idx: int = 2, signal: str = "SIGINT", again: bool = False
    ) -> None:
        self.epoch, self.batch_idx, self.signal = epoch, batch_idx, getattr(signal_, signal)
        self.again = again

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch_idx):
            signal_.raise_signal(self.signal)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or (trainer.current_epoch, self.batch_idx) != (self.epoch, -1):
            return
        if batch_idx == 0 or (batch_idx == 1 and self.again):
            signal_.raise_signal(self.signal)


@pytest.mark.parametrize(
    ("signal", "batch_idx", "test_batch_size", "again", "saved_step"),
    [
        ("SIGINT", 0, 100, False, 5 + 1),  # Ctrl-C: stops after the batch in progress, mid-epoch
        ("SIGINT", 2, 100, False, 5 + 3),
        ("SIGTERM", 2, 100, False, 5 + 3),
        ("SIGINT", 4, 100, False, 10),  # in the last batch: after the (one-batch) evaluation
        # a stop in the last batch or during the (3-batch) evaluation waits for its end: the
        # epoch's training is saved (Lightning would stop inside it, losing the epoch)
        ("SIGINT", 4, 10, False, 10),
        ("SIGTERM", -1, 10, False, 10),
        ("SIGINT", -1, 10, False, 10),
        # a second stop during the evaluation stops inside it: epoch 1's checkpoint is kept
        ("SIGTERM", -1, 10, True, 5),
        ("SIGINT", -1, 10, True, 5),
    ],
)
def test_interrupt_then_resume_equals_uninterrupted_run(
    fake_mnist,
    tmp_path,
    monkeypatch,
    caplog,
    capsys,
    signal,
    batch_idx,
    test_batch_size,
    again,
    saved_step,
):
    """A stop leaves last.ckpt; resuming from it trains on the batches the uninterrupted run
    sees and ends with identical weights and results (deterministic algorithms on)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [
        *small_fit(fake_mnist), "--trainer.max_epochs", "3", "--trainer.deterministic", "true",
        "--data.test_batch_size", str(test_batch_size), "--trainer.limit_val_batches", "3",
    ]  # fmt: skip
    main([*args, "--trainer.logger.init_args.version", "straight"])
    interrupt = [
        "--trainer.callbacks+=tests.test_resume.Interrupt",
        f"--trainer.callbacks.init_args.batch_idx={batch_idx}",
        f"--trainer.callbacks.init_args.signal={signal}",
        f"--trainer.callbacks.init_args.again={again}",
        "--trainer.logger.init_args.version=cut",
    ]
    with pytest.raises(SystemExit) as stop, caplog.at_level("INFO"):
        main([*args, *interrupt])
    assert stop.value.code == 1
    # a second Ctrl-C is Lightning's KeyboardInterrupt exit, which prints its own line
    errors = [line for line in capsys.readouterr().err.splitlines() if "eqprop: error" in line]
    assert (
        errors == []
        if (signal, again) == ("SIGINT", True)
        else errors
        == [
            "eqprop: error: stopped by Ctrl-C or SIGTERM; continue with "
            "`eqprop fit --config ... --ckpt_path last` (the same options)"
        ]
    )
    runs = tmp_path / "runs" / "p1h"
    end = "stopped after epoch 2, saved in runs/p1h/cut/checkpoints/last.ckpt"
    assert (end in caplog.text) == (saved_step == 10)
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == saved_step  # 5 batches per epoch
    main([*args, "--ckpt_path", "last"])
    assert_resumed_like_straight(runs, ("train_error", "test_error", "train_loss"))
    assert torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize(("again", "saved_step"), [(False, 5 + 2), (True, 5)])
def test_a_stop_during_a_mid_epoch_evaluation_waits_for_its_end(
    fake_mnist, tmp_path, monkeypatch, caplog, again, saved_step
):
    """With an evaluation every 2 training batches (none at the epoch's end), a first SIGTERM
    during epoch 1's first evaluation stops after it, inside the epoch, and saves there; a
    second one stops inside the evaluation and keeps epoch 0's checkpoint (at its end, after its
    5th batch). Either resumes to the uninterrupted run's weights."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [
        *small_fit(fake_mnist), "--trainer.max_epochs", "3", "--trainer.deterministic", "true",
        "--data.test_batch_size", "10", "--trainer.limit_val_batches", "3",
        "--trainer.val_check_interval", "2",
    ]  # fmt: skip
    main([*args, "--trainer.logger.init_args.version", "straight"])
    interrupt = [
        "--trainer.callbacks+=tests.test_resume.Interrupt",
        "--trainer.callbacks.init_args.batch_idx=-1",
        "--trainer.callbacks.init_args.signal=SIGTERM",
        f"--trainer.callbacks.init_args.again={again}",
        "--trainer.logger.init_args.version=cut",
    ]
    with pytest.raises(SystemExit), caplog.at_level("INFO"):
        main([*args, *interrupt])
    assert "stopping after this evaluation" in caplog.text
    runs = tmp_path / "runs" / "p1h"
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == saved_step
    main([*args, "--ckpt_path", "last"])
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))


class SanityInterrupt(__import__("lightning").Callback):
    """Sends ``signal`` during the first batch of the sanity check."""

    def __init__(self, signal: str = "SIGINT") -> None:
        self.signal = getattr(signal_, signal)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking and batch_idx == 0:
            signal_.raise_signal(self.signal)


@pytest.mark.parametrize("signal", ["SIGINT", "SIGTERM"])
def test_a_stop_during_the_sanity_check_stops_there(
    fake_mnist, tmp_path, monkeypatch, caplog, capsys, signal
):
    """The sanity check runs before training: a stop there is not deferred (nothing could be
    saved), the run ends with status 1 and no checkpoint (the error line says to run it again,
    not to resume what is not there), and Ctrl-C and SIGTERM are left as they were."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    handlers = signal_.getsignal(signal_.SIGINT), signal_.getsignal(signal_.SIGTERM)
    args = [
        *small_fit(fake_mnist), "--trainer.max_epochs", "2", "--data.test_batch_size", "10",
        "--trainer.limit_val_batches", "3", "--trainer.num_sanity_val_steps", "2",
        "--trainer.callbacks+=tests.test_resume.SanityInterrupt",
        f"--trainer.callbacks.init_args.signal={signal}",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stop, caplog.at_level("INFO"):
        main(args)
    assert stop.value.code == 1
    assert "stopping after this evaluation" not in caplog.text
    assert "no checkpoint was written before the stop" in caplog.text
    assert list(tmp_path.rglob("*.ckpt")) == []
    # Ctrl-C before training is Lightning's KeyboardInterrupt exit, which prints its own line
    errors = [line for line in capsys.readouterr().err.splitlines() if "eqprop: error" in line]
    assert (
        errors == []
        if signal == "SIGINT"
        else errors
        == [
            "eqprop: error: stopped by Ctrl-C or SIGTERM before any checkpoint was written: "
            "run it again"
        ]
    )
    assert (signal_.getsignal(signal_.SIGINT), signal_.getsignal(signal_.SIGTERM)) == handlers


def test_an_ignored_ctrl_c_stays_ignored(fake_mnist, tmp_path, monkeypatch):
    """A run started with SIGINT ignored (``nohup``, a shell's background job) keeps ignoring
    Ctrl-C, as Python does: the run ends as planned, and SIGINT is still ignored after it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    signal_.signal(signal_.SIGINT, signal_.SIG_IGN)  # conftest restores it after the test
    main([
        *small_fit(fake_mnist), "--trainer.max_epochs", "2",
        "--trainer.callbacks+=tests.test_resume.Interrupt",
    ])  # fmt: skip
    assert signal_.getsignal(signal_.SIGINT) == signal_.SIG_IGN
    saved = torch.load("runs/p1h/version_0/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 10


#: a fake ``time.perf_counter`` for the results writer: every training batch takes one second
#: (:class:`Tick`), evaluation none
CLOCK = {"now": 0.0}


class Tick(__import__("lightning").Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        CLOCK["now"] += 1.0


@pytest.mark.parametrize("batch_idx", [0, 2])
def test_a_resumed_epoch_counts_its_seconds_before_the_stop(
    fake_mnist, tmp_path, monkeypatch, batch_idx
):
    """An epoch of 5 one-second batches takes 5 s, whether or not a stop cuts it: the time
    before the stop travels in the checkpoint (the resumed process's clock starts elsewhere),
    and counts once: the epoch after the resumed one counted it again (P-conv's epoch 18: 75
    minutes written for 46 of training)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    monkeypatch.setattr("eqprop_lightning.callbacks.results.time", type("Clock", (), {}))
    monkeypatch.setattr(
        "eqprop_lightning.callbacks.results.time.perf_counter", lambda: CLOCK["now"], raising=False
    )
    args = [*small_fit(fake_mnist), "--trainer.max_epochs", "3"]
    args += ["--trainer.callbacks+=tests.test_resume.Tick"]
    CLOCK["now"] = 0.0
    main([*args, "--trainer.logger.init_args.version", "straight"])
    interrupt = [
        "--trainer.callbacks+=tests.test_resume.Interrupt",
        f"--trainer.callbacks.init_args.batch_idx={batch_idx}",
        "--trainer.logger.init_args.version=cut",
    ]
    with pytest.raises(SystemExit):
        main([*args, *interrupt])
    CLOCK["now"] = 1.0e6  # another process: its monotonic clock has another origin
    main([*args, "--ckpt_path", "last"])
    runs = tmp_path / "runs" / "p1h"
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )
    assert [e["seconds"] for e in straight] == [5.0, 5.0, 5.0]
    assert [e["seconds"] for e in resumed] == [5.0, 5.0, 5.0]


#: The best-checkpoint callback's state key in checkpoints written before the validation split
#: (ModelCheckpoint monitoring val/error, which was then the test set).
OLD_BEST_KEY = (
    "ModelCheckpoint{'monitor': 'val/error', 'mode': 'min', 'every_n_train_steps': 0, "
    "'every_n_epochs': 1, 'train_time_interval': None}"
)


def write_the_old_way(run: Path, beta: float) -> None:
    """Rewrite a BPTT run's last.ckpt and results.json as the code before BPTT lost ``beta`` and
    before the validation split wrote them (as a run of benchmarks/table1_queue.sh started then):
    hyperparameters with the config's ``beta`` and ``symmetric: false``, the state of a best
    checkpoint by val/error next to last.ckpt's, and results.json without "sets" and "seed"."""
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["hyper_parameters"]["beta"] is None
    ckpt["hyper_parameters"].update(beta=beta, symmetric=False)
    best = str(run / "checkpoints" / "epoch000.ckpt")
    score = torch.tensor(50.0)
    ckpt["callbacks"][OLD_BEST_KEY] = {
        "monitor": "val/error", "best_model_score": score, "best_model_path": best,
        "current_score": score, "dirpath": str(run / "checkpoints"), "best_k_models": {best: score},
        "kth_best_model_path": best, "kth_value": score, "last_model_path": "",
    }  # fmt: skip
    torch.save(ckpt, ckpt_path)
    torch.save(ckpt, best)
    results = json.loads((run / "results.json").read_text())
    old = {"algorithm": "bptt", "epochs": results["epochs"]}
    (run / "results.json").write_text(json.dumps(old, indent=2))


def test_resume_a_bptt_checkpoint_written_before_bptt_lost_beta(
    fake_mnist, tmp_path, monkeypatch, caplog
):
    """Resumed as the queue does (``--model.algorithm bptt`` on an EP config): the checkpoint's
    beta is dropped with one line, the run goes on exactly, results.json gets the new schema."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--model.algorithm", "bptt", "--trainer.max_epochs"]
    main([*args, "2", "--model.beta", "null", "--trainer.logger.init_args.version", "straight"])
    main([*args, "1", "--model.beta", "null", "--trainer.logger.init_args.version", "cut"])
    runs = tmp_path / "runs" / "p1h"
    write_the_old_way(runs / "cut", beta=0.1)  # p1h.yaml's beta
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main([*args, "2", "--ckpt_path", str(runs / "cut" / "checkpoints" / "last.ckpt")])
    assert "was written before BPTT took no beta/symmetric: dropped its beta=0.1" in caplog.text
    assert not [w for w in caught if "add the following callbacks" in str(w.message)]
    straight, resumed = (json.loads((runs / v / "results.json").read_text()) for v in
                         ("straight", "cut"))  # fmt: skip
    assert resumed["sets"] == straight["sets"] and resumed["seed"] == 0
    drop = ("seconds",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in resumed["epochs"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in straight["epochs"]
    ]
    assert_same_weights(last_weights(runs / "straight"), last_weights(runs / "cut"))
    saved = torch.load(runs / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["beta"] is None and OLD_BEST_KEY not in saved["callbacks"]


def test_a_failed_evaluation_says_nothing_of_checkpoints(tmp_path, caplog):
    """The checkpoint messages of a stopped fit are not printed when `test`, `validate` or
    `predict` fail (they write no checkpoint)."""
    import logging

    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from eqprop_lightning.callbacks.resume import LastCheckpoint

    class Failing(BoringModel):
        def test_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    trainer = L.Trainer(
        callbacks=[LastCheckpoint(dirpath=tmp_path / "checkpoints")], logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.test(Failing())
    assert "checkpoint" not in caplog.text


def test_a_module_built_in_code_saves_a_checkpoint_that_loads_weights_only(fake_mnist, tmp_path):
    """Lightning stored a net passed as a module among the hyperparameters, pickled: its
    checkpoints failed torch.load(weights_only=True) (and with it load_from_checkpoint)."""
    import lightning as L

    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.module import EqPropModule
    from eqprop_lightning.nets import PrototypicalFC

    def net():
        return PrototypicalFC([10, 16, 784])

    model = EqPropModule(net(), [0.1, 0.05], T=5, K=2, beta=0.5)
    data = MNISTDataModule(str(fake_mnist), batch_size=10, verify_checksums=False)
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)
    assert "net" not in saved["hyper_parameters"] and saved["hyper_parameters"]["T"] == 5
    loaded = EqPropModule.load_from_checkpoint(path, net=net())
    assert (loaded.hparams.T, loaded.hparams.beta) == (5, 0.5)
    assert_same_weights(model.state_dict(), loaded.state_dict())


def test_a_loaded_cli_checkpoint_saves_one_that_loads_without_a_net(fake_mnist, tmp_path):
    """load_from_checkpoint built the CLI checkpoint's net and dropped its description, so that
    a checkpoint saved by the loaded module (fine-tuned in code) needed ``net=`` to load. Given
    a ``net``, the description is not kept (it might not be that net's)."""
    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.module import EqPropModule
    from eqprop_lightning.nets import PrototypicalFC

    shipped = Path(__file__).resolve().parents[1] / "checkpoints/shipped/p1h-ep-s0.ckpt"
    model = EqPropModule.load_from_checkpoint(shipped, weights_only=True)
    described = torch.load(shipped, weights_only=True)["hyper_parameters"]["net"]
    assert model.hparams["net"] == described
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=MNISTDataModule(str(fake_mnist), verify_checksums=False))
    path = tmp_path / "fine-tuned.ckpt"
    trainer.save_checkpoint(path)
    again = EqPropModule.load_from_checkpoint(path, weights_only=True)
    assert again.hparams["net"] == described and isinstance(again.net, PrototypicalFC)
    assert_same_weights(model.state_dict(), again.state_dict())
    given = EqPropModule.load_from_checkpoint(
        shipped, net=PrototypicalFC([10, 512, 784], dt=0.5), weights_only=True
    )
    assert "net" not in given.hparams
    with pytest.raises(TypeError, match="cannot be called on an instance"):
        model.load_from_checkpoint(shipped)  # Lightning's guard, kept


def test_a_net_given_as_a_module_draws_no_advice_to_ignore_it():
    """Lightning warned on every module built in code, and on every load_from_checkpoint of a
    CLI checkpoint, to ``ignore=['net']`` in save_hyperparameters: advice the module already
    follows (it drops the net from its hyperparameters, keeping the CLI's description)."""
    import warnings

    from eqprop_lightning.module import EqPropModule
    from eqprop_lightning.nets import PrototypicalFC

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = EqPropModule(PrototypicalFC([10, 16, 784]), [0.1, 0.05], T=5, K=2, beta=0.5)
    assert "net" not in model.hparams
    assert [str(w.message) for w in caught if "nn.Module" in str(w.message)] == []


def test_a_module_used_from_code_checks_its_data(fake_mnist, tmp_path):
    """Outside the CLI, a net that does not fit the data module, or class-index targets, gave a
    torch shape error deep in the relaxation, or (indices broadcast against the output) none."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.errors import ConfigError, DataError
    from eqprop_lightning.module import EqPropModule
    from eqprop_lightning.nets import PrototypicalFC

    def trainer():
        return L.Trainer(
            max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path,
        )  # fmt: skip

    data = MNISTDataModule(str(fake_mnist), batch_size=10, verify_checksums=False)
    five_outputs = EqPropModule(PrototypicalFC([5, 16, 784]), [0.1, 0.05], T=5, K=2, beta=0.5)
    with pytest.raises(ConfigError, match="has 5 output units .* but MNISTDataModule has 10"):
        trainer().fit(five_outputs, datamodule=data)
    model = EqPropModule(PrototypicalFC([10, 16, 784]), [0.1, 0.05], T=5, K=2, beta=0.5)
    indices = TensorDataset(torch.rand(10, 784), torch.arange(10))  # B = classes: broadcasts
    with pytest.raises(DataError, match=r"targets of shape \(10,\) and dtype torch.int64"):
        trainer().fit(model, DataLoader(indices, batch_size=10))
    # float64 one-hot targets (numpy's np.eye(10)[labels]) for a float32 net: the nudge promoted
    # the output state to float64 and EP's next step failed on a dtype mismatch (BPTT trained)
    targets = torch.eye(10, dtype=torch.float64)
    wrong_dtype = "targets of dtype torch.float64 for a net of torch.float32"
    with pytest.raises(DataError, match=wrong_dtype):
        trainer().fit(model, DataLoader(TensorDataset(torch.rand(10, 784), targets), batch_size=10))


def test_a_fit_resumed_from_code_refuses_other_settings(fake_mnist, tmp_path):
    """``Trainer.fit(model, data, ckpt_path=...)`` with another beta, or another batch size, went
    on silently with the ones given (only the CLI compared them with the checkpoint's); a net
    of other shapes is named too."""
    import lightning as L

    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.errors import ConfigError
    from eqprop_lightning.module import EqPropModule
    from eqprop_lightning.nets import PrototypicalFC

    def fit(beta: float, batch_size: int, ckpt_path: Path | None = None, hidden=16) -> None:
        net = PrototypicalFC([10, hidden, 784])
        model = EqPropModule(net, (0.1, 0.05), T=5, K=2, beta=beta)
        data = MNISTDataModule(str(fake_mnist), batch_size=batch_size, verify_checksums=False)
        trainer = L.Trainer(
            max_epochs=2 if ckpt_path else 1, limit_train_batches=2, limit_val_batches=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        if ckpt_path is None:
            trainer.save_checkpoint(tmp_path / "run.ckpt")

    fit(beta=0.5, batch_size=10)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(ConfigError, match=r"model.beta: 0.5 there, 0.2 here"):
        fit(beta=0.2, batch_size=10, ckpt_path=ckpt)
    with pytest.raises(ConfigError, match=r"data.init_args.batch_size: 10 there, 20 here"):
        fit(beta=0.5, batch_size=20, ckpt_path=ckpt)
    # a net built in code is not a hyperparameter: its weights' shapes are compared (it was
    # torch's multi-line size-mismatch RuntimeError)
    with pytest.raises(ConfigError, match=r"net.weights.0.weight: \(10, 16\) there, \(10, 8\)"):
        fit(beta=0.5, batch_size=10, ckpt_path=ckpt, hidden=8)
    fit(beta=0.5, batch_size=10, ckpt_path=ckpt)  # the same settings resume (lrs as a tuple)


def test_the_weights_check_names_four_differences_and_counts_the_others():
    from eqprop_lightning.errors import ConfigError
    from eqprop_lightning.validation import check_same_weights

    saved = {f"w{i}": torch.zeros(2) for i in range(7)}
    with pytest.raises(ConfigError, match=r"w3: \(2,\) there, \(3,\) here; and 3 more\)"):
        check_same_weights("x.ckpt", saved, {f"w{i}": torch.zeros(3) for i in range(7)})


def test_a_checkpoint_without_the_running_means_still_resumes(fake_mnist, tmp_path):
    """Checkpoints written before the epoch's running means were stored (mid-epoch resume) lack
    their entries; torchmetrics loads them without, so they resumed. The weights' check compares
    the net's entries, not the running means."""
    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.nets import PrototypicalFC

    def fit(ckpt_path: Path | None = None) -> L.Trainer:
        model = EqPropModule(PrototypicalFC([10, 16, 784]), [0.1, 0.05], T=5, K=2, beta=0.5)
        trainer = L.Trainer(
            max_epochs=2 if ckpt_path else 1, limit_train_batches=2, limit_val_batches=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path,
        )  # fmt: skip
        data = MNISTDataModule(str(fake_mnist), batch_size=10, verify_checksums=False)
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
        return trainer

    fit().save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=True)
    means = [k for k in checkpoint["state_dict"] if not k.startswith("net.")]
    assert means  # train_error.mean_value, ...: what an older checkpoint lacks
    for key in means:
        del checkpoint["state_dict"][key]
    torch.save(checkpoint, tmp_path / "older.ckpt")
    assert fit(tmp_path / "older.ckpt").current_epoch == 2


@pytest.mark.parametrize(
    ("current_epoch", "batches_done", "mid_epoch", "kept"),
    [
        (0, 0, False, 0),
        (1, 0, False, 1),
        (3, 0, False, 3),
        (1, 3, True, 1),  # inside epoch 2
        (1, 5, True, 2),  # at the evaluation ending epoch 2, before its entry
        (2, 5, False, 2),  # after epoch 2's end (Lightning's batch count is not reset yet)
    ],
)
def test_a_resume_keeps_only_the_epochs_its_checkpoint_had(
    tmp_path, current_epoch, batches_done, mid_epoch, kept
):
    """results.json written after the checkpoint (a stop between the two writes) is cut back to
    the checkpoint's epochs when the run resumes: the epochs after it are trained again. A
    checkpoint with every batch of its epoch done (written at the evaluation ending it) keeps
    that epoch's entry too."""
    writer = ResultsWriter()
    writer.path = tmp_path / "results.json"
    epochs = [{"epoch": e, "test_error": 10.0 - e} for e in (1, 2, 3)]
    writer.path.write_text(json.dumps({"epochs": epochs}))
    progress = SimpleNamespace(current=SimpleNamespace(completed=batches_done))
    trainer = SimpleNamespace(
        current_epoch=current_epoch,
        is_global_zero=True,
        num_training_batches=5,
        fit_loop=SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=progress), restarted_mid_epoch=mid_epoch
        ),
    )
    writer.on_train_start(trainer, None)
    assert writer.epochs == epochs[:kept]


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def test_captured_random_states_restore_every_generator(tmp_path):
    """What a checkpoint stores (saved and loaded weights_only) puts back the torch, Python and
    NumPy generators."""
    torch.save({"rng_states": capture_rng_states()}, tmp_path / "c.ckpt")
    expected = draws()
    draws()  # move every generator on
    restore_rng_states(torch.load(tmp_path / "c.ckpt", weights_only=True)["rng_states"])
    assert draws() == expected


def test_a_resume_restores_the_checkpoints_random_states(tmp_path, monkeypatch):
    """``on_train_start`` of a resumed fit puts back the states saved in the checkpoint, so that
    whatever draws from the global generators while training draws as the uninterrupted run
    (the shipped rules and the shuffles have generators of their own)."""
    trainer = fit(model(beta=0.5), epochs=1)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    expected = draws()  # the draws that follow the saved states
    torch.manual_seed(123), random.seed(123), np.random.seed(123)  # as another process
    seen = []
    start = EqPropModule.on_train_start

    def start_then_draw(self):
        start(self)
        seen.append(draws())

    monkeypatch.setattr(EqPropModule, "on_train_start", start_then_draw)
    resumed = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    data = DataLoader(batches(), batch_size=None)
    resumed.fit(model(beta=0.5), data, ckpt_path=tmp_path / "one.ckpt")
    assert seen == [expected]


def test_atomic_checkpoint_io_renames_a_local_temporary_file_only(tmp_path, monkeypatch):
    """A local checkpoint is written to a temporary file beside it, then renamed over it; a
    remote path (``memory://``) is left to Lightning, with no rename."""
    renames, real_replace = [], os.replace

    def replace(src, dst):
        renames.append((Path(src).parent, Path(src).name, str(dst), Path(src).is_file()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    io = resume.AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 3}, path)
    ((folder, name, target, was_written),) = renames
    assert (folder, target, was_written) == (tmp_path, str(path), True)
    assert name.startswith(".last.ckpt.") and name.endswith(".tmp")
    assert torch.load(path, weights_only=True) == {"epoch": 3}
    assert list(tmp_path.iterdir()) == [path]
    io.save_checkpoint({"epoch": 4}, "memory://eqprop-audit/last.ckpt")
    assert len(renames) == 1


@pytest.mark.parametrize("crash_before_entry", [False, True])
def test_an_epoch_saved_at_its_evaluation_keeps_its_results_entry(
    fake_mnist, tmp_path, monkeypatch, crash_before_entry
):
    """With check_val_every_n_epoch 2, epoch 2's last.ckpt is written at its evaluation's end,
    before the epoch's results entry; Lightning resumes such a checkpoint at the epoch's end and
    ends the epoch again: the entry stays as the uninterrupted run wrote it (it was replaced by
    one without errors). Also when the run stopped between the checkpoint and the entry (the
    entry is then written from the checkpoint's evaluation and running means)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    args = [*small_fit(fake_mnist), "--trainer.check_val_every_n_epoch", "2"]
    main([*args, "--trainer.max_epochs", "3", "--trainer.logger.init_args.version", "straight"])
    main([*args, "--trainer.max_epochs", "2", "--trainer.logger.init_args.version", "cut"])
    runs = tmp_path / "runs" / "p1h"
    if crash_before_entry:  # as if the process ended between the checkpoint and the entry
        results = json.loads((runs / "cut" / "results.json").read_text())
        results["epochs"] = results["epochs"][:1]
        (runs / "cut" / "results.json").write_text(json.dumps(results))
    main([*args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    straight, resumed = (
        json.loads((runs / v / "results.json").read_text())["epochs"] for v in ("straight", "cut")
    )

    def numbers(epochs: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]

    assert numbers(resumed) == numbers(straight)
    assert [e["test_error"] is None for e in straight] == [True, False, True]


@pytest.mark.parametrize(
    "evaluation",
    [["--trainer.check_val_every_n_epoch", "2"], ["--trainer.val_check_interval", "2"]],
)
def test_every_epoch_end_is_saved_without_an_evaluation_there(
    fake_mnist, tmp_path, monkeypatch, evaluation
):
    """An epoch whose end has no evaluation (every second epoch evaluated, or evaluations every
    2 of its 5 batches) is saved at its end too: after 3 epochs, last.ckpt holds the third, all
    15 steps."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    main([*small_fit(fake_mnist), "--trainer.max_epochs", "3", *evaluation])
    saved = torch.load(tmp_path / "runs/p1h/version_0/checkpoints/last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (2, 15)


def test_an_interrupted_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """A slimmed checkpoint and the predictions file are written beside and renamed: a save cut
    short (torch.save stopped after writing part of its file) leaves the previous file as it
    was, and no temporary file (before, both wrote into the file itself)."""
    from eqprop_lightning.callbacks import PredictionWriter
    from eqprop_lightning.shipped import slim

    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "optimizer_states": [{}]}, ckpt)
    out, predictions = tmp_path / "slim.ckpt", tmp_path / "predictions.pt"
    for path in (out, predictions):
        path.write_bytes(b"previous")

    def cut_short(obj, name) -> None:
        Path(name).write_bytes(b"part of it")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    trainer = SimpleNamespace(log_dir=None, default_root_dir=str(tmp_path), world_size=1)
    batch = {"prediction": torch.zeros(2, dtype=torch.long), "output": torch.zeros(2, 10)}
    writes = [
        lambda: slim(ckpt, out),
        lambda: PredictionWriter().write_on_epoch_end(trainer, None, [batch], []),
    ]
    for write in writes:
        with pytest.raises(KeyboardInterrupt):
            write()
    assert out.read_bytes() == predictions.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.pt", "run", "slim.ckpt"]
