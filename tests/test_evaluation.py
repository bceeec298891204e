"""Honest evaluation: the MNIST validation split, which set each number comes from, the best
checkpoint only where there is a validation set, and results.json entries that hold the numbers
of their own epoch (``max_steps``, ``max_time``, ``check_val_every_n_epoch``)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor
from torchvision.datasets import MNIST

from eqprop_lightning.callbacks import AtomicCheckpointIO
from eqprop_lightning.cli import main
from eqprop_lightning.datamodules import MNISTDataModule
from eqprop_lightning.datamodules.mnist_files import split_indices
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.module import EqPropModule, error_percent
from eqprop_lightning.nets import PrototypicalFC
from tests.conftest import FAKE_TEST_SIZE, FAKE_TRAIN_SIZE
from tests.reference import free_steps_by_hand
from tests.test_cli import SMALL_T, config, shrink
from tests.test_mnist_datamodule import _fake_dm as datamodule

VAL = 50  # held-out images of the fake MNIST's 200 training images


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    return tmp_path


def rows(dataset) -> set[bytes]:
    return {x.numpy().tobytes() for x in dataset.tensors[0]}


# ------------------------------------------------------------------------------- the split


def test_val_split_holds_out_seeded_training_images(fake_mnist: Path) -> None:
    full = datamodule(fake_mnist)
    dm = datamodule(fake_mnist, val_split=VAL, split_seed=3)
    assert len(dm.train_set) == FAKE_TRAIN_SIZE - VAL and len(dm.val_set) == VAL
    train, val = rows(dm.train_set), rows(dm.val_set)
    assert train.isdisjoint(val) and train | val == rows(full.train_set)
    # labels travel with their images
    index = {x.numpy().tobytes(): y for x, y in zip(*full.train_set.tensors, strict=True)}
    for x, y in zip(*dm.val_set.tensors, strict=True):
        assert torch.equal(index[x.numpy().tobytes()], y)
    assert rows(datamodule(fake_mnist, val_split=VAL, split_seed=3).val_set) == val
    assert rows(datamodule(fake_mnist, val_split=VAL, split_seed=4).val_set) != val
    assert full.val_set is None and full.train_set.tensors[0].shape[0] == FAKE_TRAIN_SIZE


def test_split_seed_defaults_to_the_run_seed(
    fake_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "4")
    assert rows(datamodule(fake_mnist, val_split=VAL).val_set) == rows(
        datamodule(fake_mnist, val_split=VAL, split_seed=4).val_set
    )
    assert "split_seed 4" in datamodule(fake_mnist, val_split=VAL).evaluation_sets["val"]


def test_evaluation_loaders_are_validation_then_test(fake_mnist: Path) -> None:
    dm = datamodule(fake_mnist, val_split=VAL, test_batch_size=1000)
    assert list(dm.evaluation_sets) == ["val", "test"]
    val, test = dm.val_dataloader()
    assert torch.equal(torch.cat([x for x, _ in val]), dm.val_set.tensors[0])
    assert torch.equal(torch.cat([x for x, _ in test]), dm.test_set.tensors[0])
    # without a split the val loader serves the test set (test_mnist_datamodule checks it)
    assert list(datamodule(fake_mnist).evaluation_sets) == ["test"]


@pytest.mark.parametrize("bad", [FAKE_TRAIN_SIZE, -1])
def test_val_split_out_of_range_is_a_config_error(fake_mnist: Path, bad: int) -> None:
    with pytest.raises(ConfigError, match=f"val_split.*{bad}"):
        datamodule(fake_mnist, val_split=bad)


def test_split_seed_without_a_split_is_a_config_error(fake_mnist: Path) -> None:
    """A seed for a split that holds nothing out would be ignored: refused."""
    with pytest.raises(ConfigError, match="split_seed=3 seeds the validation split"):
        datamodule(fake_mnist, split_seed=3)


# ------------------------------------------------------------------ fit with and without split


def checkpoint_errors(ckpt: Path, dm: MNISTDataModule) -> dict[str, float]:
    """Error (%) of a checkpoint's weights on the validation and the test set, recomputed."""
    saved = torch.load(ckpt, weights_only=True)
    hp = saved["hyper_parameters"]
    model = EqPropModule(
        PrototypicalFC(**hp["net"]["init_args"]), hp["lrs"], hp["algorithm"], hp["T"], hp["K"],
        hp["beta"],
    )  # fmt: skip
    model.load_state_dict(saved["state_dict"])
    return {
        f"{name}_error": float(error_percent(model(s.tensors[0]), s.tensors[1]).mean())
        for name, s in (("val", dm.val_set), ("test", dm.test_set))
    }


def test_fit_with_a_split_logs_both_sets_and_keeps_the_best_by_validation(
    fake_mnist: Path, in_tmp: Path, caplog
) -> None:
    args = [*shrink(fake_mnist, epochs=3), "--trainer.limit_val_batches", "1.0"]
    main(["fit", "--config", config("p1h"), *args, "--data.val_split", str(VAL)])
    run = in_tmp / "runs" / "p1h" / "version_0"
    results = json.loads((run / "results.json").read_text())
    assert results["seed"] == 0
    assert results["sets"] == {
        "val_error": f"{VAL} images held out of the MNIST training set (split_seed 0), "
        "not trained on",
        "test_error": "the MNIST test set (t10k files)",
    }
    epochs = results["epochs"]
    assert [list(e) for e in epochs] == [
        ["epoch", "train_error", "test_error", "val_error", "train_loss", "free_change", "seconds"]
    ] * 3
    # the last epoch's numbers are the errors of last.ckpt's weights on the two sets
    dm = datamodule(fake_mnist, val_split=VAL, split_seed=0)
    expected = checkpoint_errors(run / "checkpoints" / "last.ckpt", dm)
    for key, value in expected.items():
        assert epochs[-1][key] == pytest.approx(value, abs=1e-3), key
    # the best checkpoint is the epoch of the lowest validation error (the first of ties)
    best = min(epochs, key=lambda e: e["val_error"])
    (best_ckpt,) = [p for p in (run / "checkpoints").iterdir() if p.name != "last.ckpt"]
    assert best_ckpt.name == f"epoch{best['epoch'] - 1:03d}.ckpt"
    assert checkpoint_errors(best_ckpt, dm)["val_error"] == pytest.approx(best["val_error"])
    said = f"best checkpoint by val/error: {best_ckpt.relative_to(in_tmp)} (epoch {best['epoch']}"
    assert said + " of results.json)" in caplog.text


def free_phase_by_hand(net: PrototypicalFC, x: Tensor, T: int) -> Tensor:
    """The class ``argmax_c s_0[c]`` after ``T`` free steps from ``s = 0``, relaxed here without
    the module: (B,)."""
    return free_steps_by_hand(net, x, T)[1][0].argmax(1)


def test_evaluation_is_the_free_phase_stepped_by_hand(fake_mnist: Path) -> None:
    """validate, test and predict count the examples whose ``T``-step free phase predicts the
    wrong class. The weights are scaled up so that the free phase still moves at step ``T``:
    ``T - 1`` or ``T + 1`` steps, another start or another layer give other predictions."""
    T = 5
    torch.manual_seed(0)
    net = PrototypicalFC([10, 32, 784])
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(4.0)
    model = EqPropModule(net, [0.1, 0.05], "ep", T=T, K=2, beta=0.5)
    dm = datamodule(fake_mnist, val_split=VAL, test_batch_size=30)  # uneven last batches
    sets = {
        "val": (dm.val_set.tensors[0], dm.val_set.tensors[1].argmax(1)),  # one-hot targets
        "test": (dm.test_set.tensors[0], MNIST(str(fake_mnist), train=False).targets),
    }
    predicted = {name: free_phase_by_hand(net, x, T) for name, (x, _) in sets.items()}
    wrong = {name: int((predicted[name] != y).sum()) for name, (_, y) in sets.items()}
    for name, (x, y) in sets.items():  # the check can tell T - 1 steps from T
        assert int((free_phase_by_hand(net, x, T - 1) != y).sum()) != wrong[name], name
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (val_logged, test_logged) = trainer.validate(model, datamodule=dm, verbose=False)
    (test_only,) = trainer.test(model, datamodule=dm, verbose=False)
    counts = {
        "val": val_logged["val/error"] * VAL / 100,
        "test": test_logged["test/error"] * FAKE_TEST_SIZE / 100,
        "test_step": test_only["test/error"] * FAKE_TEST_SIZE / 100,
    }
    expected = {**wrong, "test_step": wrong["test"]}
    assert counts == pytest.approx(expected, abs=1e-3)  # percent of 50 or 100 examples
    batches = trainer.predict(model, dm.test_dataloader())
    assert torch.equal(torch.cat([b["prediction"] for b in batches]), predicted["test"])


def test_results_json_errors_are_the_cli_free_phase_stepped_by_hand(
    fake_mnist: Path, in_tmp: Path
) -> None:
    """A fit's results.json counts the errors of last.ckpt's net relaxed here for the command
    line's ``T`` (not through the module)."""
    args = [*shrink(fake_mnist, epochs=1), "--trainer.limit_val_batches", "1.0"]
    main(["fit", "--config", config("p1h"), *args, "--data.val_split", str(VAL)])
    run = in_tmp / "runs" / "p1h" / "version_0"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["T"] == SMALL_T
    net = PrototypicalFC(**saved["hyper_parameters"]["net"]["init_args"])
    state = saved["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k[:4] == "net."})
    dm = datamodule(fake_mnist, val_split=VAL, split_seed=0)
    wrong = {
        f"{name}_error": int((free_phase_by_hand(net, s.tensors[0], SMALL_T) != labels).sum())
        for name, s, labels in (
            ("val", dm.val_set, dm.val_set.tensors[1].argmax(1)),
            ("test", dm.test_set, MNIST(str(fake_mnist), train=False).targets),
        )
    }
    sizes = {"val_error": VAL, "test_error": FAKE_TEST_SIZE}
    (epoch,) = json.loads((run / "results.json").read_text())["epochs"]
    counts = {key: epoch[key] * sizes[key] / 100 for key in wrong}
    assert counts == pytest.approx(wrong, abs=1e-3)


def test_fit_without_a_split_calls_nothing_best(fake_mnist: Path, in_tmp: Path, caplog) -> None:
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist)])
    run = in_tmp / "runs" / "p1h" / "version_0"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]
    results = json.loads((run / "results.json").read_text())
    assert list(results["sets"]) == ["test_error"]
    assert all("val_error" not in e for e in results["epochs"])
    assert "best checkpoint by val/error:" not in caplog.text and "epoch00" not in caplog.text
    assert "no validation set: no best checkpoint by val/error, only last.ckpt" in caplog.text
    last = (run / "checkpoints" / "last.ckpt").relative_to(in_tmp)
    assert f"last checkpoint: {last}" in caplog.text
    caplog.clear()  # test writes no checkpoint: nothing to say about them
    main(["test", "--config", config("p1h"), *shrink(fake_mnist), "--ckpt_path", str(last)])
    assert "no best checkpoint" not in caplog.text


def test_validate_with_a_split_evaluates_both_sets(
    fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*shrink(fake_mnist, epochs=1), "--data.val_split", str(VAL)]
    main(["fit", "--config", config("p1h"), *args])
    ckpt = in_tmp / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    seen = {}
    original = L.Trainer.validate

    @functools.wraps(original)  # keeps the signature the CLI builds the subcommand from
    def recording(self, *a, **k):
        out = original(self, *a, **k)
        seen.update({key: float(v) for key, v in self.callback_metrics.items()})
        return out

    monkeypatch.setattr(L.Trainer, "validate", recording)
    full = ["--trainer.limit_val_batches", "1.0"]
    main(["validate", "--config", config("p1h"), *args, *full, "--ckpt_path", str(ckpt)])
    expected = checkpoint_errors(ckpt, datamodule(fake_mnist, val_split=VAL, split_seed=0))
    assert seen == pytest.approx({"val/error": expected["val_error"], "test/error":
                                  expected["test_error"]}, abs=1e-4)  # fmt: skip


# ------------------------------------------------------------ entries of their own epoch only


def fit_results(fake_mnist: Path, root: Path, *extra: str) -> list[dict]:
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=3), *extra])
    (path,) = (root / "runs").rglob("results.json")
    return json.loads(path.read_text())["epochs"]


def test_epochs_without_evaluation_say_so(fake_mnist: Path, in_tmp: Path) -> None:
    epochs = fit_results(fake_mnist, in_tmp, "--trainer.check_val_every_n_epoch", "2")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["test_error"] is None for e in epochs] == [True, False, True]


def test_a_run_stopped_by_max_steps_writes_no_entry_for_the_partial_epoch(
    fake_mnist: Path, in_tmp: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    """3 batches an epoch, max_steps 4: epoch 2 stops after one batch and had no evaluation,
    so it has no numbers (the old writer repeated epoch 1's)."""
    epochs = fit_results(fake_mnist, in_tmp, "--trainer.max_steps", "4")
    assert [e["epoch"] for e in epochs] == [1]
    other = tmp_path_factory.mktemp("straight")
    monkeypatch.chdir(other)
    straight = fit_results(fake_mnist, other, "--trainer.max_epochs", "1")
    assert {k: v for k, v in epochs[0].items() if k != "seconds"} == {
        k: v for k, v in straight[0].items() if k != "seconds"
    }


class SlowBatch(L.Callback):
    """Sleeps ``seconds`` after batch 1 of epoch 2 (``max_time`` then stops inside it)."""

    def __init__(self, seconds: float = 3.0) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (1, 1):
            time.sleep(self.seconds)


def test_a_run_stopped_by_max_time_writes_no_entry_for_the_partial_epoch(
    fake_mnist: Path, in_tmp: Path
) -> None:
    epochs = fit_results(
        fake_mnist, in_tmp, "--trainer.max_time", "00:00:00:02",
        "--trainer.callbacks+=tests.test_evaluation.SlowBatch",
    )  # fmt: skip
    assert [e["epoch"] for e in epochs] == [1]


# ----------------------------------------------------------------- checkpointing and plugins


def test_enable_checkpointing_false_trains_and_writes_no_checkpoint(
    fake_mnist: Path, in_tmp: Path
) -> None:
    epochs = fit_results(fake_mnist, in_tmp, "--trainer.enable_checkpointing", "false")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert list(in_tmp.rglob("*.ckpt")) == []


@pytest.mark.parametrize(
    ("plugin", "atomic"),
    [
        ("lightning.pytorch.plugins.environments.LightningEnvironment", True),
        ("lightning.pytorch.plugins.io.TorchCheckpointIO", False),  # the user's own writer
    ],
)
def test_user_plugins_keep_the_atomic_checkpoint_writer(
    fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, plugin: str, atomic: bool
) -> None:
    written: list[str] = []
    original = AtomicCheckpointIO.save_checkpoint

    def recording(self, checkpoint, path, storage_options=None):
        written.append(Path(path).name)
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recording)
    fit_results(fake_mnist, in_tmp, "--trainer.plugins", plugin)
    assert written == (["last.ckpt"] * 3 if atomic else [])
    assert (next(in_tmp.rglob("last.ckpt"))).is_file()


def test_comparison_table_marks_an_epoch_without_evaluation() -> None:
    from eqprop_lightning.cli import comparison_table

    epochs = [{"epoch": 1, "train_error": 5.0, "test_error": None, "seconds": 1.25}]
    assert comparison_table({"ep": epochs}).splitlines()[2] == "| 1 | 5.00 | - | 1.2 |"


def test_evaluation_sets_of_loaders_given_directly() -> None:
    """Without a data module (loaders passed to Trainer.fit) results.json named a "NoneType"."""
    from eqprop_lightning.module import evaluation_sets

    assert evaluation_sets(None) == {"val": "the val_dataloaders given to Trainer.fit"}
    assert evaluation_sets(object()) == {"val": "the val_dataloader of object"}


def test_split_indices_are_sorted_and_partition_the_set():
    """The held-out split keeps the training images in their file order (the order the epoch
    shuffles start from) and takes each image once."""
    keep, held = split_indices(200, 50, 3)
    assert torch.equal(keep, keep.sort().values) and torch.equal(held, held.sort().values)
    assert len(held) == 50
    assert torch.equal(torch.cat([keep, held]).sort().values, torch.arange(200))
