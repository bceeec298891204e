"""The Lightning-free inputs of ``eqprop gdu`` and ``eqprop recipe`` against the Lightning CLI's:
the same net weights, rule, settings, training batches and run root for every MNIST figure
config, the same values for every config file, and a process that never imports Lightning."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eqprop_lightning.analysis_commands import (
    LOGGER_OPTIONS,
    MNIST_OPTIONS,
    RULE_DEFAULTS,
    TRAINER_OPTIONS,
    TRAINING_ONLY,
    analysis_inputs,
    read_configs,
)
from eqprop_lightning.cli import analysis_inputs_from_cli
from eqprop_lightning.config_files import flat, resolved_config
from eqprop_lightning.nets import PrototypicalFC
from eqprop_lightning.run_dirs import next_dir, run_root
from tests.test_configs import FLAT, as_now

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GDU_MNIST = sorted(p for p in (CONFIGS / "gdu").glob("*.yaml") if "toy" not in p.name)
RUNS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in ("base", "overrides"))


def small(path: Path, fake_mnist: Path) -> list[str]:
    """The config with short phases, batches of 4 and the fake MNIST."""
    args = ["--config", str(path), "--model.T", "6", "--model.K", "3"]
    args += ["--data.batch_size", "4", "--data.data_dir", str(fake_mnist)]
    return [*args, "--data.verify_checksums", "false"]


@pytest.mark.parametrize("path", GDU_MNIST, ids=lambda p: p.name)
def test_inputs_equal_the_cli_s(path: Path, fake_mnist: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_same_inputs(small(path, fake_mnist))


def test_inputs_of_a_readout_of_the_hidden_layer_equal_the_cli_s(
    fake_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """512 hidden units under a 10-class readout fit MNIST's 10 classes (the readout's)."""
    monkeypatch.chdir(tmp_path)
    args = small(CONFIGS / "gdu" / "fig3_p1h.yaml", fake_mnist)
    args += ["--config", str(CONFIGS / "overrides" / "p1h_softmax.yaml")]
    assert_same_inputs(args)
    assert analysis_inputs(args, 1).net.synapse_labels() == ["Wr", "W0x"]


def assert_same_inputs(args: list[str]) -> None:
    light = analysis_inputs(args, 2)
    assert light is not None
    cli = analysis_inputs_from_cli(args, 2)
    assert type(light.net) is type(cli.net)
    for (name, a), (_, b) in zip(
        light.net.state_dict().items(), cli.net.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert type(light.rule) is type(cli.rule) and vars(light.rule) == vars(cli.rule)
    settings = ("T", "K", "beta", "symmetric")
    assert [getattr(light, k) for k in settings] == [getattr(cli, k) for k in settings]
    assert len(light.batches) == len(cli.batches) == 2
    for (xa, ya), (xb, yb) in zip(light.batches, cli.batches, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert light.run_root == cli.run_root


@pytest.mark.parametrize("path", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_read_configs_gives_the_cli_s_values(path: Path) -> None:
    """Every value the reader finds is the one the CLI resolves (which adds the defaults)."""
    for extra in ([], ["--config", str(CONFIGS / "overrides" / "bptt.yaml")]):
        args = ["--config", str(path), *extra, "--model.K", "3", "--data.batch_size", "7"]
        light = flat(read_configs(args))
        full = flat(
            resolved_config(path, *extra[1:], overrides=("--model.K=3", "--data.batch_size=7"))
        )
        # --data.batch_size: jsonargparse's shorthand for data.init_args.batch_size
        assert light.pop("data.batch_size") == full.pop("data.init_args.batch_size") == 7
        light.pop("data.init_args.batch_size", None)  # the file's, overridden
        assert {k: v for k, v in light.items() if full.get(k, "missing") != v} == {}


@pytest.mark.parametrize("path", RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_read_configs_finds_every_value_the_config_sets(path: Path) -> None:
    """The reader finds exactly the values the config sets (through its ``config:`` includes):
    those of the flat file it replaced, recorded in ``tests/flat_configs.json``."""
    name = str(path.relative_to(CONFIGS))
    assert flat(read_configs(["--config", str(path)])) == flat(as_now(FLAT[name]["values"], name))


def test_defaults_are_the_module_s_and_the_data_module_s() -> None:
    from eqprop_lightning.datamodules import MNISTDataModule
    from eqprop_lightning.module import EqPropModule

    module = inspect.signature(EqPropModule).parameters
    assert {name: module[name].default for name in RULE_DEFAULTS} == RULE_DEFAULTS
    # every module setting is either read here or known to be training's only
    assert set(module) == {"net", *RULE_DEFAULTS, *TRAINING_ONLY}
    assert set(inspect.signature(MNISTDataModule).parameters) == MNIST_OPTIONS


def test_trainer_options_read_here_are_the_trainer_s() -> None:
    from lightning import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    assert TRAINER_OPTIONS <= set(inspect.signature(Trainer).parameters)
    assert LOGGER_OPTIONS <= set(inspect.signature(TensorBoardLogger).parameters)


@pytest.mark.parametrize(
    "extra",
    [
        ["--data.num_workers", "2"],  # loader workers: the data module's
        ["--model.unknown_option", "1"],  # the CLI's error
        ["--seed_everything", "true"],  # a random seed: Lightning draws it
        ["--print_config"],
        ["--trainer.precision", "64"],  # a trainer option not read here: float64 nets
        ["--trainer", "null"],  # not a mapping
        ["--trainer.logger.init_args.sub_dir", "x"],  # a logger option not read here
        ["--data.class_path", "eqprop_lightning.datamodules.ToyDataModule"],  # not MNIST
        ["--data.shuffle", "false"],  # not an MNISTDataModule argument: the CLI's error
        ["--optimizer", "torch.optim.Adam"],  # a top-level key not read here
        ["--model.net.class_path", "tests.test_analysis_commands.OutsideNet"],
        # a bare class path or null where a mapping was: the CLI resolves it
        ["--data", "eqprop_lightning.datamodules.MNISTDataModule"],
        ["--model.net", "eqprop_lightning.nets.PrototypicalFC"],
        ["--model", "null"],
        ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger"],
    ],
)
def test_what_the_reader_leaves_to_the_cli(extra: list[str], fake_mnist: Path) -> None:
    args = small(CONFIGS / "gdu" / "fig3_p1h.yaml", fake_mnist)
    assert analysis_inputs([*args, *extra], 1) is None


class OutsideNet(PrototypicalFC):
    """A net outside :mod:`eqprop_lightning.nets` (whose module the reader must not import),
    though it takes PrototypicalFC's arguments."""


def test_a_validation_split_of_the_whole_training_set_is_left_to_the_data_module(
    fake_mnist: Path,
) -> None:
    """``val_split`` = the 200 fake training images leaves none to train on: the data module's
    error, not an empty loader's."""
    args = small(CONFIGS / "gdu" / "fig3_p1h.yaml", fake_mnist)
    assert analysis_inputs([*args, "--data.val_split", "200"], 1) is None


def test_toy_config_is_left_to_the_cli() -> None:
    assert analysis_inputs(["--config", str(CONFIGS / "gdu" / "fig2_toy.yaml")], 1) is None


def test_gdu_process_imports_neither_lightning_torchvision_nor_sympy(
    fake_mnist: Path, tmp_path: Path
) -> None:
    """Nor sympy, which torch's autograd imports (a second) on the first vector-Jacobian product
    given ``grad_outputs`` (RBP's adjoint, for the estimates' table)."""
    args = [*small(CONFIGS / "gdu" / "fig3_eb1h.yaml", fake_mnist), "--output_dir", str(tmp_path)]
    code = (
        "import sys\n"
        "from eqprop_lightning.commands import main\n"
        f"main(['gdu', *{args!r}])\n"
        "heavy = ('lightning', 'torchvision', 'torchmetrics', 'sympy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert "rbp" in json.loads((tmp_path / "gdu.json").read_text())["estimates"]


@pytest.mark.parametrize(
    "seed",
    [["--data.split_seed", "3"], ["--seed_everything", "5"]],
    ids=["split_seed", "seed_everything"],
)
def test_inputs_of_a_split_equal_the_cli_s(
    seed: list[str], fake_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """The held-out images, hence the training batches analysed, are chosen by
    ``--data.split_seed`` (3) or else by ``seed_everything`` (5; the config's is 0), in the
    reader as in the data module."""
    monkeypatch.chdir(tmp_path)
    args = small(CONFIGS / "gdu" / "fig3_p1h.yaml", fake_mnist)
    assert_same_inputs([*args, "--data.val_split", "50", *seed])


def test_inputs_with_the_data_module_s_default_batch_size_equal_the_cli_s(
    fake_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """A config that sets no batch size: the reader's default is the data module's (20)."""
    monkeypatch.chdir(tmp_path)
    text = (CONFIGS / "gdu" / "fig3_p1h.yaml").read_text()
    text = text.replace("../base/p_fc.yaml", str(CONFIGS / "base" / "p_fc.yaml"))
    lines = text.splitlines()
    text = "\n".join(line for line in lines if not line.startswith("data.init_args.batch"))
    config = tmp_path / "no_batch_size.yaml"
    config.write_text(text)
    args = ["--config", str(config), "--model.T", "6", "--model.K", "3"]
    args += ["--data.data_dir", str(fake_mnist), "--data.verify_checksums", "false"]
    assert_same_inputs(args)
    assert len(analysis_inputs(args, 1).batches[0][0]) == 20


def test_inputs_of_all_the_epoch_s_batches_equal_the_cli_s(
    fake_mnist: Path, tmp_path: Path, monkeypatch
) -> None:
    """Every batch of the epoch may be analysed: the 200 fake training images in batches of
    100 are 2 batches, and both readers give 2 (assert_same_inputs asks for 2)."""
    monkeypatch.chdir(tmp_path)
    args = small(CONFIGS / "gdu" / "fig3_p1h.yaml", fake_mnist)
    assert_same_inputs([*args, "--data.batch_size", "100"])


def test_next_dir_is_the_first_free_number_from_zero(tmp_path: Path) -> None:
    """gdu_<n>, recipe_<n>, compare_<n>: numbered from 0, the first number not taken."""
    assert next_dir(tmp_path, "gdu") == tmp_path / "gdu_0"
    (tmp_path / "gdu_0").mkdir()
    (tmp_path / "gdu_2").mkdir()
    (tmp_path / "recipe_1").mkdir()
    assert next_dir(tmp_path, "gdu") == tmp_path / "gdu_1"
    assert next_dir(tmp_path, "recipe") == tmp_path / "recipe_0"


def test_run_root_is_the_logger_s_save_dir_else_the_trainer_s_root(tmp_path: Path) -> None:
    """<save_dir>/<name>: the logger's save_dir where set, else trainer.default_root_dir, else
    runs/; the name eqprop unless set; None for another logger or none."""
    assert run_root({}) == Path("runs") / "eqprop"
    assert run_root({"default_root_dir": str(tmp_path)}) == tmp_path / "eqprop"
    named = {"init_args": {"name": "fig3"}}
    assert run_root({"default_root_dir": "elsewhere", "logger": named}) == Path("elsewhere/fig3")
    placed = {"init_args": {"save_dir": str(tmp_path / "logs"), "name": "fig3"}}
    assert run_root({"default_root_dir": "elsewhere", "logger": placed}) == tmp_path / "logs/fig3"
    assert run_root({"logger": False}) is None
    assert run_root({"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger"}}) is None
