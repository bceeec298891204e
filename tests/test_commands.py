"""The ``eqprop`` command's structure: its subcommands and their ``--help``, packaged config
names, where runs go (``default_root_dir``), ``predict``, ``--ckpt_path last``, ``EQPROP_DEBUG``,
``compare`` on a rank other than 0, and that commands which do not train import no Lightning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.utilities import rank_zero_only

from eqprop_lightning.callbacks import PredictionWriter
from eqprop_lightning.cli import main
from eqprop_lightning.datamodules import MNISTDataModule
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.resources import config_names, packaged
from eqprop_lightning.run_dirs import fixed_run_dir
from eqprop_lightning.validation import (
    check_same_data,
    check_same_hparams,
    newest_last_checkpoint,
    resume_seed,
)
from tests.conftest import FAKE_TEST_SIZE
from tests.reference import free_steps_by_hand
from tests.test_cli import config, shrink


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    monkeypatch.delenv("EQPROP_DEBUG", raising=False)
    return tmp_path


def _error_line(args: list[str], capsys) -> str:
    """The last line on stderr of ``main(args)``, which must exit with status 2 (a user error)."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def _help(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    return capsys.readouterr().out


# ------------------------------------------------------------------------------------ help


def test_top_help_lists_every_command(capsys) -> None:
    out = _help(["--help"], capsys)
    for command in ("fit", "validate", "test", "predict", "compare", "gdu", "recipe", "report"):
        assert f"\n  {command} " in out, command


@pytest.mark.parametrize(
    "command, options",
    [
        ("gdu", ["--config", "--output_dir"]),
        ("recipe", ["--config", "--batches", "--output_dir"]),
        ("compare", ["--config"]),
        ("report", ["--runs", "--out", "--figure"]),
    ],
)
def test_subcommand_help_lists_its_options(command: str, options: list[str], capsys) -> None:
    out = _help([command, "--help"], capsys)
    assert out.startswith(f"usage: eqprop {command} ")
    for option in options:
        assert option in out, option


def test_unknown_command_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["trian", "--config", "mnist/p1h"])
    assert exc.value.code == 2
    assert "unknown command 'trian'; choose from fit, validate" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--help"], ["gdu", "--help"], ["recipe", "--help"]])
def test_help_imports_neither_torch_nor_lightning(args: list[str]) -> None:
    code = (
        "import sys\nfrom eqprop_lightning.commands import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'matplotlib', 'nltk', 'bs4') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- config names


def test_packaged_config_names() -> None:
    names = config_names()
    assert {"mnist/p1h", "mnist/eb1h", "gdu/fig3_eb1h", "imdb/small"} <= set(names)
    assert all((packaged("configs") / f"{n}.yaml").is_file() for n in names)


def test_config_by_name_from_any_directory(in_tmp: Path, capsys) -> None:
    out = _help(["fit", "--config", "mnist/p1h", "--print_config"], capsys)
    assert "name: p1h" in out and "PrototypicalFC" in out


def test_unknown_config_name_lists_close_ones(in_tmp: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "mnist/p1hh"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--config 'mnist/p1hh': no such file, and no packaged config of that name" in err
    assert "closest: mnist/p1h" in err


# ------------------------------------------------------------------------ EQPROP_DEBUG


def test_a_value_of_the_wrong_type_is_one_line(in_tmp: Path, capsys) -> None:
    """argparse printed its usage block and ``eqprop recipe: error: ...`` instead."""
    with pytest.raises(SystemExit) as exc:
        main(["recipe", "--config", "gdu/fig3_p1h", "--batches", "2.5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == "eqprop: error: argument --batches: invalid int value: '2.5'\n"


@pytest.mark.parametrize("debug", ["", "1"])
def test_debug_shows_the_traceback(
    debug: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("EQPROP_DEBUG", debug)
    with pytest.raises(SystemExit) as exc:
        main(["recipe", "--config", "gdu/fig3_p1h", "--batches", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("eqprop: error: --batches=0 must be a positive integer")
    has_traceback = "Traceback (most recent call last)" in err and "ConfigError" in err
    assert has_traceback == bool(debug)


# --------------------------------------------------------------------- default_root_dir


def test_default_root_dir_decides_where_runs_go(fake_mnist: Path, in_tmp: Path) -> None:
    root = in_tmp / "elsewhere"
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)] + [
        "--trainer.default_root_dir",
        str(root),
    ])  # fmt: skip
    assert (root / "p1h" / "version_0" / "results.json").is_file()
    assert (root / "p1h" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(
    ("where", "root", "writes", "other"),
    [
        (
            ["--trainer.logger", "false", "--trainer.default_root_dir", "flat"],
            Path("flat"),
            "trainer.logger=false",
            "give another --trainer.default_root_dir, or keep the logger (a new version_<n> per "
            "run)",
        ),
        (  # the rerun lines of REPRODUCTION.md and the Table 1 queue
            ["--trainer.logger.init_args.save_dir", "logs"]
            + ["--trainer.logger.init_args.name", "p1h-ep-s0"]
            + ["--trainer.logger.init_args.version", "version_0"],
            Path("logs", "p1h-ep-s0", "version_0"),
            "trainer.logger.init_args.version",
            "give another version (or none: a new version_<n> per run)",
        ),
    ],
    ids=["no_logger", "fixed_version"],
)
def test_a_fresh_run_does_not_overwrite_an_earlier_one_in_its_directory(
    fake_mnist: Path, in_tmp: Path, capsys, where, root, writes, other
) -> None:
    """Without a logger a run writes into default_root_dir itself, with a fixed logger version
    into that version: a second fresh run there is refused (it overwrote results.json and
    last.ckpt; with a fixed version, only logger=false was refused); resuming it goes on."""
    args = [*shrink(fake_mnist, epochs=1), *where]
    main(["fit", "--config", config("p1h"), *args])
    last, results = root / "checkpoints" / "last.ckpt", root / "results.json"
    before = {path: path.read_bytes() for path in (last, results)}
    line = _error_line(["fit", "--config", config("p1h"), *args, "--seed_everything", "1"], capsys)
    assert line == (
        f"eqprop: error: {writes} writes the run into {root}, which holds {results} of an "
        f"earlier run: resume it with --ckpt_path {last}, or {other}"
    )
    assert {path: path.read_bytes() for path in (last, results)} == before
    resume = ["--trainer.max_epochs", "2", "--ckpt_path", str(last)]
    main(["fit", "--config", config("p1h"), *args, *resume])
    assert [e["epoch"] for e in _results(root)["epochs"]] == [1, 2]
    # only results.json (a run stopped before its first save): nothing to resume from
    last.unlink()
    line = _error_line(["fit", "--config", config("p1h"), *args], capsys)
    assert line.endswith(f"holds {results} of an earlier run: {other}")


def test_a_resume_does_not_merge_into_another_runs_directory(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """Resuming a checkpoint from outside a fixed run directory that holds another run's files
    is refused like a fresh run there: before, the resumed run kept the other run's epochs in
    its results.json and replaced its last.ckpt. Resuming the directory's own checkpoint (any
    of them) goes on."""
    fixed = ["--trainer.logger.init_args.save_dir", "logs"]
    fixed += ["--trainer.logger.init_args.name", "p1h-ep-s0"]
    fixed += ["--trainer.logger.init_args.version", "version_0"]
    root = Path("logs", "p1h-ep-s0", "version_0")
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=2), *fixed])
    elsewhere = ["--trainer.logger", "false", "--trainer.default_root_dir", "flat"]
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1), *elsewhere])
    before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
    other = Path("flat", "checkpoints", "last.ckpt")
    resume = [*shrink(fake_mnist, epochs=2), *fixed, "--ckpt_path", str(other)]
    line = _error_line(["fit", "--config", config("p1h"), *resume], capsys)
    assert line == (
        f"eqprop: error: trainer.logger.init_args.version writes the run into {root}, which "
        f"holds {root / 'results.json'} of an earlier run that --ckpt_path {other} does not "
        f"resume: resume that run with --ckpt_path {root / 'checkpoints' / 'last.ckpt'}, or "
        "give another version (or none: a new version_<n> per run)"
    )
    assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == before
    # the other way round: the fixed version's checkpoint resumed into the logger-less root
    last = root / "checkpoints" / "last.ckpt"
    back = [*shrink(fake_mnist, epochs=3), *elsewhere, "--ckpt_path", str(last)]
    assert "which holds flat/results.json of an earlier run that" in _error_line(
        ["fit", "--config", config("p1h"), *back], capsys
    )
    # a checkpoint of the directory's own run (a copy of its last.ckpt there) resumes there
    own = root / "checkpoints" / "kept.ckpt"
    own.write_bytes(before[last])
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=3), *fixed] + [
        "--ckpt_path",
        str(own),
    ])  # fmt: skip
    assert [e["epoch"] for e in _results(root)["epochs"]] == [1, 2, 3]


def test_a_run_whose_checkpoints_are_a_link_resumes_into_its_own_directory(tmp_path) -> None:
    """The run directory's own checkpoint, its ``checkpoints/`` a symlink to another disk, is
    its run's (the check followed the link and refused it)."""
    from eqprop_lightning.cli import _refuse_to_overwrite_a_run

    root = tmp_path / "logs" / "p1h" / "version_0"
    elsewhere = tmp_path / "disk" / "checkpoints"
    elsewhere.mkdir(parents=True)
    root.mkdir(parents=True)
    (root / "checkpoints").symlink_to(elsewhere)
    (root / "results.json").write_text("{}")
    (elsewhere / "last.ckpt").write_bytes(b"")
    logger = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(tmp_path / "logs"), "name": "p1h", "version": "version_0"},
    }
    trainer = SimpleNamespace(get={"logger": logger}.get, as_dict=lambda: {"logger": logger})
    for own in (root / "checkpoints" / "last.ckpt", elsewhere / "last.ckpt"):  # one file
        _refuse_to_overwrite_a_run(trainer, "results.json", str(own))
    (tmp_path / "disk" / "other.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError, match="of an earlier run that --ckpt_path"):
        _refuse_to_overwrite_a_run(trainer, "results.json", str(tmp_path / "disk" / "other.ckpt"))


def test_fixed_run_dir_of_a_logger_or_a_list_of_loggers() -> None:
    """The run directory Lightning uses: the first logger's of a list; none without a version."""
    tensorboard = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "logs", "name": "p1h", "version": 3},
    }
    assert fixed_run_dir({"logger": tensorboard}) == Path("logs/p1h/version_3")
    assert fixed_run_dir({"logger": [tensorboard, {"class_path": "x.CSVLogger"}]}) == Path(
        "logs/p1h/version_3"
    )
    unversioned = {**tensorboard, "init_args": {"save_dir": "logs", "name": "p1h"}}
    assert fixed_run_dir({"logger": unversioned, "default_root_dir": "runs"}) is None


def test_fast_dev_run_writes_no_results(fake_mnist: Path, in_tmp: Path) -> None:
    """``fast_dev_run`` writes no run files (Lightning: no config, checkpoint or logger): without
    a logger it trained into default_root_dir and replaced the results.json of the run there."""
    root = in_tmp / "flat"
    args = [*shrink(fake_mnist, epochs=2), "--trainer.logger", "false"]
    args += ["--trainer.default_root_dir", str(root)]
    main(["fit", "--config", config("p1h"), *args])
    before = (root / "results.json").read_bytes()
    main(["fit", "--config", config("p1h"), *args, "--trainer.fast_dev_run", "true"])
    assert (root / "results.json").read_bytes() == before


def test_predict_with_fast_dev_run_writes_under_default_root_dir(
    fake_mnist: Path, in_tmp: Path
) -> None:
    """Without a logger (``fast_dev_run`` has none) predictions go to
    ``<default_root_dir>/predictions.pt``; before, ``predict`` failed on a None log_dir."""
    args = [*shrink(fake_mnist, epochs=1), "--trainer.default_root_dir", str(in_tmp / "root")]
    main(["predict", "--config", config("p1h"), *args, "--trainer.fast_dev_run", "true"])
    saved = torch.load(in_tmp / "root" / "predictions.pt", weights_only=True)
    # fast_dev_run predicts one batch: the whole fake test set, in order
    assert saved["index"].tolist() == list(range(FAKE_TEST_SIZE))
    assert saved["output"].shape == (FAKE_TEST_SIZE, 10)
    assert torch.equal(saved["prediction"], saved["output"].argmax(1))


def test_results_filename_is_the_file_every_command_reads(
    fake_mnist: Path, in_tmp: Path, capsys, caplog
) -> None:
    """``--results.filename r.json``: fit names it at its end, and a new logger-less run over
    it is refused (before, fit said none was written and the overwrite went unchecked)."""
    root = in_tmp / "flat"
    args = [*shrink(fake_mnist, epochs=1), "--trainer.logger", "false"]
    args += ["--trainer.default_root_dir", str(root), "--results.filename", "r.json"]
    with caplog.at_level("INFO"):
        main(["fit", "--config", config("p1h"), *args])
    assert f"results: {root / 'r.json'}" in caplog.text
    (root / "checkpoints" / "last.ckpt").unlink()  # results alone are an earlier run's
    line = _error_line(["fit", "--config", config("p1h"), *args], capsys)
    assert f"which holds {root / 'r.json'} of an earlier run" in line


def test_fit_resumes_last_without_a_logger_and_refuses_the_other_names(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """``fit --ckpt_path last`` with ``trainer.logger false`` is the run's
    ``<default_root_dir>/checkpoints/last.ckpt`` (where such a run writes it), and is refused
    naming it where there is none; ``best``, ``hpc`` and ``registry`` (checkpoints of a fit in
    the same process) are refused. Before, each ended in "No such file or directory: 'last'"."""
    root = in_tmp / "flat"
    args = ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    args += ["--trainer.logger", "false", "--trainer.default_root_dir", str(root)]
    last = root / "checkpoints" / "last.ckpt"
    assert _error_line([*args, "--ckpt_path", "last"], capsys) == (
        f"eqprop: error: ckpt_path='last': no {last}, where a run without a logger writes it, "
        "and no logger's runs to look in; give the checkpoint's file"
    )
    assert _error_line([*args, "--ckpt_path", "best"], capsys) == (
        "eqprop: error: ckpt_path='best' names a checkpoint of a fit in the same process: fit "
        "resumes a checkpoint's file, or 'last' (the newest last.ckpt of this config's runs)"
    )
    main(args)
    main([*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    epochs = json.loads((root / "results.json").read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_the_gdu_check_outside_fit_is_refused(
    fake_mnist: Path, in_tmp: Path, capsys, command: str
) -> None:
    """The GDU check runs while training: evaluating commands did nothing with it."""
    args = [command, "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    assert _error_line([*args, "--gdu.every_n_steps", "2"], capsys) == (
        f"eqprop: error: gdu.every_n_steps=2: {command} trains nothing, and the GDU check runs "
        "while training (fit, compare)"
    )


def test_compare_refuses_fast_dev_run(fake_mnist: Path, in_tmp: Path, capsys) -> None:
    """compare reads both runs' results, which fast_dev_run does not write."""
    args = ["compare", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    line = _error_line([*args, "--trainer.fast_dev_run", "true"], capsys)
    assert line.startswith("eqprop: error: trainer.fast_dev_run: compare reads both runs' results")
    assert not (in_tmp / "runs").exists()


def test_compare_refuses_a_predictions_path(fake_mnist: Path, in_tmp: Path, capsys) -> None:
    """compare trains: its predictions.path was taken and nothing written."""
    args = ["compare", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    assert _error_line([*args, "--predictions.path", "p.pt"], capsys) == (
        "eqprop: error: predictions.path='p.pt': compare writes no predictions (eqprop "
        "predict does)"
    )
    assert not (in_tmp / "runs").exists()


def test_explicit_save_dir_wins_over_default_root_dir(fake_mnist: Path, in_tmp: Path) -> None:
    args = [*shrink(fake_mnist, epochs=1), "--trainer.default_root_dir", str(in_tmp / "root")]
    args += ["--trainer.logger.init_args.save_dir", str(in_tmp / "logs")]
    main(["fit", "--config", config("p1h"), *args])
    assert (in_tmp / "logs" / "p1h" / "version_0" / "results.json").is_file()


# ------------------------------------------------------------------------------ predict


def test_predict_writes_classes_and_output_states(fake_mnist: Path, in_tmp: Path) -> None:
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)])
    ckpt = in_tmp / "runs" / "p1h" / "version_0" / "checkpoints" / "last.ckpt"
    out = in_tmp / "pred.pt"
    main(
        ["predict", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
        + ["--ckpt_path", str(ckpt), "--predictions.path", str(out)]
    )
    written = torch.load(out, weights_only=True)
    # the checkpoint's net on the whole test set, in order: T free steps stepped by hand
    from eqprop_lightning.module import EqPropModule

    model = EqPropModule.load_from_checkpoint(ckpt, weights_only=True)
    dm = MNISTDataModule(data_dir=str(fake_mnist), verify_checksums=False)
    dm.setup("predict")
    x, _ = dm.test_set.tensors
    expected = free_steps_by_hand(model.net, x, model.hparams.T)[1][0]  # s_0(T): (B, 10)
    assert written["output"].shape == (len(x), 10)
    torch.testing.assert_close(written["output"], expected)
    assert torch.equal(written["prediction"], expected.argmax(1))
    assert written["index"].tolist() == list(range(len(x)))  # each row's test example


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_says_the_net_is_untrained(
    command: str, fake_mnist: Path, in_tmp: Path
) -> None:
    args = [command, "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    args += ["--trainer.logger", "false", "--seed_everything", "5"]
    said = rf"no --ckpt_path: {command} uses the net as initialised \(seed 5\), not a trained"
    with pytest.warns(UserWarning, match=said):
        main(args)


@pytest.mark.parametrize(("limit", "examples"), [("1", 25), ("2", 50), ("1.0", 100), ("0.5", 50)])
def test_limit_batches_one_is_one_batch_and_one_point_zero_all(
    fake_mnist: Path, in_tmp: Path, limit: str, examples: int
) -> None:
    """``limit_*_batches``: an integer counts batches, a float is a fraction (Lightning's own
    CLI type reads ``1`` as the float 1.0, all of them)."""
    out = in_tmp / "pred.pt"
    main(
        ["predict", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
        + ["--data.test_batch_size", "25", "--trainer.limit_predict_batches", limit]
        + ["--predictions.path", str(out), "--trainer.logger", "false"]
    )
    assert len(torch.load(out, weights_only=True)["prediction"]) == examples


# ---------------------------------------------------------------------- --ckpt_path last


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_ckpt_path_last_resumes_this_algorithm_and_refuses_other_settings(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    base = ["fit", "--config", config("p1h")]
    main([*base, *shrink(fake_mnist, epochs=1)])  # version_0: EP
    main(
        [*base, *shrink(fake_mnist, epochs=1), "--model.algorithm", "bptt", "--model.beta", "null"]
    )
    runs = in_tmp / "runs" / "p1h"
    assert _results(runs / "version_1")["algorithm"] == "bptt"  # the newest last.ckpt

    # EP resumes its own run, not the newer BPTT one
    main([*base, *shrink(fake_mnist, epochs=2), "--ckpt_path", "last"])
    assert [e["epoch"] for e in _results(runs / "version_0")["epochs"]] == [1, 2]
    assert len(_results(runs / "version_1")["epochs"]) == 1
    assert not (runs / "version_2").exists()

    # other model settings than the checkpoint's: refused, naming the fields
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, *shrink(fake_mnist, epochs=3), "--ckpt_path", "last", "--model.T", "7"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "was trained with other settings than this config" in err
    assert "model.T: 5 there, 7 here" in err
    assert "model.K" not in err


def test_resuming_with_another_seed_is_refused(fake_mnist: Path, in_tmp: Path, capsys) -> None:
    """The run would go on under the other seed and record it in results.json as its own."""
    args = ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    main(args)
    run = in_tmp / "runs" / "p1h" / "version_0"
    before = (run / "results.json").read_bytes()
    resume = [*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    line = _error_line([*resume, "--seed_everything", "3"], capsys)
    assert line == (
        "eqprop: error: ckpt_path='runs/p1h/version_0/checkpoints/last.ckpt' belongs to a run "
        "started with seed_everything=0 (the checkpoint), and this command has 3: "
        "resume it with --seed_everything 0, or start a new run"
    )
    assert (run / "results.json").read_bytes() == before


def test_resuming_with_other_data_settings_is_refused(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """The run would go on with a validation split it did not start with, and its config.yaml
    would say it had one from the start; where the data lives may change."""
    args = ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    main(args)
    run = in_tmp / "runs" / "p1h" / "version_0"
    before = (run / "config.yaml").read_bytes()
    resume = [*args, "--trainer.max_epochs", "2", "--ckpt_path", "last"]
    line = _error_line([*resume, "--data.val_split", "10", "--data.batch_size", "4"], capsys)
    assert line == (
        "eqprop: error: ckpt_path='runs/p1h/version_0/checkpoints/last.ckpt' was trained on other "
        "data settings than this config (data.init_args.batch_size: 20 there, 4 here; "
        "data.init_args.val_split: 0 there, 10 here): resume with the data settings it was "
        "trained with, or start a new run"
    )
    assert (run / "config.yaml").read_bytes() == before
    main([*resume, "--data.test_batch_size", "7", "--data.num_workers", "0"])
    assert [e["epoch"] for e in _results(run)["epochs"]] == [1, 2]


def test_fit_refuses_a_checkpoint_without_training_state(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """A shipped (slimmed) checkpoint has no optimizer state to resume: refused before any run
    directory is made, where Lightning raised a KeyError after making one."""
    from eqprop_lightning.shipped import slim

    args = ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    main(args)
    slimmed = slim(in_tmp / "runs/p1h/version_0/checkpoints/last.ckpt", in_tmp / "slim.ckpt")
    line = _error_line([*args, "--trainer.max_epochs", "2", "--ckpt_path", str(slimmed)], capsys)
    assert line == (
        f"eqprop: error: ckpt_path='{slimmed}' holds the weights only, without the optimizer's "
        "state (a shipped or slimmed copy): fit cannot resume it. Evaluate it with eqprop test "
        "(or validate, predict), or resume the run's own checkpoints/last.ckpt"
    )
    assert sorted(p.name for p in (in_tmp / "runs" / "p1h").iterdir()) == ["version_0"]


def test_ckpt_path_last_without_a_run_of_this_algorithm(
    fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    main(["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)])
    with pytest.raises(SystemExit) as exc:
        main(
            ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=2)]
            + ["--model.algorithm", "bptt", "--model.beta", "null", "--ckpt_path", "last"]
        )
    assert exc.value.code == 2
    assert "written with algorithm=bptt (only of other algorithms:" in capsys.readouterr().err


# ------------------------------------------------------------------------ compare, DDP


def test_compare_reads_results_on_rank_zero_only(
    fake_mnist: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a rank other than 0 nothing writes results.json: compare must not read it."""
    monkeypatch.setattr(pl.Trainer, "is_global_zero", property(lambda self: False))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    main(["compare", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)])
    assert list((in_tmp / "runs").rglob("results.json")) == []
    assert list((in_tmp / "runs").rglob("compare.json")) == []


def test_settings_check_ignores_the_unused_beta_of_an_old_bptt_checkpoint() -> None:
    """A BPTT checkpoint written before BPTT took no beta holds the config's beta and symmetric;
    resuming it with ``beta: null`` must not be refused for them, while a real difference is."""
    old = {"algorithm": "bptt", "T": 5, "K": 2, "beta": 0.5, "symmetric": False}
    ckpt = {"hyper_parameters": old}
    check_same_hparams("old.ckpt", ckpt, {**old, "beta": None})
    with pytest.raises(ConfigError, match="model.T: 5 there, 7 here"):
        check_same_hparams("old.ckpt", ckpt, {**old, "beta": None, "T": 7})
    ep = {"hyper_parameters": {**old, "algorithm": "ep"}}
    with pytest.raises(ConfigError, match="model.beta: 0.5 there, 0.1 here"):
        check_same_hparams("ep.ckpt", ep, {**old, "algorithm": "ep", "beta": 0.1})


def test_settings_check_lets_a_run_resume_compiled_or_eager() -> None:
    """``compile`` changes how the relaxations run, not what they compute: a run started eagerly
    may resume compiled (and back), while a real difference is still refused."""
    saved = {"algorithm": "ep", "T": 5, "K": 2, "beta": 0.5, "compile": False}
    ckpt = {"hyper_parameters": saved}
    check_same_hparams("eager.ckpt", ckpt, {**saved, "compile": True})
    with pytest.raises(ConfigError, match="model.K: 2 there, 3 here"):
        check_same_hparams("eager.ckpt", ckpt, {**saved, "compile": True, "K": 3})


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("fit", "; continue with `eqprop fit --config ... --ckpt_path last` (the same options)"),
        ("compare", "; `eqprop compare` does not resume: run it again (the stopped legs stay"),
        ("test", ""),
    ],
)
def test_an_interruption_says_how_to_go_on_for_its_command(
    command: str, hint: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Ctrl-C or SIGTERM (Lightning's SIGTERMException) ends in one line with status 1, and only
    `fit` is told to resume with --ckpt_path last (compare had the same advice, which failed)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from eqprop_lightning import commands

    def interrupted(args: list[str]) -> None:
        raise SIGTERMException

    monkeypatch.setitem(commands.COMMANDS, command, interrupted)
    with pytest.raises(SystemExit) as stop:
        main([command, "--config", "mnist/p1h"])
    assert stop.value.code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("eqprop: error: stopped by Ctrl-C or SIGTERM" + hint)
    assert hint or line == "eqprop: error: stopped by Ctrl-C or SIGTERM"


def test_the_module_is_importable_from_the_package_without_importing_torch_first() -> None:
    """``from eqprop_lightning import EqPropModule`` works; ``import eqprop_lightning`` alone
    imports no torch (the CLI's --help stays fast)."""
    code = (
        "import sys, eqprop_lightning; assert 'torch' not in sys.modules; "
        "from eqprop_lightning import EqPropModule; "
        "from eqprop_lightning.module import EqPropModule as M; assert EqPropModule is M; "
        "import pytest\n"
        "with pytest.raises(AttributeError, match='no attribute'): eqprop_lightning.Nope"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("field", "saved", "given"),
    [
        ("data_dir", "/old/data", "/new/data"),
        ("cache_dir", None, "/scratch/cache"),
        ("num_workers", 0, 4),
        ("download", False, True),
        ("verify_checksums", True, False),
        ("test_batch_size", 1000, 100),
    ],
)
def test_data_settings_check_lets_a_run_resume_with_its_data_elsewhere(
    field: str, saved: object, given: object
) -> None:
    """Where the data lives and how it is read or evaluated may change on resume (a moved data
    folder, more workers); what is trained on may not, and only that is named."""

    trained = {"batch_size": 20, "val_split": 0, field: saved}
    ckpt = {"datamodule_hyper_parameters": trained}
    check_same_data("run.ckpt", ckpt, {"init_args": {**trained, field: given}})
    other = {"init_args": {**trained, field: given, "batch_size": 4}}
    with pytest.raises(ConfigError, match=r"\(data\.init_args\.batch_size: 20 there, 4 here\)"):
        check_same_data("run.ckpt", ckpt, other)


def test_a_resume_keeps_the_runs_seed(tmp_path: Path) -> None:
    """Where ``seed_everything`` would draw a seed (true, null), a resume takes the run's own:
    the checkpoint's, else (checkpoints written before it was stored) its run's config.yaml's;
    another integer, or false (no seeding), is refused, naming where the run's seed was read."""
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    # no seed of the run's anywhere: nothing to keep
    seeds = [True, None, 3, False]
    assert [resume_seed(ckpt, {}, seed) for seed in seeds] == seeds
    (tmp_path / "config.yaml").write_text("seed_everything: 0\n")
    assert [resume_seed(ckpt, {}, seed) for seed in (True, None, 0)] == [0, 0, 0]
    for seed in (3, False):
        with pytest.raises(ConfigError, match=rf"seed_everything=0 \({tmp_path}/config.yaml\)"):
            resume_seed(ckpt, {}, seed)
    saved = {"seed_everything": 5}  # the checkpoint's seed is the run's, over config.yaml's
    assert [resume_seed(ckpt, saved, seed) for seed in (True, None, 5)] == [5, 5, 5]
    with pytest.raises(ConfigError, match=r"seed_everything=5 \(the checkpoint\).* has 0"):
        resume_seed(ckpt, saved, 0)
    # a run that seeded nothing (false; its checkpoint holds an exported PL_GLOBAL_SEED)
    (tmp_path / "config.yaml").write_text("seed_everything: false\n")
    assert resume_seed(ckpt, saved, False) is False


def test_resuming_a_run_whose_seed_was_drawn_keeps_it(
    fake_mnist: Path, in_tmp: Path, monkeypatch, caplog
) -> None:
    """``--seed_everything true`` takes the seed of ``PL_GLOBAL_SEED`` (else 0); resuming with it
    where that variable differs (another shell) goes on with the run's seed (its training order
    and split), not the variable's, and says so."""
    args = ["fit", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")  # 1 == True: the resume must still take it
    main([*args, "--seed_everything", "true"])
    run = in_tmp / "runs" / "p1h" / "version_0"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["seed_everything"] == json.loads((run / "results.json").read_text())["seed"] == 1
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    resume = ["--trainer.max_epochs", "2", "--ckpt_path", "last", "--seed_everything", "true"]
    with caplog.at_level("INFO"):
        main([*args, *resume])
    assert "resuming with the run's seed_everything=1" in caplog.text
    assert json.loads((run / "results.json").read_text())["seed"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] == 1


def test_ckpt_path_last_is_the_newest_checkpoint_of_the_algorithm(tmp_path: Path) -> None:
    """``--ckpt_path last``: of the run root's last.ckpt files written with the config's
    algorithm, the one modified last (not the first by name, nor a newer one of BPTT)."""
    runs = {"version_0": ("ep", 2000), "version_1": ("ep", 1000), "version_2": ("bptt", 3000)}
    for name, (algorithm, mtime) in runs.items():
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        torch.save({"hyper_parameters": {"algorithm": algorithm}}, ckpt)
        os.utime(ckpt, (mtime, mtime))
    ep, bptt = SimpleNamespace(algorithm="ep"), SimpleNamespace(algorithm="bptt")
    newest = newest_last_checkpoint(tmp_path, ep)
    assert newest == tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    assert newest_last_checkpoint(tmp_path, bptt).parent.parent.name == "version_2"


def test_prediction_writer_concatenates_the_batches_in_order(tmp_path: Path) -> None:
    """predictions.pt holds the batches one after the other, in the loader's order, in the run
    directory (trainer.log_dir, not default_root_dir) unless a path is given; under DDP each
    rank writes <stem>.rank<r>.pt, with the dataset index of each row (a rank's share is
    interleaved with the others'); of several loaders' predictions, the first loader's; each
    row's name where the dataset names its examples."""
    run = tmp_path / "root" / "eqprop" / "version_3"
    unnamed = SimpleNamespace(dataset=list(range(6)))
    trainer = SimpleNamespace(
        world_size=1, global_rank=0, log_dir=str(run), default_root_dir=str(tmp_path / "root"),
        predict_dataloaders=unnamed,
    )  # fmt: skip
    batches = [
        {"prediction": torch.tensor([i, i + 1]), "output": torch.full((2, 3), float(i))}
        for i in (0, 2, 4)
    ]
    PredictionWriter().write_on_epoch_end(trainer, None, batches, [[[0, 1], [2, 3], [4, 5]]])
    written = torch.load(run / "predictions.pt", weights_only=True)
    assert written["index"].tolist() == [0, 1, 2, 3, 4, 5]
    assert written["prediction"].tolist() == [0, 1, 2, 3, 4, 5]
    assert written["output"][:, 0].tolist() == [0.0, 0.0, 2.0, 2.0, 4.0, 4.0]
    assert written["output"].shape == (6, 3)
    assert "name" not in written
    assert sorted(p.name for p in (tmp_path / "root").rglob("*.pt")) == ["predictions.pt"]

    named = SimpleNamespace(dataset=SimpleNamespace(names=[f"review {i}" for i in range(12)]))
    ddp = SimpleNamespace(
        world_size=2, global_rank=1, log_dir=str(run), predict_dataloaders=[named, unnamed]
    )
    other = [{"prediction": torch.tensor([9]), "output": torch.zeros(1, 3)}]
    indices = [[[1, 3], [5, 7], [9, 11]], [[0]]]  # per loader, per batch
    PredictionWriter(str(tmp_path / "p.pt")).write_on_epoch_end(
        ddp, None, [batches, other], indices
    )
    by_rank = torch.load(tmp_path / "p.rank1.pt", weights_only=True)
    assert by_rank["prediction"].tolist() == [0, 1, 2, 3, 4, 5]
    assert by_rank["index"].tolist() == [1, 3, 5, 7, 9, 11]
    assert by_rank["name"] == [f"review {i}" for i in (1, 3, 5, 7, 9, 11)]


@pytest.mark.parametrize("target", ["directory", "under_a_file"])
def test_predictions_path_that_cannot_be_written_is_refused_before_predicting(
    target: str, fake_mnist: Path, in_tmp: Path, capsys
) -> None:
    """--predictions.path naming a directory, or a file under a regular file, failed with a
    traceback only after predicting the whole set; now one line, before the first batch."""
    notes = in_tmp / "notes.txt"
    notes.write_text("keep me\n")
    out = {"directory": in_tmp, "under_a_file": notes / "x.pt"}[target]
    said = {
        "directory": f"--predictions.path {out} is a directory: give the file to write",
        "under_a_file": f"--predictions.path {out}: {notes} is a file, not a directory",
    }[target]
    args = ["predict", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    args += ["--predictions.path", str(out), "--trainer.logger", "false"]
    with pytest.warns(UserWarning, match="no --ckpt_path"):
        line = _error_line(args, capsys)
    assert line.startswith("eqprop: error: ") and said in line
    assert notes.read_text() == "keep me\n" and not list(in_tmp.rglob("*.pt"))


def test_prediction_writer_checks_its_path_when_set_up_for_predict(tmp_path: Path) -> None:
    """The default path (the run directory's predictions.pt) and a DDP rank's are checked too;
    other stages (fit, test) write no predictions and are not refused."""
    run = tmp_path / "version_0"
    (run / "predictions.pt").mkdir(parents=True)
    trainer = SimpleNamespace(world_size=1, global_rank=0, log_dir=str(run))
    module = SimpleNamespace(predict_step=lambda batch, batch_idx: None)
    writer = PredictionWriter()
    writer.setup(trainer, module, "fit")
    with pytest.raises(ConfigError, match=r"predictions\.pt is a directory: give"):
        writer.setup(trainer, module, "predict")
    (tmp_path / "p.rank1.pt").mkdir()
    ddp = SimpleNamespace(world_size=2, global_rank=1, log_dir=str(run))
    with pytest.raises(ConfigError, match=r"p\.rank1\.pt is a directory"):
        PredictionWriter(str(tmp_path / "p.pt")).setup(ddp, module, "predict")
    PredictionWriter(str(tmp_path / "new" / "p.pt")).setup(trainer, module, "predict")  # fine


def test_compare_without_a_logger_is_a_config_error(fake_mnist: Path, in_tmp: Path, capsys):
    """compare writes both legs into a directory beside the logger's runs: without a logger it
    died with "'NoneType' object has no attribute 'save_dir'"."""
    args = ["compare", "--config", config("p1h"), *shrink(fake_mnist, epochs=1)]
    line = _error_line([*args, "--trainer.logger", "false"], capsys)
    assert line == (
        "eqprop: error: trainer.logger=false: compare writes its two runs (ep/, bptt/) under "
        "the logger's directory; keep the config's TensorBoardLogger"
    )
    assert not (in_tmp / "runs").exists()
