"""The configs under ``configs/``: composed from a base per net family (``configs/base``) and
small per-row and per-figure files (jsonargparse's ``config:`` key, then dotted keys), they
resolve to exactly the values of the flat files they replaced, keep the original command in
their header, and each one trains one batch.

``flat_configs.json`` records the flat files as they were at commit 6f1b259 (their header and
explicit values). :func:`as_now` applies the deliberate changes since: ``imdb/bptt.yaml``
and ``snli/bptt.yaml`` set ``beta: null`` and ``symmetric: false`` (BPTT has no nudge; the module
rejects a beta for BPTT), the logger's ``save_dir: runs`` is left to ``trainer.default_root_dir``
(default ``runs``: the same run directories), the energy-based Table 1 rows
(``mnist/eb1h.yaml``, ``mnist/eb2h.yaml``) set ``compile: true``, and ``mnist/eb2h.yaml`` seed 7
(the only one of 0-11 whose outputs all start alive, as for EB-1h); likewise the seed README's
full-size text configs, ``snli/ep.yaml`` seed 9 and ``imdb/ep.yaml`` seed 2 (their BPTT configs
load them), where at seed 0 every output starts at 0; and ``imdb/small.yaml``'s first layer of 50
units instead of 100 (so that its trained model ships), with seed 0 instead of 3 (both outputs
start alive at the new size); its header was rewritten with that change. The small text configs'
headers name ``configs/overrides/bptt.yaml`` for BPTT (they said ``--model.algorithm bptt``,
which their ``beta`` and ``symmetric`` refuse).

The one-batch runs build model and data through the CLI parser with the config's own values,
except: ``compile`` is off (inductor's compilation takes seconds per graph; tests/test_compile.py
covers it), ``T`` and ``K`` are capped at 20 and 10 (the figures relax for up to 30000 steps), IMDB
reviews at 20 tokens (the paper's 600 make a 180M-weight fc layer), MNIST
is the tiny fake MNIST of ``conftest``, and the text configs read tiny IMDB and SNLI files and
word2vec vectors in the real formats (reading the real IMDB archive alone takes about a minute
here, too slow for the default suite). Measured on the shared 2-core machine under load (two
training runs and other work), the file takes ~2-3 min; most of it is the one-batch runs.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from gensim.models import KeyedVectors

from eqprop_lightning.cli import EqPropCLI
from eqprop_lightning.config_files import resolved_config
from eqprop_lightning.learning import EquilibriumProp, TruncatedBPTT, free_phase
from eqprop_lightning.validation import check_net_fits_data
from tests.test_text_data import (
    SNLI_ROWS,
    WORD2VEC,
    WORDS,
    _vector,
    _write_imdb,
    _write_jsonl,
    real_text_root,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RUNS = sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name not in ("base", "overrides"))
BPTT = CONFIG_DIR / "overrides" / "bptt.yaml"
FLAT = json.loads((Path(__file__).parent / "flat_configs.json").read_text())
MAX_T, MAX_K = 20, 10
MAX_TOKENS = 20


def rel(path: Path) -> str:
    return str(path.relative_to(CONFIG_DIR))


COMPILED = ("mnist/eb1h.yaml", "mnist/eb2h.yaml")


def as_now(values: dict, name: str) -> dict:
    """A flat config's values with the deliberate changes (see the module docstring)."""
    values = copy.deepcopy(values)
    if name in COMPILED:
        values["model"]["compile"] = True
    if name == "mnist/eb2h.yaml":
        values["seed_everything"] = 7
    if name in ("snli/ep.yaml", "snli/bptt.yaml"):
        values["seed_everything"] = 9
    if name in ("imdb/ep.yaml", "imdb/bptt.yaml"):
        values["seed_everything"] = 2
    if name == "imdb/small.yaml":
        values["seed_everything"] = 0
        values["model"]["net"]["init_args"]["fc_layers"] = [50, 20, 2]
    if values["model"]["algorithm"] == "bptt":
        values["model"].update(beta=None, symmetric=False)
    values["trainer"]["logger"]["init_args"].pop("save_dir")
    return values


def test_every_flat_config_has_its_composed_file() -> None:
    assert sorted(FLAT) == [rel(p) for p in RUNS]


@pytest.mark.parametrize("path", RUNS, ids=rel)
def test_config_resolves_as_the_flat_file(path: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump(as_now(FLAT[rel(path)]["values"], rel(path))))
    assert resolved_config(path) == resolved_config(flat)


def test_resolved_config_takes_a_packaged_name_as_the_cli_does() -> None:
    """``--config mnist/p1h`` runs the packaged config; resolved_config read it as a path."""
    p1h = CONFIG_DIR / "mnist" / "p1h.yaml"
    assert resolved_config("mnist/p1h", "overrides/bptt") == resolved_config(
        p1h, CONFIG_DIR / "overrides" / "bptt.yaml"
    )


@pytest.mark.parametrize("path", RUNS, ids=rel)
def test_config_keeps_its_header(path: Path) -> None:
    header = FLAT[rel(path)]["header"]
    assert path.read_text().startswith(header)
    assert not path.read_text()[len(header) :].startswith("#")


def test_configs_are_small_overrides() -> None:
    """No run config repeats a class path: the net, data and logger come from a base."""
    for path in RUNS:
        body = path.read_text()[len(FLAT[rel(path)]["header"]) :]
        assert body.startswith("config: "), rel(path)
        assert "class_path" not in body, rel(path)


def test_figure_variants_differ_from_fig3_only_where_they_say() -> None:
    gdu = CONFIG_DIR / "gdu"
    fig3, fig12 = resolved_config(gdu / "fig3_p2h.yaml"), resolved_config(gdu / "fig12_p2h.yaml")
    assert fig12["trainer"]["logger"]["init_args"].pop("name") == "fig12_p2h"
    assert fig3["trainer"]["logger"]["init_args"].pop("name") == "fig3_p2h"
    assert fig12 == fig3


@pytest.mark.parametrize(
    "path",
    [p for p in RUNS if FLAT[rel(p)]["values"]["model"]["algorithm"] == "ep"],
    ids=rel,
)
def test_bptt_override(path: Path) -> None:
    """``--config X --config configs/overrides/bptt.yaml`` is X trained with BPTT: the
    algorithm, no beta and no symmetric phase, everything else unchanged."""
    ep, bptt = resolved_config(path), resolved_config(path, BPTT)
    assert (bptt["model"].pop("algorithm"), bptt["model"].pop("beta")) == ("bptt", None)
    assert bptt["model"].pop("symmetric") is False
    for key in ("algorithm", "beta", "symmetric"):
        ep["model"].pop(key)
    assert bptt == ep


@pytest.mark.parametrize("task", ["imdb", "snli"])
def test_bptt_config_is_ep_with_the_override(task: str) -> None:
    ep = resolved_config(CONFIG_DIR / task / "ep.yaml", BPTT)
    bptt = resolved_config(CONFIG_DIR / task / "bptt.yaml")
    assert bptt["trainer"]["logger"]["init_args"].pop("name") == f"{task}_bptt"
    assert ep["trainer"]["logger"]["init_args"].pop("name") == f"{task}_ep"
    assert bptt == ep


# ------------------------------------------------------------------------------- one batch


@pytest.fixture(scope="module")
def text_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny IMDB and SNLI files (train, dev and test) and 300-d word2vec vectors in the real
    formats (the fixtures of ``test_text_data``)."""
    root = _write_imdb(tmp_path_factory.mktemp("text_root"))
    for split in ("train", "dev", "test"):
        _write_jsonl(root / "snli_1.0" / f"snli_1.0_{split}.jsonl", SNLI_ROWS)
    kv = KeyedVectors(vector_size=300)
    kv.add_vectors(WORDS, np.stack([_vector(w) for w in WORDS]))
    kv.save_word2vec_format(str(root / "vectors.txt"), binary=False)
    return root


def _one_batch_overrides(values: dict, fake_mnist: Path, text_root: Path) -> list[str]:
    model = values["model"]
    args = ["--model.T", str(min(model["T"], MAX_T)), "--model.K", str(min(model["K"], MAX_K))]
    args += ["--model.compile", "false"]
    data = values["data"]["class_path"].rsplit(".", 1)[1]
    if data == "MNISTDataModule":
        args += ["--data.data_dir", str(fake_mnist), "--data.verify_checksums", "false"]
    elif data in ("IMDBDataModule", "SNLIDataModule"):
        args += ["--data.data_dir", str(text_root), "--data.embeddings"]
        args += [str(text_root / "vectors.txt"), "--data.cache_dir", str(text_root / "cache")]
    if data == "IMDBDataModule" and values["data"]["init_args"]["seq_len"] > MAX_TOKENS:
        # the paper's 600 tokens make a 180M-weight first fc layer (a minute per batch here)
        args += ["--data.seq_len", str(MAX_TOKENS)]
        args += ["--model.net.init_args.segments", f"[{MAX_TOKENS}]"]
    return args


@pytest.mark.parametrize("path", RUNS, ids=rel)
def test_config_trains_one_batch(
    path: Path,
    fake_mnist: Path,
    text_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The config's net, data, rule and optimizer take one training step and one evaluation
    batch with the config's rule: one optimizer step is taken, it moves every layer's weights and
    every weight stays finite."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    values = FLAT[rel(path)]["values"]
    overrides = _one_batch_overrides(values, fake_mnist, text_root)
    args = ["--config", str(path), *overrides, "--trainer.fast_dev_run", "true"]
    cli = EqPropCLI(args=[*args, "--trainer.enable_progress_bar", "false"], run=False)
    rule = {"ep": EquilibriumProp, "bptt": TruncatedBPTT}[values["model"]["algorithm"]]
    assert isinstance(cli.model.rule, rule)
    check_net_fits_data(cli.model.net, cli.datamodule)
    groups = cli.model.net.synapse_groups()
    before = [[p.detach().clone() for p in g.parameters()] for g in groups]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    for name, param in cli.model.net.named_parameters():
        assert torch.isfinite(param).all(), name
    # every layer of learning rates took its step (a wrong group or a dead gradient does not)
    for i, (group, old) in enumerate(zip(groups, before, strict=True)):
        moved = [not torch.equal(p, q) for p, q in zip(group.parameters(), old, strict=True)]
        assert any(moved), f"synapse group {i} did not move"


#: each rule override of configs/overrides and the model values it sets on P-1h
RULE_OVERRIDES = {
    "symmetric.yaml": {"nudging": "symmetric"},
    "random_sign.yaml": {"nudging": "random_sign"},
    "holomorphic2.yaml": {"nudging": "holomorphic", "holomorphic_points": 2},
    "holomorphic4.yaml": {"nudging": "holomorphic", "holomorphic_points": 4},
    "cep.yaml": {"algorithm": "cep"},
    "rbp.yaml": {"algorithm": "rbp", "beta": None},
    "p1h_cep.yaml": {"algorithm": "cep", "beta": 0.2, "lrs": [0.0028, 0.0056]},
    "p1h_cross_entropy.yaml": {
        "nudging": "symmetric",
        "loss": "cross_entropy",
        "lrs": [0.04, 0.04, 0.08],
    },
    "nudge_inside.yaml": {"net.init_args.nudge_in_activation": True},
    "p1h_cross_entropy_inside.yaml": {
        "net.init_args.nudge_in_activation": True,
        "nudging": "symmetric",
        "loss": "cross_entropy",
        "lrs": [0.04, 0.04, 0.08],
    },
    "p1h_softmax.yaml": {
        "net.init_args.size_tab": [512, 784],
        "net.init_args.nudge_in_activation": True,
        "nudging": "symmetric",
        "loss": "cross_entropy",
        "readout_classes": 10,
        "lrs": [0.04, 0.08],
    },
}


def _pop(model: dict, dotted: str):
    """Remove and return ``model[a][b][c]`` for the key ``a.b.c``."""
    *parents, key = dotted.split(".")
    for parent in parents:
        model = model[parent]
    return model.pop(key)


def test_every_override_is_checked() -> None:
    files = {p.name for p in (CONFIG_DIR / "overrides").glob("*.yaml")}
    assert files == {*RULE_OVERRIDES, BPTT.name}


@pytest.mark.parametrize("name", sorted(RULE_OVERRIDES))
def test_rule_override_changes_only_its_keys_and_builds(name: str, fake_mnist: Path) -> None:
    p1h = CONFIG_DIR / "mnist" / "p1h.yaml"
    base, changed = resolved_config(p1h), resolved_config(p1h, CONFIG_DIR / "overrides" / name)
    for key, value in RULE_OVERRIDES[name].items():
        assert _pop(changed["model"], key) == value, key
        _pop(base["model"], key)
    assert changed == base
    args = ["--config", str(p1h), "--config", str(CONFIG_DIR / "overrides" / name)]
    args += ["--data.data_dir", str(fake_mnist), "--data.verify_checksums", "false"]
    cli = EqPropCLI(args=args, run=False)
    assert type(cli.model.rule).__name__ == {
        "cep.yaml": "ContinualEP",
        "p1h_cep.yaml": "ContinualEP",
        "rbp.yaml": "RecurrentBackprop",
    }.get(name, "EquilibriumProp")


#: a header's ``# Run: eqprop fit --config ... [optional options]`` line
RUN_LINE = re.compile(r"^# Run: eqprop fit (.*)$", re.MULTILINE)


@pytest.mark.parametrize("path", [p for p in RUNS if RUN_LINE.search(p.read_text())], ids=rel)
def test_header_run_command_builds(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command a config's header shows builds its model and data, with and without its
    optional part (the small text configs once offered --model.algorithm bptt, which refuses
    their beta and symmetric)."""
    monkeypatch.chdir(CONFIG_DIR.parent)
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    command = RUN_LINE.search(path.read_text()).group(1)
    plain, full = re.sub(r"\s*\[.*?\]", "", command), re.sub(r"[][]", "", command)
    assert full != plain
    for args in (shlex.split(plain), shlex.split(full)):
        cli = EqPropCLI(args=[*args, "--model.compile", "false"], run=False)
        assert cli.model.hparams.algorithm == ("bptt" if "bptt" in args[-1] else "ep")


# ------------------------------------------------------------------ outputs alive at the start

#: options of a text config for its real first training batch (SNLI: dev, the only training
#: split offline; the small config trains on it already)
TEXT_ARGS = {"snli/ep.yaml": ["--data.train_split", "dev"]}


@pytest.mark.parametrize(
    "name",
    [
        "snli/ep.yaml",
        "snli/small.yaml",
        pytest.param("imdb/ep.yaml", marks=pytest.mark.slow),  # the archive, 180M weights
        pytest.param("imdb/small.yaml", marks=pytest.mark.slow),  # the archive
    ],
)
def test_text_config_starts_with_every_output_alive(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``my_hard_sig`` an output unit that is 0 for every example gets no gradient from
    BPTT, so the config's seed (the BPTT config's too: it loads the EP one) must leave each output
    non-zero for some example of the first training batch after the free phase. At seed 0 every
    output is 0 for the full-size configs (SNLI and IMDB): BPTT could not take a single step; one
    output is 0 for the small SNLI config at seed 0, and for the small IMDB one at seed 2."""
    root = real_text_root()
    monkeypatch.setattr(sys, "argv", ["eqprop"])
    args = [
        "--config",
        str(CONFIG_DIR / name),
        *TEXT_ARGS.get(name, []),
        "--data.data_dir",
        str(root),
    ]
    args += ["--data.embeddings", str(root / "word2vec" / WORD2VEC)]
    args += ["--data.cache_dir", str(tmp_path / "cache"), "--model.compile", "false"]
    cli = EqPropCLI(args=args, run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    x, _ = cli.datamodule.on_after_batch_transfer(batch, 0)
    net = cli.model.net
    with torch.no_grad():
        _, s = free_phase(net, net.static_terms(x), net.init_state(x), cli.model.rule.T)
    alive = (net.output(s) != 0).any(0)
    assert alive.all(), f"output units {(~alive).nonzero().flatten().tolist()} start at 0"


def test_resolved_config_applies_the_overrides_after_the_files() -> None:
    """As on the command line, ``overrides`` come after every ``--config``: they win over the
    values the files set (p1h sets model.T: 40 and model.beta: 0.1)."""
    p1h = CONFIG_DIR / "mnist" / "p1h.yaml"
    model = resolved_config(p1h)["model"]
    assert (model["T"], model["beta"]) == (40, 0.1)
    model = resolved_config(p1h, overrides=("--model.T", "7", "--model.beta", "0.3"))["model"]
    assert (model["T"], model["beta"]) == (7, 0.3)
