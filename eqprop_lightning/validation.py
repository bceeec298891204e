"""Checks that run when a command starts, before any data is read or any run directory is
written: the net against the data, a checkpoint against the net, and the settings a run resumes
with against those it was trained with."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import yaml
from torch import nn

from eqprop_lightning.config_files import flat
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.rng import SEED_KEY

#: Names that Lightning resolves itself instead of a checkpoint path.
LIGHTNING_CKPT_NAMES = ("best", "last", "hpc", "registry")


def check_net_fits_data(net: nn.Module, datamodule: object) -> None:
    """The net's input shape and output units equal the data module's example shape and
    classes (where it states them)."""
    shape, classes = (getattr(datamodule, k, None) for k in ("example_shape", "num_classes"))
    check_net_fits(net, shape, classes, type(datamodule).__name__)


def check_net_fits(
    net: nn.Module, shape: tuple[int, ...] | None, classes: int | None, data: str
) -> None:
    """The net's input shape and output units equal the data's (``None``: not stated)."""
    if shape is not None and tuple(shape) != tuple(net.example_shape):
        raise ConfigError(
            f"model.net ({type(net).__name__}) takes examples of shape {tuple(net.example_shape)} "
            f"(set by {net.input_fields}) but {data} gives {tuple(shape)}: make them agree"
        )
    if classes is not None and classes != net.num_classes:
        raise ConfigError(
            f"model.net ({type(net).__name__}) has {net.num_classes} output units "
            f"({net.output_field}) but {data} has {classes} classes: make them agree"
        )


def check_checkpoint_file(ckpt_path: str | Path, name: str = "ckpt_path") -> None:
    """``ckpt_path`` exists and is a PyTorch checkpoint: a zip archive whose records all match
    their CRC-32 (torch.load itself does not check them, and loads changed bytes as weights).
    The ``ConfigError`` names the option as ``name`` (``--checkpoint`` for a script's flag)."""
    path = Path(ckpt_path)
    given = f"{name}={str(ckpt_path)!r}"
    if path.is_dir():
        raise ConfigError(f"{given} is a directory: give the checkpoint file in it")
    if not path.is_file():
        raise ConfigError(f"{given}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{given} is not a PyTorch checkpoint (not a zip archive): "
            "the file is truncated or corrupt"
        )
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ConfigError(
            f"{given} is corrupt: its record {damaged!r} fails its CRC-32 "
            "check (bytes changed since it was written); use another copy"
        )


def read_checkpoint(ckpt_path: str | Path, mmap: bool = True) -> dict:
    """A checkpoint loaded with ``weights_only``, memory-mapped unless ``mmap`` is false: its
    tensors are not read until used, so reading its settings costs no more than its header."""
    return torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=mmap)


def check_checkpoint_fits(ckpt_path: str | Path, model: nn.Module, prefix: str = "") -> dict:
    """The checkpoint loads with ``weights_only`` and its state dict (its entries under
    ``prefix``, e.g. ``net.``, with the prefix removed) has the model's tensor names and shapes
    (memory-mapped: the tensors themselves are not read until used). Returns those entries."""
    try:
        saved = read_checkpoint(ckpt_path)["state_dict"]
    except Exception as err:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r} cannot be read: {err}") from err
    saved = {k.removeprefix(prefix): v for k, v in saved.items() if k.startswith(prefix)}
    ours = model.state_dict()
    missing = sorted(set(ours) - set(saved))
    unexpected = sorted(set(saved) - set(ours))
    if missing or unexpected:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} holds another net: missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}"
        )
    for key, value in ours.items():
        if saved[key].shape != value.shape:
            raise ConfigError(
                f"ckpt_path={str(ckpt_path)!r} holds another net: {key} has shape "
                f"{tuple(saved[key].shape)} there and {tuple(value.shape)} in this config"
            )
    return saved


def check_training_state(ckpt_path: str | Path) -> None:
    """``fit`` resumes a checkpoint's optimizer and schedule: one without them (a shipped copy,
    ``python -m eqprop_lightning.shipped slim``) is refused with ``ConfigError``."""
    if "optimizer_states" not in read_checkpoint(ckpt_path):
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} holds the weights only, without the optimizer's state "
            "(a shipped or slimmed copy): fit cannot resume it. Evaluate it with eqprop test "
            "(or validate, predict), or resume the run's own checkpoints/last.ckpt"
        )


def differing(
    saved: dict, given: dict, exempt: frozenset[str] = frozenset()
) -> list[tuple[str, object, object]]:
    """``(key, saved value, given value)`` for each key of both flat dicts, but ``exempt``,
    whose values differ (sorted by key)."""
    keys = sorted((saved.keys() & given.keys()) - exempt)
    return [(k, saved[k], given[k]) for k in keys if saved[k] != given[k]]


def _differences(
    saved: dict, given: dict, prefix: str, exempt: frozenset[str] = frozenset()
) -> list[str]:
    """``"<prefix><key>: <saved> there, <given> here"`` for each key of :func:`differing`."""
    return [f"{prefix}{k}: {a!r} there, {b!r} here" for k, a, b in differing(saved, given, exempt)]


def _settings(hparams: dict | None) -> dict:
    """Stored hyperparameters without Lightning's own (``_instantiator``, ``_class_path``)."""
    return {k: v for k, v in (hparams or {}).items() if not str(k).startswith("_")}


#: EP's options that checkpoints written before BPTT took no ``beta`` hold for BPTT (unused)
BPTT_UNUSED = ("beta", "symmetric")

#: model settings that change how the dynamics run, not what they compute: a run may resume
#: with another value (compiled and eager relaxations agree to float precision)
EXECUTION_ONLY = frozenset({"compile"})


def model_differences(saved: dict, given: dict) -> list[tuple[str, object, object]]:
    """``(key, saved value, given value)`` for each model setting of both that differs, by
    flattened key: a user rule's ``rule_args`` compared whole (None, as older files have it,
    is ``{}``), ``beta``/``symmetric`` not where both are BPTT, :data:`EXECUTION_ONLY` never."""
    saved, given = dict(saved), dict(given)
    rule_args = [h.pop("rule_args", None) or {} for h in (saved, given)]
    saved, given = flat(saved), flat(given)
    if saved.get("algorithm") == given.get("algorithm") == "bptt":
        # checkpoints written before BPTT took no beta hold the config's unused beta/symmetric
        for unused in BPTT_UNUSED:
            saved.pop(unused, None)
            given.pop(unused, None)
    differ = differing(saved, given, EXECUTION_ONLY)
    if rule_args[0] != rule_args[1]:
        differ.append(("rule_args", rule_args[0], rule_args[1]))
    return differ


def check_same_hparams(
    ckpt_path: str | Path, checkpoint: dict, model: dict, here: str = "this config"
) -> None:
    """Resuming ``ckpt_path`` (loaded as ``checkpoint``) with the ``model`` settings of ``here``:
    they must be the checkpoint's, else ``ConfigError`` naming each field that differs (Lightning
    would silently continue with the ones given, or the CLI with the checkpoint's)."""
    saved, given = _settings(checkpoint.get("hyper_parameters")), _settings(model)
    differ = [f"model.{k}: {a!r} there, {b!r} here" for k, a, b in model_differences(saved, given)]
    if differ:
        fields = "; ".join(differ)
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} was trained with other settings than {here} "
            f"({fields}): resume with the settings it was trained with, or start a new run"
        )


def check_same_weights(
    ckpt_path: str | Path,
    saved: dict,
    ours: dict,
    here: str = "this module",
    exempt: frozenset[str] = frozenset(),
) -> None:
    """The checkpoint's state dict ``saved`` has the tensor names and shapes of ``here``'s
    ``ours`` (but ``exempt``, which either may lack): a net built in code is not among the
    hyperparameters, so that only its weights tell another net (Lightning raised torch's
    size-mismatch error after a resume began)."""
    differ = [f"{k}: missing there" for k in ours if k not in saved and k not in exempt]
    differ += [f"{k}: not in {here}" for k in saved if k not in ours and k not in exempt]
    differ += [
        f"{k}: {tuple(saved[k].shape)} there, {tuple(v.shape)} here"
        for k, v in ours.items()
        if k in saved and saved[k].shape != v.shape
    ]
    if differ:
        more = f"; and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} holds another net than {here} "
            f"({'; '.join(differ[:4])}{more}): resume with the net it was trained with"
        )


#: model settings that decide what ``validate``, ``test`` and ``predict`` compute: the free phase
#: (``T``), the readout and the net; the others (the rule, ``K``, ``beta``, the learning rates)
#: only train, and the same checkpoint may be evaluated with the EP or the BPTT config
EVALUATION_SETTINGS = frozenset({"T", "loss", "readout_classes", "net"})


def check_same_evaluation(
    ckpt_path: str | Path, checkpoint: dict, model: dict, command: str
) -> None:
    """``command`` (validate, test, predict) evaluates ``ckpt_path`` with the settings it was
    trained with (Lightning's CLI puts them over the config's): ``ConfigError`` naming each of
    :data:`EVALUATION_SETTINGS` where the config's ``model`` differs, instead of ignoring it."""

    def evaluated(settings: dict) -> dict:
        values = flat(_settings(settings))
        return {k: v for k, v in values.items() if k.split(".")[0] in EVALUATION_SETTINGS}

    differ = _differences(evaluated(checkpoint.get("hyper_parameters")), evaluated(model), "model.")
    if differ:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} was trained with other settings than this config "
            f"({'; '.join(differ)}), and {command} evaluates it with its own: give the config it "
            f"was trained with"
        )


def check_same_net(ckpt_path: str | Path, checkpoint: dict, net: dict) -> None:
    """The net recorded in ``checkpoint`` (``class_path`` and ``init_args``; a checkpoint of a
    module built in code records none) is the config's ``net``, else ``ConfigError`` naming each
    field that differs (the same shapes may hold another activation or ``dt``)."""
    saved = (checkpoint.get("hyper_parameters") or {}).get("net")
    if not isinstance(saved, dict):
        return
    differ = _differences(flat(saved), flat(net), "model.net.")
    if differ:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} holds another net than this config "
            f"({'; '.join(differ)}): give the config it was trained with"
        )


#: data settings that say where the data is or how it is evaluated, not what is trained on: a
#: run may resume with another value (a moved data folder, more workers)
LOCATION_ONLY = frozenset(
    {"data_dir", "cache_dir", "num_workers", "download", "verify_checksums", "test_batch_size"}
)


def check_same_data(
    ckpt_path: str | Path, checkpoint: dict, data: dict, here: str = "this config"
) -> None:
    """Resuming ``ckpt_path`` (loaded as ``checkpoint``) with the ``data`` settings of ``here``
    (``class_path`` and ``init_args``; a data module built in code: ``init_args``): the data
    module and its settings must be the checkpoint's, but for :data:`LOCATION_ONLY`, else
    ``ConfigError`` naming each field that differs (the run would go on with other data and
    its ``config.yaml`` would say it had used them from the start)."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    if not hparams:  # a checkpoint written without a data module's settings
        return
    saved = {"init_args": _settings(hparams)}
    if "_class_path" in hparams:
        saved["class_path"] = hparams["_class_path"]
    exempt = frozenset(f"init_args.{k}" for k in LOCATION_ONLY)
    differ = _differences(flat(saved), flat(data), "data.", exempt)
    if differ:
        fields = "; ".join(differ)
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r} was trained on other data settings than {here} "
            f"({fields}): resume with the data settings it was trained with, or start a new run"
        )


def newest_last_checkpoint(run_root: Path, model) -> Path:
    """The newest ``<run_root>/*/checkpoints/last.ckpt`` written with ``model.algorithm`` (a run
    of the same name with the other rule is never resumed instead)."""
    found = sorted(run_root.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    ours = [p for p in found if checkpoint_hparams(p).get("algorithm") == model.algorithm]
    if not ours:
        others = f" (only of other algorithms: {', '.join(map(str, found))})" if found else ""
        raise ConfigError(
            f"ckpt_path='last': no {run_root}/*/checkpoints/last.ckpt written with "
            f"algorithm={model.algorithm}{others}"
        )
    return ours[-1]


def resume_seed(ckpt_path: str | Path, saved: dict, seed: object) -> object:
    """The ``seed_everything`` to resume ``ckpt_path`` with: the run's own (the checkpoint's
    ``"seed_everything"``, else ``<run>/config.yaml``'s for checkpoints written before it was
    stored) where ``seed`` draws one (true or null); ``ConfigError`` for another integer or
    false, under which the run would go on with another training order, split and random signs,
    and record that seed as its own. A run started with false resumes with false (its
    checkpoint holds ``PL_GLOBAL_SEED``'s seed where one was exported: the environment's)."""
    run_config = Path(ckpt_path).parent.parent / "config.yaml"
    said = None
    if run_config.is_file():
        said = (yaml.safe_load(run_config.read_text()) or {}).get("seed_everything")
    if seed is False and said is False:
        return seed
    started = _integer(saved.get(SEED_KEY))
    if started is None:
        started = _integer(said)
    if started is None or seed == started and _integer(seed) is not None:
        return seed
    if seed is True or seed is None:
        return started
    source = "the checkpoint" if _integer(saved.get(SEED_KEY)) is not None else run_config
    raise ConfigError(
        f"ckpt_path={str(ckpt_path)!r} belongs to a run started with seed_everything="
        f"{started} ({source}), and this command has {seed}: resume it with "
        f"--seed_everything {started}, or start a new run"
    )


def _integer(value: object) -> int | None:
    """``value`` if it is an integer seed (not a bool: ``seed_everything: true`` draws one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def checkpoint_hparams(ckpt_path: str | Path) -> dict:
    """The hyperparameters stored in a checkpoint (memory-mapped: the tensors are not read)."""
    return dict(read_checkpoint(ckpt_path).get("hyper_parameters") or {})
