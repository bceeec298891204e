"""Shipped models: every checkpoint in ``checkpoints/index.json`` still gives its recorded test
error (full test set, or the recorded fixed subset); the index machinery on a tiny checkpoint.

``EQPROP_SHIPPED_INDEX=PATH`` checks another index (its checkpoints relative to its folder, its
configs relative to the folder above)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from eqprop_lightning import shipped
from eqprop_lightning.cli import EqPropCLI, main
from eqprop_lightning.datamodules.data_root import ENV_VAR
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.shipped import (
    INDEX,
    TRAINING_STATE,
    add,
    check_entry,
    evaluate_error,
    load_index,
    slim,
    verify,
)
from tests.test_text_data import real_text_root

SHIPPED_INDEX = Path(os.environ.get("EQPROP_SHIPPED_INDEX", INDEX))
ENTRIES = load_index(SHIPPED_INDEX)  # a malformed index fails the collection
#: configs whose data are not committed (``../shared/data`` or a user's download)
TEXT_CONFIGS = ("configs/imdb/", "configs/snli/")


@pytest.mark.skipif(not ENTRIES, reason=f"{SHIPPED_INDEX} is absent or empty")
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.checkpoint for e in ENTRIES])
def test_shipped_checkpoint_keeps_its_test_error(entry, monkeypatch):
    if entry.config.startswith(TEXT_CONFIGS):  # MNIST ships with the repository
        # skips unless the text files are there, then every error fails the test
        monkeypatch.setenv(ENV_VAR, str(real_text_root()))
    verify(entry, SHIPPED_INDEX.parent)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, fake_mnist) -> Path:
    """``<repo>/checkpoints/tiny.ckpt``, a P-1h-like net trained for one epoch of 5 batches on
    the fake MNIST, and its config ``<repo>/configs/tiny.yaml`` (test batches of 25)."""
    repo = tmp_path_factory.mktemp("repo")
    (repo / "configs").mkdir()
    (repo / "checkpoints").mkdir()
    config = {
        "seed_everything": 0,
        "model": {
            "net": {
                "class_path": "eqprop_lightning.nets.PrototypicalFC",
                "init_args": {"size_tab": [10, 32, 784], "activation": "sigm"},
            },
            "T": 10,
            "K": 4,
            "beta": 0.1,
            "lrs": [0.04, 0.08],
        },
        "data": {
            "class_path": "eqprop_lightning.datamodules.MNISTDataModule",
            "init_args": {
                "data_dir": str(fake_mnist),
                "batch_size": 20,
                "test_batch_size": 25,
                "download": False,
                "verify_checksums": False,
            },
        },
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 5,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(repo / "runs"), "name": "tiny"},
            },
        },
    }
    (repo / "configs" / "tiny.yaml").write_text(yaml.safe_dump(config))
    EqPropCLI(args=["fit", f"--config={repo / 'configs' / 'tiny.yaml'}"])
    last = repo / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    shutil.copy(last, repo / "checkpoints" / "tiny.ckpt")
    return repo


def test_add_records_what_eqprop_test_prints(tiny, capsys):
    index = tiny / "checkpoints" / "index.json"
    entry = add(tiny / "checkpoints" / "tiny.ckpt", tiny / "configs" / "tiny.yaml", 1, 0, 50, index)
    assert load_index(index) == [entry]
    assert (entry.algorithm, entry.epochs, entry.seed, entry.subset) == ("ep", 1, 0, 50)
    results = json.loads((tiny / "runs" / "tiny" / "version_0" / "results.json").read_text())
    assert entry.test_error == results["epochs"][-1]["test_error"]  # the final epoch's
    assert verify(entry, index.parent) == pytest.approx(entry.subset_error, abs=1e-4)
    capsys.readouterr()
    ckpt = str(tiny / "checkpoints" / "tiny.ckpt")
    main(["test", f"--config={tiny / 'configs' / 'tiny.yaml'}", f"--ckpt_path={ckpt}"])
    printed = re.search(r"test/error\s+([0-9.]+)", capsys.readouterr().out)
    assert round(float(printed[1]), 4) == entry.test_error
    with pytest.raises(ConfigError, match="already has an entry"):
        add(tiny / "checkpoints" / "tiny.ckpt", tiny / "configs" / "tiny.yaml", 1, 0, None, index)


def test_a_slim_checkpoint_tests_as_the_full_one(tiny):
    full = tiny / "checkpoints" / "tiny.ckpt"
    out = slim(full, tiny / "checkpoints" / "slim" / "tiny.ckpt")
    saved = torch.load(out, weights_only=True)
    assert set(TRAINING_STATE) < set(torch.load(full, weights_only=True))
    # the weights and settings only: no optimizer, loop or random state, nor the callbacks'
    # (whose paths are the training machine's: Lightning warns of them at every test)
    assert sorted(saved) == [
        "datamodule_hparams_name", "datamodule_hyper_parameters", "epoch", "global_step",
        "hparams_name", "hyper_parameters", "pytorch-lightning_version", "state_dict",
    ]  # fmt: skip
    config = tiny / "configs" / "tiny.yaml"
    assert evaluate_error(config, out) == evaluate_error(config, full)


def test_a_half_slim_checkpoint_is_the_model_rounded_to_float16(tiny):
    full = tiny / "checkpoints" / "tiny.ckpt"
    out = slim(full, tiny / "checkpoints" / "slim" / "tiny-half.ckpt", half=True)
    saved = torch.load(out, weights_only=True)["state_dict"]
    weights = {k: v for k, v in saved.items() if k.startswith("net.")}
    assert weights and all(v.dtype == torch.float16 for v in weights.values())
    # the same model rounded by hand, stored in float32, tests the same
    rounded = torch.load(full, weights_only=True)
    for k in weights:
        rounded["state_dict"][k] = rounded["state_dict"][k].half().float()
    torch.save(rounded, tiny / "checkpoints" / "slim" / "tiny-rounded.ckpt")
    config = tiny / "configs" / "tiny.yaml"
    assert evaluate_error(config, out) == evaluate_error(
        config, tiny / "checkpoints" / "slim" / "tiny-rounded.ckpt"
    )


def test_a_perturbed_checkpoint_fails(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the evaluation writes nothing (no run directory, no config)
    config, moved = tiny / "configs" / "tiny.yaml", tiny / "checkpoints" / "moved.ckpt"
    shutil.copy(tiny / "checkpoints" / "tiny.ckpt", moved)
    raw = dict(checkpoint="moved.ckpt", config="configs/tiny.yaml", epochs=1, seed=0)
    raw |= dict(algorithm="ep", test_error=evaluate_error(config, moved))
    entry = check_entry(raw, "entry", tiny / "checkpoints")
    verify(entry, tiny / "checkpoints")  # unchanged: passes
    assert list(tmp_path.iterdir()) == []
    saved = torch.load(moved, weights_only=True)
    bias = next(k for k in saved["state_dict"] if k.endswith("bias"))
    assert saved["state_dict"][bias].shape == (10,)  # the output layer's bias
    # predict class 0 for every image: 90 % error on the fake test set (10 balanced classes)
    assert entry.test_error != 90.0
    saved["state_dict"][bias][0] += 100.0
    torch.save(saved, moved)
    with pytest.raises(AssertionError, match=r"moved.ckpt: test error .* recorded, 90.0000 %"):
        verify(entry, tiny / "checkpoints")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "rbp"}, "algorithm='rbp'"),
        ({"test_error": 101.0}, r"test_error=101.0 must be a percentage"),
        ({"test_error": "2.4"}, "test_error='2.4' must be of type"),
        ({"epochs": 0}, "epochs=0 must be >= 1"),
        ({"subset": 50}, "subset and subset_error go together"),
        ({"checkpoint": "absent.ckpt"}, "checkpoint='absent.ckpt': no such file"),
        ({"config": "configs/absent.yaml"}, "config='configs/absent.yaml': no such file"),
        ({"best_error": 1.0}, r"unknown keys \['best_error'\]"),
    ],
)
def test_bad_index_entries_are_refused(tiny, change, message):
    good = dict(
        checkpoint="tiny.ckpt",
        config="configs/tiny.yaml",
        test_error=10.0,
        epochs=1,
        seed=0,
        algorithm="ep",
    )
    check_entry(good, "entry 0", tiny / "checkpoints")
    with pytest.raises(ConfigError, match=message):
        check_entry(good | change, "entry 0", tiny / "checkpoints")


def test_absent_index_is_empty_and_a_non_list_is_refused(tmp_path):
    assert load_index(tmp_path / "index.json") == []
    (tmp_path / "index.json").write_text('{"checkpoint": "x"}')
    with pytest.raises(ConfigError, match="must hold a JSON list"):
        load_index(tmp_path / "index.json")


def test_help_describes_the_tool_in_whole_sentences(capsys):
    """The description is the docstring's first paragraph; its first line alone, as before, stopped
    mid-sentence ("... and the evaluation that")."""
    with pytest.raises(SystemExit):
        shipped.main(["--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert " ".join(shipped.__doc__.split("\n\n")[0].split()) in described


def test_readme_python_example_runs(fake_mnist, tmp_path, monkeypatch):
    """The README's "From Python" block runs as written (on the fake MNIST, with the shipped
    P-1h checkpoint), and its error is what ``test`` measures on the same images."""
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    section = readme.split("### From Python", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n### ", 1)[0], re.DOTALL)
    code = code.replace('"checkpoints/shipped/', f'"{repo}/checkpoints/shipped/')
    code = code.replace(
        "MNISTDataModule(batch_size=20)", "MNISTDataModule(batch_size=20, verify_checksums=False)"
    )
    monkeypatch.setenv("EQPROP_DATA_DIR", str(fake_mnist))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["output"].shape == (100, 10)  # the fake MNIST's 100 test images
    # and writes only the checkpoint it saves: run from a checkout's root, Lightning's default
    # ModelCheckpoint wrote into ./checkpoints/, the shipped models' folder
    assert [p.name for p in tmp_path.iterdir()] == ["p1h-small.ckpt"]
    assert scope["model"].hparams.T == 20
    # the block's error is what `test` measures on the same (fake) test images
    import lightning as L

    tester = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (measured,) = tester.test(scope["shipped"], datamodule=scope["data"], verbose=False)
    assert float(scope["error"]) == pytest.approx(measured["test/error"], abs=1e-4)


def test_verify_tolerates_less_than_half_an_example(monkeypatch, tmp_path):
    """On 200 examples one example is 0.5 %: a measured error within 0.25 % of the recorded one
    passes, one a whole example off fails (a looser check would miss a changed prediction)."""
    entry = shipped.Entry("x.ckpt", "c.yaml", 5.0, 1, 0, "ep", subset=200, subset_error=5.0)
    for measured, ok in ((5.2, True), (4.8, True), (5.3, False), (4.7, False), (5.5, False)):
        monkeypatch.setattr(shipped, "evaluate_error", lambda *a, m=measured: m)
        if ok:
            assert verify(entry, tmp_path) == measured
        else:
            with pytest.raises(AssertionError, match="recorded"):
                verify(entry, tmp_path)


@pytest.mark.parametrize("key", ["test_error", "subset_error"])
def test_a_negative_error_is_refused(tmp_path, key):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "checkpoints" / "t.ckpt").write_bytes(b"")
    (tmp_path / "configs" / "t.yaml").write_text("")
    good = dict(checkpoint="t.ckpt", config="configs/t.yaml", test_error=1.0, epochs=1, seed=0,
                algorithm="ep", subset=10, subset_error=1.0)  # fmt: skip
    check_entry(good, "e", tmp_path / "checkpoints")
    with pytest.raises(ConfigError, match=rf"{key}=-0.5 must be a percentage"):
        check_entry(good | {key: -0.5}, "e", tmp_path / "checkpoints")


def test_add_records_the_checkpoints_algorithm(tmp_path, monkeypatch):
    """The algorithm recorded is the checkpoint's hyperparameter (here bptt), not a default."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "checkpoints").mkdir()
    config, ckpt = tmp_path / "configs" / "c.yaml", tmp_path / "checkpoints" / "c.ckpt"
    config.write_text("{}\n")
    torch.save({"hyper_parameters": {"algorithm": "bptt"}, "state_dict": {}}, ckpt)
    monkeypatch.setattr(shipped, "evaluate_error", lambda config, ckpt, subset=None: 12.5)
    entry = add(ckpt, config, 3, 7, None, tmp_path / "checkpoints" / "index.json")
    assert (entry.algorithm, entry.epochs, entry.seed, entry.test_error) == ("bptt", 3, 7, 12.5)
    assert load_index(tmp_path / "checkpoints" / "index.json") == [entry]


def test_a_half_slim_checkpoint_halves_only_float32_tensors(tmp_path):
    """float64 and integer tensors (buffers, counters) keep their dtype; float32 become float16."""
    state = {
        "w": torch.tensor([1.0, 2.0 / 3.0]),
        "d": torch.tensor([1.0 / 3.0], dtype=torch.float64),
        "n": torch.tensor([5]),
    }
    torch.save({"state_dict": state, "optimizer_states": [], "epoch": 1}, tmp_path / "full.ckpt")
    out = slim(tmp_path / "full.ckpt", tmp_path / "slim.ckpt", half=True)
    saved = torch.load(out, weights_only=True)
    assert sorted(saved) == ["epoch", "state_dict"]
    dtypes = {k: v.dtype for k, v in saved["state_dict"].items()}
    assert dtypes == {"w": torch.float16, "d": torch.float64, "n": torch.int64}
    assert saved["state_dict"]["d"].item() == 1.0 / 3.0
    assert saved["state_dict"]["w"][1].item() == float(torch.tensor(2.0 / 3.0).half())


def _refused(capsys, args: list[str]) -> str:
    """``python -m eqprop_lightning.shipped ARGS``'s error: exit status 2 and one line on stderr
    (no traceback) naming the problem."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        shipped.main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m eqprop_lightning.shipped: error: ")
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def run_ckpt(tmp_path) -> Path:
    """A run's checkpoint with its optimizer's state (a stand-in for ``RUN/last.ckpt``)."""
    path = tmp_path / "run" / "last.ckpt"
    path.parent.mkdir()
    state = {"hyper_parameters": {"algorithm": "ep"}, "state_dict": {"w": torch.ones(2)}}
    torch.save(state | {"optimizer_states": [{"step": 1}], "epoch": 3}, path)
    return path


@pytest.mark.parametrize(
    ("checkpoint", "out", "message"),
    [
        ("absent.ckpt", "slim.ckpt", r"--checkpoint='\S*absent.ckpt': no such file"),
        ("notes.txt", "slim.ckpt", r"--checkpoint='\S*notes.txt' is not a PyTorch checkpoint"),
        ("data.zip", "slim.ckpt", r"--checkpoint='\S*data.zip' cannot be read as a checkpoint"),
        ("run/last.ckpt", "outdir", r"--out \S*outdir is a directory"),
        ("run/last.ckpt", "notes.txt/s.ckpt", r"--out \S*s.ckpt: \S*notes.txt is a file"),
        ("run/last.ckpt", "run/last.ckpt", r"--out \S*last.ckpt is the --checkpoint itself"),
        ("run/last.ckpt", "run/../run/last.ckpt", r"--out \S*last.ckpt is the --checkpoint"),
        ("run/last.ckpt", "link.ckpt", r"--out \S*link.ckpt is the --checkpoint itself"),
    ],
)
def test_slim_refuses_bad_input_in_one_line_and_keeps_the_run(
    run_ckpt, tmp_path, capsys, checkpoint, out, message
):
    """A missing or non-checkpoint file, a directory as --out, or --out the checkpoint itself
    (slimming in place would drop the state the run resumes from) exit with one line."""
    import zipfile

    (tmp_path / "notes.txt").write_text("hello\n")
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        archive.writestr("x.txt", "not a checkpoint")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "link.ckpt").symlink_to(run_ckpt)
    before = run_ckpt.read_bytes()
    args = ["slim", "--checkpoint", str(tmp_path / checkpoint), "--out", str(tmp_path / out)]
    assert re.search(message, _refused(capsys, args))
    assert run_ckpt.read_bytes() == before
    assert "optimizer_states" in torch.load(run_ckpt, weights_only=True)  # still resumable
    assert not (tmp_path / "slim.ckpt").exists() and list((tmp_path / "outdir").iterdir()) == []


@pytest.fixture
def add_repo(tmp_path, monkeypatch) -> Path:
    """A repository with ``checkpoints/c.ckpt`` (algorithm ep), ``configs/mnist/p1h.yaml`` as its
    packaged config ``mnist/p1h``, and an evaluation that fails the test if it runs."""
    (tmp_path / "configs" / "mnist").mkdir(parents=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "configs" / "mnist" / "p1h.yaml").write_text("{}\n")
    state = {"hyper_parameters": {"algorithm": "ep"}, "state_dict": {}}
    torch.save(state, tmp_path / "checkpoints" / "c.ckpt")
    monkeypatch.setattr("eqprop_lightning.resources._PACKAGE", tmp_path / "package")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the arguments were checked")

    monkeypatch.setattr(shipped, "evaluate_error", no_evaluation)
    return tmp_path


def _add_args(repo: Path, **change: str) -> list[str]:
    options = {
        "checkpoint": str(repo / "checkpoints" / "c.ckpt"),
        "config": str(repo / "configs" / "mnist" / "p1h.yaml"),
        "epochs": "3",
        "seed": "0",
        "index": str(repo / "checkpoints" / "index.json"),
    } | change
    return ["add", *(arg for k, v in options.items() for arg in (f"--{k}", v))]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": "-1"}, "epochs=-1 must be >= 1"),
        ({"subset": "0"}, "subset=0 must be a positive number"),
        ({"checkpoint": "absent.ckpt"}, r"--checkpoint='\S*absent.ckpt': no such file"),
        ({"config": "mnist/p9h"}, r"--config 'mnist/p9h': no such file.*closest: mnist/p1h"),
        ({"index": "."}, r"--index \S* is a directory"),
    ],
)
def test_add_checks_every_argument_before_evaluating(add_repo, capsys, change, message):
    """Each bad value exits with one line naming it, before any (minutes-long) evaluation."""
    if change.get("checkpoint") == "absent.ckpt":
        change["checkpoint"] = str(add_repo / "checkpoints" / "absent.ckpt")
    if change.get("index") == ".":
        change["index"] = str(add_repo / "checkpoints")
    assert re.search(message, _refused(capsys, _add_args(add_repo, **change)))
    assert not (add_repo / "checkpoints" / "index.json").exists()


def test_add_refuses_an_indexed_checkpoint_before_evaluating(add_repo, capsys, monkeypatch):
    monkeypatch.setattr(shipped, "evaluate_error", lambda config, ckpt, subset=None: 12.5)
    shipped.main(_add_args(add_repo))
    index = (add_repo / "checkpoints" / "index.json").read_text()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated before the arguments were checked")

    monkeypatch.setattr(shipped, "evaluate_error", no_evaluation)
    assert "already has an entry for c.ckpt" in _refused(capsys, _add_args(add_repo))
    assert (add_repo / "checkpoints" / "index.json").read_text() == index


def test_add_takes_a_packaged_config_name_as_eqprop_does(add_repo, capsys, monkeypatch):
    """``--config mnist/p1h`` is the packaged configs/mnist/p1h.yaml, as for ``eqprop fit``."""
    monkeypatch.setattr(shipped, "evaluate_error", lambda config, ckpt, subset=None: 12.5)
    shipped.main(_add_args(add_repo, config="mnist/p1h"))
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"] == "configs/mnist/p1h.yaml"
    assert load_index(add_repo / "checkpoints" / "index.json")[0].config == printed["config"]
