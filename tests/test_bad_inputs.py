"""Bad configs, checkpoints and data files through `eqprop fit`: each exits with status 2 and a
one-line message naming the field or file, the value and what is allowed, without a traceback or
the usage, before anything is written under runs/ (so nothing half-written is left for the next
run)."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from eqprop_lightning.cli import main
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.nets import PrototypicalFC
from tests.test_cli import SMALL_SIZE_TAB, config, shrink


def mnist_copy(data: Path, tmp: Path, edit: Callable[[Path], None]) -> list[str]:
    """A copy of the fake MNIST with one raw file edited; the args that point at it."""
    root = tmp / "bad_mnist"
    shutil.copytree(data, root)
    edit(root / "MNIST" / "raw")
    for extracted in (root / "MNIST" / "raw").glob("*-ubyte"):  # keep only the edited .gz
        extracted.unlink()
    return ["--data.data_dir", str(root)]


def truncate(name: str) -> Callable[[Path], None]:
    def edit(raw: Path) -> None:
        path = raw / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return edit


def rewrite(name: str, change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def edit(raw: Path) -> None:
        path = raw / name
        path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))

    return edit


def garbage(name: str) -> Callable[[Path], None]:
    return lambda raw: (raw / name).write_bytes(b"this is not a gzip file")


def wrong_magic(raw_bytes: bytes) -> bytes:
    return raw_bytes[:3] + b"\x0c" + raw_bytes[4:]


def checkpoint_of_another_net(tmp: Path) -> str:
    """A checkpoint of P-1h at full size (784-512-10), without hyperparameters."""
    path = tmp / "other.ckpt"
    module = EqPropModule(PrototypicalFC([10, 512, 784]), [0.1, 0.1], beta=0.1)
    torch.save({"state_dict": module.state_dict()}, path)
    return str(path)


LABELS, IMAGES = "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"

# (id, config, extra args (a list, or a function of (fake MNIST, tmp dir)), expected text)
CASES = [
    # model
    ("lrs-length", "p1h", ["--model.lrs", "[0.1]"], ["lrs=[0.1]", "2 weight layers"]),
    ("lrs-negative", "p1h", ["--model.lrs", "[0.1, -0.1]"], ["lrs=[0.1, -0.1]", "> 0"]),
    ("lrs-infinite", "p1h", ["--model.lrs", "[0.1, .inf]"], ["lrs=[0.1, inf]", "finite"]),
    ("size_tab-short", "p1h", ["--model.net.init_args.size_tab", "[784]"],
     ["size_tab=[784]", "at least 2"]),
    ("beta-zero", "p1h", ["--model.beta", "0"], ["beta=0.0", "finite and > 0"]),
    ("beta-negative", "p1h", ["--model.beta", "-0.1"], ["beta=-0.1", "finite and > 0"]),
    ("beta-infinite", "p1h", ["--model.beta", ".inf"], ["beta=inf", "finite and > 0"]),
    ("K-over-T", "p1h", ["--model.K", "50", "--model.T", "40"], ["K=50", "T=40", "K <= T"]),
    ("activation", "p1h", ["--model.net.init_args.activation", "relu"],
     ["activation='relu'", "sigm"]),
    ("dt-energy-based", "eb1h", ["--model.net.init_args.dt", "1.5"], ["dt=1.5", "(0, 1]"]),
    ("cosine_t_max", "p1h", ["--model.cosine_t_max", "0"], ["cosine_t_max=0", "positive"]),
    ("eta_min", "p1h", ["--model.eta_min=-1e-5"], ["eta_min=-1e-05", ">= 0"]),
    ("eta_min-no-schedule", "p1h", ["--model.eta_min=0.001"], ["eta_min=0.001", "cosine_t_max"]),
    ("convergence_tol", "p1h", ["--model.convergence_tol", "-1"],
     ["convergence_tol=-1.0", "> 0"]),
    ("algorithm", "p1h", ["--model.algorithm", "sgd"],
     ["algorithm='sgd' is not supported", "['ep', 'cep', 'bptt', 'rbp']", "package.module.Class"]),
    ("algorithm-path", "p1h", ["--model.algorithm", "mypackage.MyRule"],
     ["algorithm='mypackage.MyRule'", "does not import", "No module named 'mypackage'"]),
    ("optimizer", "p1h", ["--model.optimizer", "rmsprop"], ["model.optimizer", "rmsprop"]),
    ("T-not-int", "p1h", ["--model.T", "abc"], ["model.T", "abc"]),
    ("T-float", "p1h", ["--model.T", "40.5"], ["model.T", "40.5"]),
    ("unknown-key", "p1h", ["--model.betta", "0.1"], ["unrecognized arguments", "betta"]),
    ("unknown-net-key", "p1h", ["--model.net.init_args.sizetab", "[3]"],
     ["model.net", "PrototypicalFC", "'sizetab' is not accepted"]),
    ("config-not-yaml", "p1h",
     lambda data, tmp: ["--config", _file(tmp, "bad.yaml", "a:\n  b: [1\n")],
     ["--config", "bad.yaml: not valid YAML at line 3, column 1", "expected ',' or ']'"]),
    ("config-empty", "p1h", lambda data, tmp: ["--config", _file(tmp, "empty.yaml", "")],
     ["--config", "empty.yaml: a config is a YAML mapping", "this file holds nothing"]),
    ("config-a-list", "p1h", lambda data, tmp: ["--config", _file(tmp, "list.yaml", "- 1\n")],
     ["list.yaml: a config is a YAML mapping", "this file holds a list"]),
    # options of the other rule
    ("bptt-beta", "p1h", ["--model.algorithm", "bptt"],
     ["beta=0.1 does not apply to algorithm 'bptt'", "model.beta null"]),
    ("bptt-symmetric", "p1h", ["--model.algorithm", "bptt", "--model.beta", "null",
     "--model.symmetric", "true"], ["symmetric=True applies to algorithm 'ep' only, not 'bptt'"]),
    ("ep-no-beta", "p1h", ["--model.beta", "null"], ["beta=None must be finite and > 0 for EP"]),
    ("gdu-T", "p1h", ["--gdu.every_n_steps", "1", "--gdu.T", "7"],
     ["gdu.T=7 differs from model.T=5", "leave gdu.T unset"]),
    ("gdu-beta", "p1h", ["--gdu.every_n_steps", "1", "--gdu.beta", "0"], ["gdu.beta=0.0", "> 0"]),
    # the net against the data
    ("input-size", "p1h", ["--model.net.init_args.size_tab", "[10, 16, 100]"],
     ["takes examples of shape (100,)", "size_tab[-1]", "MNISTDataModule gives (784,)"]),
    ("output-size", "p1h", ["--model.net.init_args.size_tab", "[5, 16, 784]"],
     ["has 5 output units", "size_tab[0]", "MNISTDataModule has 10 classes"]),
    ("conv-flat-images", "pconv", ["--model.net.init_args.size_tab", "[10]",
     "--data.flatten", "true"], ["shape (1, 28, 28)", "flatten: false", "gives (784,)"]),
    # data, trainer and callbacks
    ("batch_size", "p1h", ["--data.batch_size", "0"], ["batch_size", "got 0"]),
    ("num_workers", "p1h", ["--data.num_workers", "-1"], ["num_workers", "got -1"]),
    ("val_split", "p1h", ["--data.val_split", "200"],
     ["val_split=200", "smaller than the 200 training images"]),
    ("gdu-every", "p1h", ["--gdu.every_n_steps", "-1"], ["gdu.every_n_steps=-1", ">= 0"]),
    ("gdu-no-logger", "p1h", ["--gdu.every_n_steps", "1", "--trainer.logger", "false"],
     ["gdu.every_n_steps=1", "trainer.logger=false", "logs to the logger"]),
    ("gdu-figures-csv", "p1h", ["--gdu.every_n_steps", "1", "--gdu.figures", "true",
     "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
     "--trainer.logger.init_args.save_dir", "csv"],
     ["gdu.figures=True", "TensorBoard", "CSVLogger", "gdu.figures false"]),
    ("devices", "p1h", ["--trainer.devices", "0"], ["devices", "not a valid input"]),
    # checkpoints
    ("ckpt-missing", "p1h", lambda data, tmp: ["--ckpt_path", str(tmp / "nope.ckpt")],
     ["nope.ckpt", "no such file"]),
    ("ckpt-directory", "p1h", lambda data, tmp: ["--ckpt_path", str(tmp)],
     ["is a directory: give the checkpoint file in it"]),
    ("ckpt-corrupt", "p1h", lambda data, tmp: ["--ckpt_path", str(_corrupt(tmp))],
     ["broken.ckpt", "not a PyTorch checkpoint", "truncated or corrupt"]),
    ("ckpt-bit-flips", "p1h", lambda data, tmp: ["--ckpt_path", _flipped(tmp)],
     ["flipped.ckpt", "is corrupt", "fails its CRC-32 check"]),
    ("ckpt-other-net", "p1h", lambda data, tmp: ["--ckpt_path", checkpoint_of_another_net(tmp)],
     ["other.ckpt", "another net", "(10, 512) there and (10, 16) in this config"]),
    ("ckpt-last-none", "p1h", ["--ckpt_path", "last"], ["ckpt_path='last'", "last.ckpt"]),
    # data files
    ("data-missing", "p1h", lambda data, tmp: ["--data.data_dir", str(tmp / "empty"),
     "--data.download", "false"], ["MNIST data not found", "download=False"]),
    ("data-dir-is-a-file", "p1h", lambda data, tmp: ["--data.data_dir", _corrupt(tmp),
     "--data.download", "false"], ["MNIST data not found", "broken.ckpt"]),
    ("truncated-gz", "p1h", lambda data, tmp: mnist_copy(data, tmp, truncate(LABELS)),
     [LABELS]),
    ("not-gzip", "p1h", lambda data, tmp: mnist_copy(data, tmp, garbage(IMAGES)), [IMAGES]),
    ("short-labels", "p1h",
     lambda data, tmp: mnist_copy(data, tmp, rewrite(LABELS, lambda b: b[:-7])), [LABELS]),
    ("wrong-magic", "p1h",
     lambda data, tmp: mnist_copy(data, tmp, rewrite(IMAGES, wrong_magic)), [IMAGES]),
    ("md5-mismatch", "p1h", ["--data.verify_checksums", "true"], ["MD5", "verify_checksums"]),
]  # fmt: skip


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _flipped(tmp: Path) -> str:
    """A checkpoint of this config's net with 64 bytes of its weights inverted."""
    path = tmp / "flipped.ckpt"
    module = EqPropModule(PrototypicalFC(SMALL_SIZE_TAB), [0.1, 0.1], beta=0.1)
    torch.save({"state_dict": module.state_dict()}, path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the 784 x 16 weight's record
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    return str(path)


def _corrupt(tmp: Path) -> str:
    path = tmp / "broken.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    return str(path)


@pytest.mark.parametrize(("case", "cfg", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(
    case, cfg, extra, expected, fake_mnist, tmp_path, monkeypatch, capsys, caplog
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr("sys.argv", ["eqprop"])
    if callable(extra):
        extra = extra(fake_mnist, tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config(cfg), *shrink(fake_mnist, epochs=1), *extra])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    message = captured.err + captured.out
    assert "Traceback" not in message and "usage:" not in message
    # one line says it all
    (line,) = [line for line in message.splitlines() if line.startswith("eqprop: error: ")]
    for text in expected:
        assert text in line, f"{text!r} not in:\n{message[-2000:]}"
    assert list(work.rglob("*")) == [], "nothing may be written under runs/"
    # and nothing said about a run directory or a checkpoint that do not exist
    said = message + caplog.text
    assert "run directory" not in said and "checkpoint holds" not in said
