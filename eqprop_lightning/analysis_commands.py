"""``eqprop gdu`` and ``eqprop recipe``: what they analyse, built from the configs without
Lightning (the net, seeded as ``fit`` seeds it, its learning rule, the first training batches and
the run root), and their runs. Importing Lightning costs a few seconds, several times the
analysis of a Fig. 3 net.

:func:`read_configs` reads the configs as jsonargparse composes them (a file's ``config:`` loads
its base where it stands, dotted keys set nested values, later files and ``--key value``
overrides win); :func:`analysis_inputs` returns ``None`` for anything beyond it (another data
module or net package, an option it does not know, a seed that is not an integer), and the
command then builds the same inputs through the Lightning CLI. ``tests/test_analysis_commands.py``
holds the two paths equal on every MNIST figure config.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import itertools
import random
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from eqprop_lightning.analysis import (
    analyse,
    nudges_symmetrically,
    recipe_report,
    rmse_report,
    run_recipe,
    setting,
    write_gdu,
    write_recipe,
)
from eqprop_lightning.datamodules.mnist_files import MNISTFiles, hold_out
from eqprop_lightning.datamodules.sampling import make_loader
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.learning import GradientEstimator, net_and_rule
from eqprop_lightning.run_dirs import TENSORBOARD, next_dir, run_root
from eqprop_lightning.validation import (
    check_checkpoint_file,
    check_checkpoint_fits,
    check_net_fits,
    check_same_net,
    read_checkpoint,
)

MNIST_DATA = "eqprop_lightning.datamodules.MNISTDataModule"
NETS = "eqprop_lightning.nets."
#: the model's settings that only training reads (the optimizer and the convergence check)
TRAINING_ONLY = {"lrs", "optimizer", "cosine_t_max", "eta_min", "convergence_tol"}
#: the settings that choose the dynamics and the rule, with their defaults
RULE_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(net_and_rule).parameters.items()
    if name not in ("net", "seed")
}
RULE_OPTIONS = set(RULE_DEFAULTS)
#: a config's top-level keys that this reader knows
CONFIG_KEYS = {"model", "data", "trainer", "seed_everything"}
#: Trainer arguments that may be set here (a subset of its signature, held to it by
#: tests/test_analysis_commands.py): any other, a misspelt one too, goes to the Lightning CLI
TRAINER_OPTIONS = {
    "default_root_dir",
    "logger",
    "max_epochs",
    "enable_progress_bar",
    "check_val_every_n_epoch",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "log_every_n_steps",
}
#: the TensorBoard logger arguments that place a run
LOGGER_OPTIONS = {"save_dir", "name", "version"}
#: the trainer options that ``gdu`` and ``recipe`` read, on the command line: those that place
#: their outputs (``<save_dir or default_root_dir>/<name>/gdu_<n>``, or ``default_root_dir/gdu_<n>``
#: without a logger); :func:`check_trainer_overrides` refuses the others
PLACING_OPTIONS = (
    "--trainer.default_root_dir",
    "--trainer.logger.init_args.save_dir",
    "--trainer.logger.init_args.name",
    "--trainer.logger false",
)
#: what the refusal of another trainer option says they read
READ = "of the trainer's options they read only those placing their outputs: " + ", ".join(
    PLACING_OPTIONS
)
#: the dotted keys of those options
PLACING_KEYS = {opt.removeprefix("--") for opt in PLACING_OPTIONS[:-1]}
#: the names of the TensorBoard logger, which the configs use (naming it changes nothing)
TENSORBOARD_NAMES = (
    TENSORBOARD,
    "lightning.pytorch.loggers.tensorboard.TensorBoardLogger",
    "TensorBoardLogger",
)
#: MNISTDataModule's arguments (tests/test_analysis_commands.py holds them to its signature)
MNIST_OPTIONS = {
    "data_dir",
    "batch_size",
    "test_batch_size",
    "flatten",
    "num_workers",
    "download",
    "verify_checksums",
    "val_split",
    "split_seed",
}


@dataclass
class AnalysisInputs:
    """A config's net (``net_config``: its ``class_path`` and ``init_args``) and rule,
    ``batches`` of its training data, and where its runs go."""

    net: nn.Module
    rule: GradientEstimator
    T: int
    K: int
    beta: float | None
    symmetric: bool
    batches: list[tuple[Tensor, Tensor]]
    run_root: Path  # <save_dir or default_root_dir>/<logger name>
    net_config: dict

    def with_weights(self, ckpt_path: Path) -> AnalysisInputs:
        """The same analysis of the weights saved in ``ckpt_path`` (a run's checkpoint or a
        shipped one), whose net must be this config's (``ConfigError`` otherwise); ``T``, ``K``,
        ``beta`` and the batches stay the config's."""
        check_checkpoint_file(ckpt_path)
        check_same_net(ckpt_path, read_checkpoint(ckpt_path), self.net_config)
        weights = check_checkpoint_fits(ckpt_path, self.net, prefix="net.")
        net = copy.deepcopy(self.net)
        net.load_state_dict(weights)  # float16 shipped weights are cast to the net's dtype
        return replace(self, net=net)

    def in_float64(self) -> AnalysisInputs:
        """The same analysis in float64: a float64 copy of the net, the batches' floating
        tensors converted (in float32, rounding in EP's finite difference over ``beta`` can
        exceed its O(beta^2) error at small beta)."""

        def double(t: Tensor) -> Tensor:
            return t.double() if t.is_floating_point() else t

        net = copy.deepcopy(self.net).double()
        return replace(self, net=net, batches=[(double(x), double(y)) for x, y in self.batches])


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    _merge(tree, {leaf: value})


def _merge(tree: dict, values: dict) -> None:
    """Nested dicts merge key by key; any other value replaces."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


def _read_file(path: Path, tree: dict) -> None:
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} is not a mapping")
    for key, value in values.items():
        if key == "config":
            _read_file((path.parent / value).resolve(), tree)
        else:
            _set(tree, key, value)


def _options(args: list[str]) -> list[tuple[str, str]] | None:
    """The ``(key, value)`` of each ``--key value`` (or ``--key=value``) in ``args``, in order, or
    ``None`` for any other argument (or a value missing at the end)."""
    pairs = []
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("--"):
            return None
        key, eq, value = arg[2:].partition("=")
        if not eq:
            value = next(rest, None)
            if value is None:
                return None
        pairs.append((key, value))
    return pairs


def read_configs(args: list[str]) -> dict | None:
    """The values of ``--config FILE`` and ``--a.b VALUE`` (or ``--a.b=VALUE``) in order, or
    ``None`` for any other argument."""
    tree: dict = {}
    options = _options(args)
    if options is None:
        return None
    for key, value in options:
        if key in ("config", "c"):
            path = Path(value)
            if not path.is_file():
                return None
            _read_file(path, tree)
        else:
            _set(tree, key, yaml.safe_load(value))
    return tree


def analysis_inputs(args: list[str], n_batches: int) -> AnalysisInputs | None:
    """The inputs of an analysis of the configs and overrides ``args`` on ``n_batches`` training
    batches, or ``None`` where the Lightning CLI must build them."""
    try:
        config = read_configs(args)
    except (OSError, ValueError, yaml.YAMLError):
        return None  # the CLI reports it
    if config is None or not _readable(config):
        return None
    model, seed = config["model"], config["seed_everything"]
    net_cfg, data_args = _subclass(model["net"]), _subclass(config["data"])["init_args"]
    trainer = dict(config.get("trainer", {}))
    if isinstance(trainer.get("logger"), dict):  # --trainer.logger.name: its init_args' name
        trainer["logger"] = _subclass(trainer["logger"])
    root = run_root(trainer)
    if root is None or data_args.get("num_workers") or set(data_args) - MNIST_OPTIONS:
        return None
    check_trainer_overrides(args)  # every trainer option here is one of TRAINER_OPTIONS
    files = MNISTFiles(data_args.get("data_dir"))
    if files.missing():
        return None  # the data module downloads them, or says where it looked
    module, name = str(net_cfg["class_path"]).rsplit(".", 1)
    net_class = getattr(importlib.import_module(module), name, None)
    net_args = net_cfg["init_args"]
    if net_class is None or set(net_args) - set(inspect.signature(net_class).parameters):
        return None  # the CLI names what it does not know
    _seed_everything(seed)
    options = {k: v for k, v in model.items() if k in RULE_OPTIONS}
    net, rule = net_and_rule(net_class(**net_args), **options, seed=seed)  # inside its readout
    flatten = data_args.get("flatten", True)
    check_net_fits(net, (784,) if flatten else (1, 28, 28), 10, "MNISTDataModule")
    batches = _training_batches(files, data_args, seed, n_batches)
    if batches is None:
        return None
    settings = RULE_DEFAULTS | options
    T, K, beta, symmetric = (settings[k] for k in ("T", "K", "beta", "symmetric"))
    return AnalysisInputs(net, rule, T, K, beta, symmetric, batches, root, net_cfg)


def _overrides(args: list[str]) -> list[tuple[str, Any]]:
    """The dotted keys and values of the ``--key value`` (or ``--key=value``) arguments after
    the configs, mappings flattened (``--trainer '{max_epochs: 3}'`` is ``trainer.max_epochs``)
    and a logger's ``save_dir``/``name`` read as its ``init_args``' (jsonargparse's shorthand)."""
    found: list[tuple[str, Any]] = []

    def add(key: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                add(f"{key}.{k}", v)
            return
        parts = key.split(".")
        if parts[:2] == ["trainer", "logger"] and len(parts) > 2:
            if parts[2] not in ("class_path", "init_args", "dict_kwargs"):
                parts.insert(2, "init_args")
        found.append((".".join(parts), value))

    for key, value in _options(args) or []:  # else the parser names the odd argument
        if key in ("config", "c"):
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        add(key.rstrip("+"), parsed)
    return found


def _places_outputs(key: str, value: Any) -> bool:
    """Whether the trainer option ``key`` set to ``value`` is one of :data:`PLACING_OPTIONS`
    (or names the TensorBoard logger, which the configs use)."""
    is_flag = value is None or isinstance(value, bool)  # --trainer.logger false: no logger
    if key in PLACING_KEYS or (key == "trainer.logger" and is_flag):
        return True
    return key in ("trainer.logger", "trainer.logger.class_path") and value in TENSORBOARD_NAMES


def check_trainer_overrides(args: list[str], skip: Collection[str] = ()) -> None:
    """``eqprop gdu`` and ``recipe`` run no trainer: a ``--trainer.*`` option of the command line
    that does not place their outputs (:data:`PLACING_OPTIONS`) is a ``ConfigError`` (it would
    be ignored), but those whose ``trainer.<option>`` is in ``skip`` (refused or accepted with
    their own reason). The configs' trainer options are training's, and stay."""
    for key, value in _overrides(args):
        parts = key.split(".")
        if parts[0] != "trainer" or ".".join(parts[:2]) in skip or _places_outputs(key, value):
            continue
        raise ConfigError(f"{key}={value!r} is not used by eqprop gdu and eqprop recipe: {READ}")


def _readable(config: dict) -> bool:
    """Whether ``config`` holds only what :func:`analysis_inputs` knows: the MNIST data module,
    a net of :mod:`eqprop_lightning.nets`, the rule's and training's settings, the trainer and
    logger options listed above and an integer seed, each section a mapping (a bare class path
    or ``null`` is the CLI's to resolve)."""
    model, data, trainer = (config.get(k, {}) for k in ("model", "data", "trainer"))
    net_cfg = model.get("net") if isinstance(model, dict) else None
    if not all(isinstance(node, dict) for node in (model, data, trainer, net_cfg)):
        return False
    data, net_cfg = _subclass(data), _subclass(net_cfg)  # {class_path, init_args} only
    logger = trainer.get("logger")
    seed = config.get("seed_everything")
    return not (
        set(config) - CONFIG_KEYS
        or set(trainer) - TRAINER_OPTIONS
        or (isinstance(logger, dict) and set(_subclass(logger)["init_args"]) - LOGGER_OPTIONS)
        or data.get("class_path") != MNIST_DATA
        or not str(net_cfg.get("class_path", "")).startswith(NETS)
        or set(model) - RULE_OPTIONS - TRAINING_ONLY - {"net"}
        or not isinstance(seed, int)
        or isinstance(seed, bool)
    )


def _training_batches(
    files: MNISTFiles, data_args: dict, seed: int, n_batches: int
) -> list[tuple[Tensor, Tensor]] | None:
    """The first ``n_batches`` of the data module's shuffled training loader (without the
    held-out ``val_split``), or ``None`` where the data module must say what is wrong."""
    verify = data_args.get("verify_checksums", True)
    train_count = files.check(verify)["train-labels-idx1-ubyte"].count
    val_split = data_args.get("val_split", 0)
    if val_split >= train_count or (not val_split and data_args.get("split_seed") is not None):
        return None  # the data module's error
    flatten = data_args.get("flatten", True)
    train = files.load(("train",), flatten, thorough=False, verify_checksums=verify)["train"]
    if val_split:
        split_seed = data_args.get("split_seed")
        train, _ = hold_out(train, val_split, seed if split_seed is None else split_seed)
    loader = make_loader(train, data_args.get("batch_size", 20), True, 0, "MNISTDataModule")
    if n_batches > len(loader):
        raise ConfigError(f"--batches={n_batches}: the training set has only {len(loader)} batches")
    return list(itertools.islice(loader, n_batches))


def _subclass(node: dict) -> dict:
    """A ``{class_path, init_args}`` node with jsonargparse's shorthand undone: ``--data.x v``
    sets ``data.init_args.x``."""
    init = dict(node.get("init_args", {}))
    init.update({k: v for k, v in node.items() if k not in ("class_path", "init_args")})
    return {k: v for k, v in node.items() if k == "class_path"} | {"init_args": init}


def _seed_everything(seed: int) -> None:
    """The seeds Lightning's ``seed_everything`` sets before ``fit`` builds the net."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _ep_beta(inputs: AnalysisInputs) -> float:
    """The analyses compare EP's updates with BPTT's gradients: they need EP's ``beta``."""
    if inputs.beta is None:
        raise ConfigError(
            "model.beta=None: the GDU analyses compare EP's updates (nudged by beta) with "
            "BPTT's gradients; use an EP config (algorithm: ep, with beta)"
        )
    return inputs.beta


def gdu_command(inputs: AnalysisInputs, output_dir: Path | None) -> dict:
    """``eqprop gdu``: the GDU analysis of the first training batch, written to ``output_dir``
    (default a new ``<run root>/gdu_<n>``)."""
    ((x, y),) = inputs.batches
    beta, net = _ep_beta(inputs), inputs.net
    analysis = analyse(net, x, y, inputs.T, inputs.K, beta, inputs.symmetric, inputs.rule)
    out_dir = output_dir or next_dir(inputs.run_root, "gdu")
    summary = write_gdu(analysis, x, y, out_dir)
    print(rmse_report(summary))
    print(f"GDU analysis ({summary['seconds']:.1f} s) written to {out_dir}")
    return summary


def recipe_command(inputs: AnalysisInputs, output_dir: Path | None) -> dict:
    """``eqprop recipe``: sign agreement of EP and BPTT over the training batches, written to
    ``output_dir`` (default a new ``<run root>/recipe_<n>``)."""
    beta, n = _ep_beta(inputs), len(inputs.batches)
    symmetric = nudges_symmetrically(inputs.symmetric, inputs.rule)
    recipe = run_recipe(inputs.net, inputs.batches, inputs.T, inputs.K, beta, symmetric)
    out_dir = output_dir or next_dir(inputs.run_root, "recipe")
    ran = setting(inputs.T, inputs.K, beta, symmetric, inputs.batches[0][0])
    path = write_recipe(recipe, out_dir, n, ran)
    print(recipe_report(recipe))
    print(f"sign agreement over {n} batches written to {path}")
    return recipe
