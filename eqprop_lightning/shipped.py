"""Shipped pretrained models: ``checkpoints/index.json``, its validation, and the evaluation that
checks each indexed test error.

The index is a JSON list of entries
``{"checkpoint": "<file relative to checkpoints/>", "config": "configs/...yaml",
"test_error": <percent, final epoch>, "epochs": N, "seed": S, "algorithm": "ep"|"bptt"}``,
optionally with ``"subset": n`` and ``"subset_error"``: the error on the first ``n`` test examples
(a multiple of the config's test batch size), checked instead of the full test set when that is
slow. A checkpoint is evaluated exactly as ``eqprop test --config C --ckpt_path F`` does (the
same CLI, with the logger off), so the number checked is the number that command prints.

Copy a run's checkpoint without the optimizer's state (``eqprop test`` does not read it), then
append an entry (it checks every argument, then evaluates the checkpoint; ``--config`` is a file or
a packaged config's name, as for ``eqprop --config``)::

    python -m eqprop_lightning.shipped slim --checkpoint runs/.../last.ckpt \\
        --out checkpoints/shipped/p1h-ep-s0.ckpt [--half]

    python -m eqprop_lightning.shipped add --checkpoint checkpoints/p1h-ep.ckpt \\
        --config configs/mnist/p1h.yaml --epochs 30 --seed 0 [--subset 2000]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from eqprop_lightning.commands import fail, user_error
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.io import check_file_to_write, write_atomic, write_text_atomic
from eqprop_lightning.resources import resolve_config
from eqprop_lightning.rng import CHECKPOINT_KEY as RNG_KEY
from eqprop_lightning.rng import SEED_KEY
from eqprop_lightning.validation import check_checkpoint_file, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "checkpoints" / "index.json"
ALGORITHMS = ("ep", "bptt")
REQUIRED = {
    "checkpoint": str,
    "config": str,
    "test_error": (int, float),
    "epochs": int,
    "seed": int,
    "algorithm": str,
}
OPTIONAL = {"subset": int, "subset_error": (int, float)}


@dataclass(frozen=True)
class Entry:
    """One shipped model; ``checkpoint`` relative to the index's folder, ``config`` to the
    repository (the index's parent folder)."""

    checkpoint: str
    config: str
    test_error: float
    epochs: int
    seed: int
    algorithm: str
    subset: int | None = None
    subset_error: float | None = None

    def expected(self) -> tuple[float, int | None]:
        """The recorded error to check and on how many test examples (None: all)."""
        if self.subset is not None:
            return self.subset_error, self.subset
        return self.test_error, None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_entry(raw: object, where: str, index_dir: Path) -> Entry:
    """``raw`` as an :class:`Entry`: known keys, their types and ranges, files that exist."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    missing = sorted(set(REQUIRED) - set(raw))
    if unknown or missing:
        raise ConfigError(
            f"{where}: unknown keys {unknown}, missing keys {missing}; allowed: "
            f"{[*REQUIRED, *OPTIONAL]}"
        )
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        value = raw.get(key)
        if key in raw and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ConfigError(f"{where}: {key}={value!r} must be of type {kind}")
    entry = Entry(**raw)
    if entry.algorithm not in ALGORITHMS:
        raise ConfigError(f"{where}: algorithm={entry.algorithm!r}; choose one of {ALGORITHMS}")
    for key in ("test_error", "subset_error"):
        value = getattr(entry, key)
        if value is not None and not 0 <= value <= 100:
            raise ConfigError(f"{where}: {key}={value} must be a percentage in [0, 100]")
    if entry.epochs < 1:
        raise ConfigError(f"{where}: epochs={entry.epochs} must be >= 1")
    if (entry.subset is None) != (entry.subset_error is None):
        raise ConfigError(f"{where}: subset and subset_error go together (one is missing)")
    if entry.subset is not None and entry.subset < 1:
        raise ConfigError(f"{where}: subset={entry.subset} must be a positive number of examples")
    for key, base in (("checkpoint", index_dir), ("config", index_dir.parent)):
        if not (base / getattr(entry, key)).is_file():
            raise ConfigError(f"{where}: {key}={getattr(entry, key)!r}: no such file in {base}")
    return entry


def load_index(path: Path = INDEX) -> list[Entry]:
    """The entries of the index at ``path``, checked; ``[]`` when the file is absent."""
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, list):
        raise ConfigError(f"{path} must hold a JSON list of entries, got {type(raw).__name__}")
    return [check_entry(e, f"{path} entry {i}", path.parent) for i, e in enumerate(raw)]


def evaluate_error(config: Path, checkpoint: Path, subset: int | None = None) -> float:
    """Test error in percent of ``checkpoint`` as ``eqprop test --config config --ckpt_path
    checkpoint`` computes it, on the whole test set or on its first ``subset`` examples. The
    relaxations run eagerly (``compile`` false), so that checking the index compiles nothing;
    on the EB-1h checkpoints, whose config compiles, both give the same error (README)."""
    from eqprop_lightning.cli import EqPropCLI

    args = ["test", f"--config={config}", f"--ckpt_path={checkpoint}", "--trainer.logger=false"]
    args.append("--model.compile=false")
    args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    if subset is not None:
        examples, batch = loader_shape(config)
        if not 0 < subset <= examples:
            raise ConfigError(f"subset={subset} must be in 1..{examples} (the test examples)")
        if subset % batch:
            raise ConfigError(
                f"subset={subset} must be a multiple of the config's test batch size {batch}"
            )
        args.append(f"--trainer.limit_test_batches={subset // batch}")
    cli = EqPropCLI(args=args, save_config_callback=None)  # writes nothing
    return float(cli.trainer.callback_metrics["test/error"])


def verify(entry: Entry, index_dir: Path) -> float:
    """Evaluate ``entry``'s checkpoint; raise ``AssertionError`` naming both numbers if the
    error differs from the recorded one by half an example or more. Returns the error."""
    expected, subset = entry.expected()
    measured = evaluate_error(index_dir.parent / entry.config, index_dir / entry.checkpoint, subset)
    examples = subset or loader_shape(index_dir.parent / entry.config)[0]
    if not math.isclose(measured, expected, rel_tol=0, abs_tol=50 / examples):
        raise AssertionError(
            f"{entry.checkpoint}: test error {expected} % recorded, {measured:.4f} % measured on "
            f"{'the first ' + str(subset) if subset else 'all ' + str(examples)} test examples"
        )
    return measured


def loader_shape(config: Path) -> tuple[int, int]:
    """Examples in the config's test set and the test loader's batch size."""
    from eqprop_lightning.cli import EqPropCLI

    datamodule = EqPropCLI(args=[f"--config={config}"], run=False).datamodule
    datamodule.prepare_data()
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    return len(loader.dataset), loader.batch_size


def read_checkpoint_file(checkpoint: Path, mmap: bool = False) -> dict:
    """The Lightning checkpoint ``--checkpoint`` (loaded with ``weights_only``), else
    ``ConfigError``: no such file, not a PyTorch checkpoint, or no ``state_dict`` in it."""
    check_checkpoint_file(checkpoint, "--checkpoint")
    given = f"--checkpoint={str(checkpoint)!r}"
    try:
        saved = read_checkpoint(checkpoint, mmap)
    except Exception as err:  # torch's messages run over many lines: keep the first
        reason = (str(err).strip() or type(err).__name__).splitlines()[0]
        raise ConfigError(f"{given} cannot be read as a checkpoint: {reason}") from err
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ConfigError(f"{given} is not a Lightning checkpoint (it holds no state_dict)")
    return saved


def add(
    checkpoint: Path,
    config: Path | str,
    epochs: int,
    seed: int,
    subset: int | None = None,
    index: Path = INDEX,
) -> Entry:
    """Evaluate ``checkpoint`` (on the first ``subset`` examples if given, and on the full test
    set) and append its entry to ``index``; the algorithm is read from the checkpoint's
    hyperparameters. ``config`` is a file or a packaged config's name (``mnist/p1h``), as for
    ``eqprop --config``. Every argument is checked before the evaluation (minutes on big nets)."""
    check_file_to_write(index, f"--index {index}", "index.json")
    index_dir, repo = index.parent.resolve(), index.parent.resolve().parent
    config = Path(resolve_config(str(config))).resolve()
    saved = read_checkpoint_file(checkpoint, mmap=True)
    checkpoint = checkpoint.resolve()
    for flag, path, base in (("--checkpoint", checkpoint, index_dir), ("--config", config, repo)):
        if not path.is_relative_to(base):
            raise ConfigError(f"{flag} {path} must lie under {base} (the index records it there)")
    raw = dict(
        checkpoint=str(checkpoint.relative_to(index_dir)),
        config=str(config.relative_to(repo)),
        test_error=0.0,  # placeholders until the evaluation, so that the rest is checked first
        epochs=epochs,
        seed=seed,
        algorithm=(saved.get("hyper_parameters") or {}).get("algorithm"),
    )
    if subset is not None:
        raw |= dict(subset=subset, subset_error=0.0)
    entry = check_entry(raw, f"new entry for {checkpoint}", index_dir)
    entries = load_index(index)
    if any(e.checkpoint == entry.checkpoint for e in entries):
        raise ConfigError(f"{index} already has an entry for {entry.checkpoint}")
    if subset is not None:  # first: it checks the subset against the test loader
        entry = replace(entry, subset_error=round(evaluate_error(config, checkpoint, subset), 4))
    entry = replace(entry, test_error=round(evaluate_error(config, checkpoint), 4))
    index.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(index, json.dumps([e.to_json() for e in [*entries, entry]], indent=2) + "\n")
    return entry


#: what only resuming reads: the optimizer and schedule, the loops' progress, the run's seed and
#: random states, and the callbacks' (the run's checkpoint paths among them)
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", SEED_KEY, RNG_KEY, "callbacks")


def slim(checkpoint: Path, out: Path, half: bool = False) -> Path:
    """Write ``checkpoint`` without its :data:`TRAINING_STATE` to ``out``: what ``eqprop test``
    reads (the weights, hyperparameters and data settings), a third of an Adam checkpoint.

    ``half`` also stores the float32 weights as float16 (half the size again; loading casts them
    back to float32). That rounds each weight to 11 significant bits, so the copy is a slightly
    different model: evaluate the copy (``add`` does), not the run it came from.

    ``out`` may not be ``checkpoint`` itself: the run could no longer resume."""
    check_file_to_write(out, f"--out {out}", "slim.ckpt")
    if out.exists() and checkpoint.exists() and out.samefile(checkpoint):
        raise ConfigError(
            f"--out {out} is the --checkpoint itself: the copy would replace the run's training "
            "state (the run could no longer resume); give another file"
        )
    saved = read_checkpoint_file(checkpoint)
    for key in TRAINING_STATE:
        saved.pop(key, None)
    if half:
        saved["state_dict"] = {
            name: t.half() if t.dtype == torch.float32 else t
            for name, t in saved["state_dict"].items()
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda name: torch.save(saved, name))
    return out


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eqprop_lightning.shipped",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("add", help="evaluate a checkpoint and append its entry to the index")
    p.add_argument("--checkpoint", type=Path, required=True, help="a file under checkpoints/")
    p.add_argument(
        "--config", required=True, help="its config: a file, or a packaged name (mnist/p1h)"
    )
    p.add_argument("--epochs", type=int, required=True, help="epochs it was trained for")
    p.add_argument("--seed", type=int, required=True, help="the run's seed_everything")
    p.add_argument("--subset", type=int, default=None, help="also record the error on the first N")
    p.add_argument("--index", type=Path, default=INDEX, help=f"default {INDEX}")
    p = sub.add_parser("slim", help="copy a checkpoint without its optimizer and schedule state")
    p.add_argument("--checkpoint", type=Path, required=True, help="a run's checkpoint")
    p.add_argument("--out", type=Path, required=True, help="where the slim copy goes")
    p.add_argument("--half", action="store_true", help="store the float32 weights as float16")
    own = parser.parse_args(args)
    try:
        if own.command == "slim":
            print(slim(own.checkpoint, own.out, own.half))
        else:
            entry = add(own.checkpoint, own.config, own.epochs, own.seed, own.subset, own.index)
            print(json.dumps(entry.to_json()))
    except Exception as err:  # a bad argument: one line, as `eqprop` reports it
        cause = user_error(err)
        if cause is None:
            raise
        fail(str(cause), 2, parser.prog)


if __name__ == "__main__":
    main()
