"""End-to-end tests of the ``eqprop`` command (``eqprop_lightning.cli.main``), in-process.

Every run uses the tiny fake MNIST of ``conftest.fake_mnist`` and the configs of
``configs/mnist`` shrunk to a 784-16-10 net, a few relaxation steps and a few batches, so the
whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import lightning.pytorch.cli as lightning_cli
import pytest
import torch
import yaml
from torchvision.datasets import MNIST

from eqprop_lightning.cli import main
from eqprop_lightning.datamodules import MNISTDataModule
from eqprop_lightning.learning import EquilibriumProp
from eqprop_lightning.module import EqPropModule, error_percent
from eqprop_lightning.nets import EnergyBasedFC, PrototypicalFC
from tests.reference import sgd_step_by_hand

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs" / "mnist"
SMALL_SIZE_TAB = [10, 16, 784]
SMALL_T, SMALL_K = 5, 2
EPOCHS = 2


def config(name: str) -> str:
    return str(CONFIG_DIR / f"{name}.yaml")


def shrink(data_dir: Path, epochs: int = EPOCHS, train_batches: int = 3) -> list[str]:
    """Overrides that make any MNIST config train in well under a second on the fake data."""
    return [
        "--data.data_dir",
        str(data_dir),
        "--data.verify_checksums",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.limit_train_batches",
        str(train_batches),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--model.net.init_args.size_tab",
        json.dumps(SMALL_SIZE_TAB),
        "--model.T",
        str(SMALL_T),
        "--model.K",
        str(SMALL_K),
        "--model.compile",  # the EB rows compile: seconds per graph
        "false",
    ]


def results_files(root: Path) -> list[Path]:
    return sorted((root / "runs").rglob("results.json")) if (root / "runs").exists() else []


#: Examples behind each error of a shrunk run: 3 training batches of 20, one test batch of 100.
TRAIN_EXAMPLES, TEST_EXAMPLES = 3 * 20, 100


def is_count_percent(error: float, examples: int) -> bool:
    """``error`` (percent, rounded to 4 decimals) is k/examples for a whole number k."""
    count = error * examples / 100
    return abs(count - round(count)) < 1e-3 and 0 <= round(count) <= examples


def check_epochs(epochs: list[dict], n: int) -> None:
    """``n`` entries numbered 1..n with exactly the schema's fields (no split: no val_error),
    each error a whole number of the examples it was measured on (the values themselves:
    ``test_fit_logs_the_epoch_means_of_the_rules_values``; the timings: ``test_resume``)."""
    assert [e["epoch"] for e in epochs] == list(range(1, n + 1))
    for entry in epochs:
        assert set(entry) == {
            "epoch", "train_error", "test_error", "train_loss", "free_change", "seconds"
        }  # fmt: skip
        assert is_count_percent(entry["train_error"], TRAIN_EXAMPLES), entry
        assert is_count_percent(entry["test_error"], TEST_EXAMPLES), entry


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the command from ``tmp_path`` (so ``runs/`` lands there) with a bare ``sys.argv``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    return tmp_path


@pytest.fixture(scope="module")
def fitted_p1h(fake_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One shrunk ``eqprop fit --config p1h.yaml`` run; yields the working directory."""
    workdir = tmp_path_factory.mktemp("fit_p1h")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setattr(sys, "argv", ["eqprop"])
        main(["fit", "--config", config("p1h"), *shrink(fake_mnist)])
    yield workdir


# --------------------------------------------------------------------------------------- fit


def test_fit_p1h_writes_config_results_and_checkpoint(fitted_p1h: Path) -> None:
    run_dir = fitted_p1h / "runs" / "p1h" / "version_0"
    assert run_dir.is_dir(), sorted(p.name for p in (fitted_p1h / "runs").rglob("*"))

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["algorithm"] == "ep"
    assert saved["model"]["T"] == SMALL_T and saved["model"]["K"] == SMALL_K
    assert saved["model"]["net"]["init_args"]["size_tab"] == SMALL_SIZE_TAB
    assert saved["trainer"]["max_epochs"] == EPOCHS

    results = json.loads((run_dir / "results.json").read_text())
    assert results["algorithm"] == "ep"
    assert results["seed"] == 0
    assert results["sets"] == {"test_error": "the MNIST test set (t10k files)"}
    check_epochs(results["epochs"], EPOCHS)

    # no validation split: nothing is chosen on the test set, only last.ckpt is kept
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]


def test_fit_checkpoint_loads_with_weights_only(fitted_p1h: Path) -> None:
    ckpt_path = fitted_p1h / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["epoch"] == EPOCHS - 1
    assert ckpt["hyper_parameters"]["algorithm"] == "ep"
    weights = ckpt["state_dict"]
    assert weights["net.weights.0.weight"].shape == (SMALL_SIZE_TAB[0], SMALL_SIZE_TAB[1])
    assert weights["net.weights.1.weight"].shape == (SMALL_SIZE_TAB[1], SMALL_SIZE_TAB[2])


def test_fit_bptt_on_energy_based_net(fake_mnist: Path, in_tmp: Path) -> None:
    bptt = ["--model.algorithm", "bptt", "--model.beta", "null"]
    main(["fit", "--config", config("eb1h"), *shrink(fake_mnist), *bptt])
    run_dir = in_tmp / "runs" / "eb1h" / "version_0"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["algorithm"] == "bptt"
    assert saved["model"]["net"]["class_path"].endswith("EnergyBasedFC")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["algorithm"] == "bptt"
    check_epochs(results["epochs"], EPOCHS)
    # the final epoch's test error is that of the saved weights, recomputed here
    expected, _ = _error_of_checkpoint(run_dir / "checkpoints" / "last.ckpt", fake_mnist)
    assert results["epochs"][-1]["test_error"] == pytest.approx(expected, abs=1e-4)


def test_fit_logs_the_epoch_means_of_the_rules_values(
    fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One epoch of the 200 fake images in batches of 30 (the last of 20), replayed by hand with
    EP and SGD: ``train/error`` is the error over the epoch's examples, ``train/loss`` and
    ``train/free_change`` the means over its batches of each batch's cost
    ``1/(2B) sum_b |s_0 - y|^2`` and of its largest layer's last-step change, all measured
    before the batch's update; ``results.json`` holds them rounded."""
    seen: dict = {}
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_fit, original_step = L.Trainer.fit, EqPropModule.training_step

    @functools.wraps(original_fit)
    def recording_fit(self: L.Trainer, model, *args, **kwargs):
        seen["net"] = copy.deepcopy(model.net)  # the initial weights
        out = original_fit(self, model, *args, **kwargs)
        seen["metrics"] = {k: float(v) for k, v in self.callback_metrics.items()}
        return out

    @functools.wraps(original_step)
    def recording_step(self: EqPropModule, batch, batch_idx: int) -> None:
        batches.append(tuple(t.clone() for t in batch))
        return original_step(self, batch, batch_idx)

    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    monkeypatch.setattr(EqPropModule, "training_step", recording_step)
    whole_epoch = ["--trainer.limit_train_batches", "1.0", "--data.batch_size", "30"]
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1), *whole_epoch])
    assert [len(x) for x, _ in batches] == [30] * 6 + [20]

    run_dir = in_tmp / "runs" / "p1h" / "version_0"
    hp = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert (hp["algorithm"], hp["nudging"], hp["symmetric"]) == ("ep", None, False)
    net, rule = seen["net"], EquilibriumProp(SMALL_T, SMALL_K, hp["beta"])
    wrong, costs, changes = [], [], []
    for x, y in batches:
        estimate = rule(net, x, y)  # before this batch's update
        s0 = estimate.output
        wrong.append(s0.argmax(1) != y.argmax(1))
        costs.append(((s0 - y) ** 2).sum(1).mean() / 2)
        changes.append(estimate.last_change.max())
        estimate.objective.backward()
        sgd_step_by_hand(net, hp["lrs"])
    # the replay followed the run: same final weights
    trained = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, value in net.state_dict().items():
        torch.testing.assert_close(trained[f"net.{name}"], value, rtol=1e-5, atol=1e-7)

    sizes = torch.tensor([len(x) for x, _ in batches], dtype=torch.float64)
    costs_b, changes_b = torch.stack(costs).double(), torch.stack(changes).double()
    error = 100 * torch.cat(wrong).double().mean().item()  # per example
    loss, free_change = costs_b.mean().item(), changes_b.mean().item()  # per batch
    # the other weightings differ by more than the tolerances (the last batch is smaller)
    assert abs(100 * wrong[-1].double().mean().item() - error) > 1.0
    for per_batch, mean in ((costs_b, loss), (changes_b, free_change)):
        by_example = ((per_batch * sizes).sum() / sizes.sum()).item()
        assert by_example != pytest.approx(mean, rel=1e-3)

    metrics = seen["metrics"]
    assert metrics["train/error"] == pytest.approx(error, rel=1e-5)
    assert metrics["train/loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["train/free_change"] == pytest.approx(free_change, rel=1e-5)
    (entry,) = json.loads((run_dir / "results.json").read_text())["epochs"]
    assert entry["train_error"] == pytest.approx(error, abs=6e-5)  # 4 decimals
    assert entry["train_loss"] == pytest.approx(loss, abs=6e-5)
    assert entry["free_change"] == pytest.approx(free_change, rel=6e-4)  # 4 significant digits


# --------------------------------------------------------------------------- validate / test


def _error_of_checkpoint(ckpt_path: Path, data_dir: Path) -> tuple[float, dict]:
    """Error (%) on the whole fake test set of the weights stored in ``ckpt_path``."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    hp = ckpt["hyper_parameters"]
    net_class = {"PrototypicalFC": PrototypicalFC, "EnergyBasedFC": EnergyBasedFC}[
        hp["net"]["class_path"].rsplit(".", 1)[1]
    ]
    net = net_class(**hp["net"]["init_args"])
    model = EqPropModule(
        net, lrs=hp["lrs"], algorithm=hp["algorithm"], T=hp["T"], K=hp["K"], beta=hp["beta"]
    )
    model.load_state_dict(ckpt["state_dict"])
    dm = MNISTDataModule(data_dir=str(data_dir), verify_checksums=False)
    dm.setup("test")
    x, y = dm.test_set.tensors
    return float(error_percent(model(x), y).mean()), ckpt["state_dict"]


# without a validation split the per-epoch evaluation (validate) is on the test set: test/error
@pytest.mark.parametrize("command, metric", [("validate", "test/error"), ("test", "test/error")])
def test_evaluate_checkpoint(
    command: str,
    metric: str,
    fitted_p1h: Path,
    fake_mnist: Path,
    in_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ckpt_path = fitted_p1h / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    expected, weights = _error_of_checkpoint(ckpt_path, fake_mnist)

    seen: dict = {}
    original = getattr(L.Trainer, command)

    @functools.wraps(original)  # keeps the signature the CLI builds the subcommand from
    def recording(self: L.Trainer, model=None, *args, **kwargs):
        out = original(self, model, *args, **kwargs)
        seen["returned"] = out
        seen["callback_metrics"] = {k: float(v) for k, v in self.callback_metrics.items()}
        seen["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(L.Trainer, command, recording)
    main(
        [
            command,
            "--config",
            config("p1h"),
            *shrink(fake_mnist),
            "--trainer.limit_val_batches",
            "1.0",
            "--trainer.limit_test_batches",
            "1.0",
            "--ckpt_path",
            str(ckpt_path),
        ]
    )

    assert seen, f"Trainer.{command} was not called"
    # the evaluated weights are the checkpoint's
    assert seen["state_dict"].keys() == weights.keys()
    for key, value in weights.items():
        torch.testing.assert_close(seen["state_dict"][key], value, rtol=0, atol=0)
    # the logged error is the error of those weights on the whole test set
    assert set(seen["callback_metrics"]) == {metric}  # and no val/error: there is no val set
    assert seen["callback_metrics"][metric] == pytest.approx(expected, abs=1e-4)
    assert seen["returned"][0][metric] == pytest.approx(expected, abs=1e-4)
    # and the error that fit recorded for the last epoch (same weights, same test set)
    fit_results = fitted_p1h / "runs" / "p1h" / "version_0" / "results.json"
    last_epoch = json.loads(fit_results.read_text())["epochs"][-1]
    assert last_epoch["test_error"] == pytest.approx(expected, abs=1e-3)
    # evaluation writes no results.json
    assert results_files(in_tmp) == []


def test_evaluating_last_takes_the_newest_run_checkpoint(
    fitted_p1h: Path, fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``test --ckpt_path last`` evaluates the newest ``last.ckpt`` of the config's runs, as
    ``fit`` resumes it; Lightning's own ``last`` looked in the new run's directory, found
    nothing and tested the untrained net."""
    shutil.copytree(fitted_p1h / "runs", in_tmp / "runs")
    seen: dict = {}
    original = L.Trainer.test

    @functools.wraps(original)  # keeps the signature the CLI builds the subcommand from
    def recording(self: L.Trainer, *args, **kwargs):
        seen["ckpt_path"] = kwargs.get("ckpt_path")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "test", recording)
    main(["test", "--config", config("p1h"), *shrink(fake_mnist), "--ckpt_path", "last"])
    expected = in_tmp / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(seen["ckpt_path"]).resolve() == expected.resolve()


@pytest.mark.parametrize(
    "command, options, message",
    [
        ("test", ["--ckpt_path", "best"], "ckpt_path='best': test runs apart from the training"),
        ("predict", ["--ckpt_path", "hpc"], "ckpt_path='hpc': predict runs apart from the"),
        ("test", ["--model.T", "7"], f"model.T: {SMALL_T} there, 7 here), and test evaluates"),
        ("validate", ["--model.loss", "cross_entropy"], "model.loss: 'mse' there, 'cross_ent"),
        ("test", ["--model.net.init_args.activation", "tanh"], "activation: 'sigm' there"),
    ],
)
def test_evaluation_refuses_settings_it_would_not_use(
    command: str,
    options: list[str],
    message: str,
    fitted_p1h: Path,
    fake_mnist: Path,
    in_tmp: Path,
    capsys,
) -> None:
    """validate/test/predict evaluate a checkpoint with the free phase, readout and net it was
    trained with (Lightning's CLI puts its hyperparameters over the config's): another ``T``,
    loss or activation is refused instead of ignored, as are the checkpoint names that only a
    fit in the same process can resolve."""
    ckpt = fitted_p1h / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    args = [*shrink(fake_mnist), "--ckpt_path", str(ckpt), *options]  # the last --ckpt_path wins
    with pytest.raises(SystemExit) as exc:
        main([command, "--config", config("p1h"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--trainer.check_val_every_n_epoch", "0"],
            "trainer.check_val_every_n_epoch must be a positive integer",
        ),
        (
            ["--predictions.path", "p.pt"],
            "predictions.path='p.pt': fit writes no predictions",
        ),
    ],
)
def test_fit_refuses_options_it_would_not_use(
    options: list[str], message: str, fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """An evaluation period of 0 (Lightning divided by it at the first epoch's end, after the
    epoch's training, and lost it) and a predictions file (fit writes none) are refused before
    training."""
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", config("p1h"), *shrink(fake_mnist), *options])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert results_files(in_tmp) == []


# ---------------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    "options, message",
    [
        (["--model.algorithm", "ep"], "--model.algorithm: compare trains both rules itself"),
        (["--config", "configs/overrides/bptt.yaml"], "model.beta=None: compare trains EP"),
        (["--config", "configs/overrides/cep.yaml"], "model.algorithm='cep' in the config"),
    ],
)
def test_compare_refuses_an_algorithm_and_a_bptt_config(
    options: list[str], message: str, fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """compare chooses the rule of each leg: a given --model.algorithm (overridden), a config
    without EP's beta (it said that beta=None must be > 0 for EP) and a config of another rule
    with a beta (continual EP: it trained plain EP under the name ep) are refused before
    anything runs."""
    options = [str(REPO_ROOT / o) if o.endswith(".yaml") else o for o in options]
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", config("p1h"), *shrink(fake_mnist), *options])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert results_files(in_tmp) == []


def test_evaluation_runs_as_the_config_says_not_as_the_checkpoint_did(
    fitted_p1h: Path, fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compile`` only decides how the relaxations run: a checkpoint trained compiled is
    evaluated eagerly with ``--model.compile false`` (Lightning put the checkpoint's ``true``
    over it, and the shipped-model check compiled the EB-2h nets)."""
    saved = torch.load(fitted_p1h / "runs/p1h/version_0/checkpoints/last.ckpt", weights_only=True)
    saved["hyper_parameters"]["compile"] = True
    torch.save(saved, in_tmp / "compiled.ckpt")
    seen: dict = {}
    original = L.Trainer.test

    @functools.wraps(original)  # keeps the signature the CLI builds the subcommand from
    def recording(self: L.Trainer, *args, **kwargs):
        seen["compile"] = kwargs["model"].hparams.compile
        return original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "test", recording)
    args = [*shrink(fake_mnist), "--ckpt_path", str(in_tmp / "compiled.ckpt")]  # compile false
    main(["test", "--config", config("p1h"), *args])
    assert seen["compile"] is False


def test_compare_trains_ep_and_bptt_from_identical_weights(
    fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    initial: dict[str, dict[str, torch.Tensor]] = {}
    options: dict[str, tuple] = {}
    original_fit = L.Trainer.fit

    @functools.wraps(original_fit)
    def recording_fit(self: L.Trainer, model, *args, **kwargs):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        initial[model.hparams.algorithm] = state
        hp = model.hparams
        options[hp.algorithm] = (hp.beta, hp.symmetric, hp.nudging)
        return original_fit(self, model, *args, **kwargs)

    # Seed the EP and the BPTT CLI differently, so that identical initial weights can only come
    # from compare copying them (with the config's single seed they would be equal anyway).
    seeds: list[int] = []
    real_seed_everything = lightning_cli.seed_everything

    def distinct_seed(seed=None, *args, **kwargs):
        seeds.append(seed)
        return real_seed_everything(seed + 100 * len(seeds), *args, **kwargs)

    monkeypatch.setattr(lightning_cli, "seed_everything", distinct_seed)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setattr(L.Trainer, "fit", recording_fit)
    # EP with a nudging scheme: compare's BPTT run must drop it with beta
    nudging = ["--model.nudging", "symmetric"]
    main(["compare", "--config", config("p1h"), *shrink(fake_mnist), *nudging])

    root = in_tmp / "runs" / "p1h" / "compare_0"
    for name in ("compare.json", "compare.md", "compare.png"):
        assert (root / name).is_file() and (root / name).stat().st_size > 0, name
    assert (root / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    compared = json.loads((root / "compare.json").read_text())
    assert set(compared) == {"ep", "bptt"}
    for alg in ("ep", "bptt"):
        results = json.loads((root / alg / "results.json").read_text())
        assert results["algorithm"] == alg
        check_epochs(results["epochs"], EPOCHS)
        assert compared[alg] == results["epochs"]
        assert (root / alg / "checkpoints" / "last.ckpt").is_file()

    table = (root / "compare.md").read_text()
    assert table.startswith("| epoch | bptt train % | bptt test % | bptt s | ep train % |")
    rows = table.strip().splitlines()[2:]
    assert len(rows) == EPOCHS
    for row, bptt, ep in zip(rows, compared["bptt"], compared["ep"], strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == f"{bptt['test_error']:.2f}" and cells[5] == f"{ep['test_error']:.2f}"
    # BPTT runs without EP's options (beta, symmetric), EP with the config's beta
    assert options == {"bptt": (None, False, None), "ep": (0.1, False, "symmetric")}
    assert "comparison written to" in capsys.readouterr().out

    # both algorithms started from the same initial weights, although seeded differently
    assert seeds == [0, 0]
    assert set(initial) == {"ep", "bptt"}
    assert initial["ep"].keys() == initial["bptt"].keys()
    assert any(k.startswith("net.") for k in initial["ep"])
    for key, value in initial["ep"].items():
        torch.testing.assert_close(initial["bptt"][key], value, rtol=0, atol=0)


# ------------------------------------------------------------------------------ bad configs


def _missing_files(root: Path) -> list[str]:
    raw = root / "MNIST" / "raw"
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte")
    return [str(raw / n) for n in names] + [str(raw / "t10k-labels-idx1-ubyte.gz")]


def test_missing_data_without_download_exits_2(
    fake_mnist: Path, in_tmp: Path, tmp_path_factory: pytest.TempPathFactory, capsys
) -> None:
    empty = tmp_path_factory.mktemp("empty_data")
    args = [
        *shrink(fake_mnist, epochs=1),
        "--data.data_dir",
        str(empty),
        "--data.download",
        "false",
    ]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", config("p1h"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "eqprop: error: MNIST data not found" in err
    assert "download=False" in err
    for path in _missing_files(empty):
        assert path in err
    assert results_files(in_tmp) == []


def test_download_impossible_exits_2(
    fake_mnist: Path,
    in_tmp: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    def no_network(self: MNIST) -> None:
        raise OSError("no network")

    monkeypatch.setattr(MNIST, "download", no_network)
    empty = tmp_path_factory.mktemp("empty_data")
    args = [*shrink(fake_mnist, epochs=1), "--data.data_dir", str(empty), "--data.download", "true"]
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", config("p1h"), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "eqprop: error: MNIST data not found" in err
    assert "download failed: no network" in err
    for path in _missing_files(empty):
        assert path in err
    assert results_files(in_tmp) == []
