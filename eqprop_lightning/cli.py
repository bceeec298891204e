"""The ``eqprop`` command: Lightning CLI subcommands (``fit``, ``validate``, ``test``, ``predict``)
plus ``compare`` (EP and BPTT from identical initial weights), ``gdu`` (EP updates against BPTT
gradients step by step) and ``recipe`` (their sign agreement over several batches)."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from eqprop_lightning.callbacks import (
    AtomicCheckpointIO,
    GDUCallback,
    LastCheckpoint,
    ResultsWriter,
    write_json_atomic,
)
from eqprop_lightning.callbacks.results import evaluation_sets
from eqprop_lightning.errors import ConfigError, DataError
from eqprop_lightning.learning import DivergenceError
from eqprop_lightning.module import EqPropModule
from eqprop_lightning.report import report_command
from eqprop_lightning.validation import (
    LIGHTNING_CKPT_NAMES,
    check_checkpoint_file,
    check_checkpoint_fits,
    check_net_fits_data,
)

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "eqprop"},
    },
    "log_every_n_steps": 50,
}

EXTRA_COMMANDS = """extra subcommands:
  compare   train the config with EP and with BPTT from identical initial weights and write
            both error curves and a side-by-side table (`eqprop compare --config X`)
  gdu       EP updates against BPTT gradients step by step on one training batch: tensors,
            RMSE table and figures (`eqprop gdu --config X [--output_dir DIR]`)
  recipe    sign agreement of EP and BPTT over N training batches
            (`eqprop recipe --config X [--batches 20] [--output_dir DIR]`)"""


class EqPropCLI(LightningCLI):
    """LightningCLI with per-layer learning rates (no ``optimizer:`` entry), a checkpoint and a
    ``results.json`` writer in every run, and the run directory printed at the start."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"epilog": EXTRA_COMMANDS})
        super().__init__(
            EqPropModule,
            L.LightningDataModule,
            *args,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            trainer_defaults=TRAINER_DEFAULTS,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        # the best epoch by val/error (with a validation split only: see _instantiate_trainer),
        # and last.ckpt after every epoch and on Ctrl-C/SIGTERM; a resumed run writes into its
        # own run directory, so no version counter (last.ckpt is overwritten)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/error",
                "checkpoint.mode": "min",
                "checkpoint.filename": "epoch{epoch:03d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(ResultsWriter, "results")
        parser.add_lightning_class_args(GDUCallback, "gdu")

    def parse_arguments(self, parser, args) -> None:
        """Parse, then resolve and check ``--ckpt_path`` before Lightning reads the checkpoint's
        hyperparameters (and before anything is instantiated)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand or not self.config[subcommand].get("ckpt_path"):
            return
        if subcommand == "fit":
            self._resume_in_run_directory()
        ckpt_path = self.config[subcommand].ckpt_path
        if ckpt_path not in LIGHTNING_CKPT_NAMES:
            check_checkpoint_file(ckpt_path)

    def _resume_in_run_directory(self) -> None:
        """``fit --ckpt_path PATH|last`` continues in the checkpoint's run directory, so that its
        ``results.json`` and TensorBoard events go on instead of starting a new run."""
        logger = self.config.fit.trainer.logger
        init = logger.init_args if logger and "init_args" in logger else None
        if init is None or "save_dir" not in init:
            return
        ckpt = self.config.fit.ckpt_path
        if ckpt == "last":
            found = sorted(
                Path(init.save_dir, init.name).glob("*/checkpoints/last.ckpt"),
                key=lambda p: p.stat().st_mtime,
            )
            if not found:
                raise ConfigError(
                    f"ckpt_path='last': no {Path(init.save_dir, init.name)}/*/checkpoints/last.ckpt"
                )
            ckpt = self.config.fit.ckpt_path = str(found[-1])
        run_dir = Path(ckpt).resolve().parent.parent  # <save_dir>/<name>/<version>/checkpoints/
        if run_dir.parent.name == init.name:
            init.version = run_dir.name
            init.save_dir = str(run_dir.parent.parent)
            rank_zero_info(f"resuming {ckpt} in {run_dir}")

    def before_instantiate_classes(self) -> None:
        """``--ckpt_path`` of a checkpoint written before BPTT took no ``beta``: Lightning put
        its hyperparameters (``algorithm: bptt`` with the config's ``beta`` and ``symmetric``,
        which BPTT never used) into the config; they are dropped here, saying so."""
        config = self.config.get(str(self.subcommand), self.config)
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        saved = checkpoint_hparams(ckpt_path)
        if saved.get("algorithm") != "bptt" or config.model.algorithm != "bptt":
            return
        unused = {k: saved[k] for k in ("beta", "symmetric") if saved.get(k)}
        if unused:
            config.model.beta, config.model.symmetric = None, False
            rank_zero_info(
                f"{ckpt_path} was written before BPTT took no beta/symmetric: dropped its "
                + ", ".join(f"{k}={v}" for k, v in unused.items())
                + " (BPTT never used them)"
            )

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> L.Trainer:
        """The one place LightningCLI joins the trainer's arguments and the callbacks: the best
        checkpoint is kept only where there is a validation set to choose it on, no checkpoint
        callback with ``enable_checkpointing: false``, and checkpoints are written atomically
        whatever ``plugins`` holds (unless it brings its own ``CheckpointIO``)."""
        if config.get("enable_checkpointing") is False:
            callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
        elif self.datamodule is not None and "val" not in evaluation_sets(self.datamodule):
            best = [
                cb
                for cb in callbacks
                if type(cb) is ModelCheckpoint and str(cb.monitor).startswith("val/")
            ]
            if best:
                rank_zero_info(
                    f"no validation set: no best checkpoint by {best[0].monitor}, only "
                    f"last.ckpt (each epoch is evaluated on "
                    f"{evaluation_sets(self.datamodule).get('test', 'the test set')})"
                )
                # a checkpoint written before this rule holds that callback's state; the line
                # above says why it is not restored, instead of Lightning's "add the callback"
                missing = json.dumps([best[0].state_key])
                warnings.filterwarnings(
                    "ignore", message=f".*add the following callbacks: {re.escape(missing)}"
                )
            callbacks = [cb for cb in callbacks if not any(cb is b for b in best)]
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super()._instantiate_trainer({**config, "plugins": plugins}, callbacks)

    def _check_run(self) -> None:
        """Before any data is read: the net against the data, and the checkpoint to load."""
        check_net_fits_data(self.model.net, self.datamodule)
        for callback in self.trainer.callbacks:
            if isinstance(callback, GDUCallback):
                callback.check_against(self.model.hparams)
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
            check_checkpoint_fits(ckpt_path, self.model)

    before_fit = before_validate = before_test = _check_run

    def after_fit(self) -> None:
        lines = [f"results: {Path(self.trainer.log_dir) / 'results.json'}"]
        for ckpt in self.trainer.checkpoint_callbacks:
            if isinstance(ckpt, LastCheckpoint):
                # a top-1 checkpoint without a monitor: its "best" is the latest
                lines.append(f"last checkpoint: {ckpt.best_model_path or None}")
            elif isinstance(ckpt, ModelCheckpoint) and ckpt.monitor:
                lines.append(f"best checkpoint by {ckpt.monitor}: {ckpt.best_model_path or None}")
        rank_zero_info("\n".join(lines))


def checkpoint_hparams(ckpt_path: str | Path) -> dict:
    """The hyperparameters stored in a checkpoint (memory-mapped: the tensors are not read)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return dict(ckpt.get("hyper_parameters") or {})


def _next_dir(parent: Path, prefix: str) -> Path:
    n = 0
    while (parent / f"{prefix}_{n}").exists():
        n += 1
    return parent / f"{prefix}_{n}"


def compare(args: list[str]) -> dict[str, list[dict]]:
    """The original's ``--benchmark``: train BPTT, then EP, from identical initial weights with the
    same hyperparameters; write ``compare.json``, ``compare.md`` and ``compare.png``."""
    from eqprop_lightning.plots import plot_error_curves

    warnings.filterwarnings("ignore", message=".*args parameter is intended")
    rule_args = {"ep": [], "bptt": ["--model.beta=null", "--model.symmetric=false"]}
    clis = {
        alg: EqPropCLI(args=[*args, f"--model.algorithm={alg}", *rule_args[alg]], run=False)
        for alg in ("ep", "bptt")
    }
    clis["bptt"].model.load_state_dict(clis["ep"].model.state_dict())
    logger = clis["ep"].trainer.logger
    root = _next_dir(Path(logger.save_dir) / logger.name, "compare")
    results = {}
    for alg in ("bptt", "ep"):
        cli = clis[alg]
        cli.trainer.logger = TensorBoardLogger(save_dir=str(root), name="", version=alg)
        rank_zero_info(f"{alg}: run directory {cli.trainer.log_dir}")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        results[alg] = json.loads((root / alg / "results.json").read_text())["epochs"]
    if clis["ep"].trainer.is_global_zero:
        write_json_atomic(root / "compare.json", results)
        table = comparison_table(results)
        (root / "compare.md").write_text(table + "\n")
        plot_error_curves(results, root / "compare.png")
        print(table)
        print(f"comparison written to {root}")
    return results


def _analysis_setup(prog: str, args: list[str], extra: dict[str, dict]) -> tuple:
    """Parse ``prog``'s own options, build model and data from the rest like ``fit`` would, and
    pick the output directory (a new ``runs/<name>/<prog>_<n>`` unless ``--output_dir``)."""
    parser = argparse.ArgumentParser(prog=f"eqprop {prog}", add_help=False)
    parser.add_argument("--output_dir", type=Path, default=None)
    for flag, kwargs in extra.items():
        parser.add_argument(flag, **kwargs)
    own, rest = parser.parse_known_args(args)
    warnings.filterwarnings("ignore", message=".*args parameter is intended")
    cli = EqPropCLI(args=rest, run=False)
    logger = cli.trainer.logger
    out_dir = own.output_dir or _next_dir(Path(logger.save_dir) / logger.name, prog)
    datamodule = cli.datamodule
    check_net_fits_data(cli.model.net, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cli.model, datamodule, out_dir, own


def _training_batches(datamodule, n: int) -> list[tuple]:
    """The first ``n`` batches of the (shuffled) training loader's first epoch, as the model
    receives them (the text data modules embed token ids in ``on_after_batch_transfer``)."""
    loader = datamodule.train_dataloader()
    if n > len(loader):
        raise ConfigError(f"--batches={n}: the training set has only {len(loader)} batches")
    batches = itertools.islice(loader, n)
    return [datamodule.on_after_batch_transfer(batch, 0) for batch in batches]


def _ep_beta(model) -> float:
    """The analyses compare EP's updates with BPTT's gradients: they need EP's ``beta``."""
    if model.hparams.beta is None:
        raise ConfigError(
            "model.beta=None: the GDU analyses compare EP's updates (nudged by beta) with "
            "BPTT's gradients; use an EP config (algorithm: ep, with beta)"
        )
    return model.hparams.beta


def gdu_command(args: list[str]) -> dict:
    """``eqprop gdu``: the GDU analysis of the config's net on its first training batch."""
    from eqprop_lightning.analysis import rmse_report, run_gdu

    model, datamodule, out_dir, _ = _analysis_setup("gdu", args, {})
    ((x, y),) = _training_batches(datamodule, 1)
    hp = model.hparams
    summary = run_gdu(
        model.net, x, y, hp.T, hp.K, _ep_beta(model), out_dir, hp.symmetric, rule=model.rule
    )
    print(rmse_report(summary))
    print(f"GDU analysis ({summary['seconds']:.1f} s) written to {out_dir}")
    return summary


def recipe_command(args: list[str]) -> dict:
    """``eqprop recipe``: sign agreement of EP and BPTT over ``--batches`` training batches."""
    from eqprop_lightning.analysis import recipe_report, run_recipe, write_recipe

    extra = {"--batches": {"type": int, "default": 20}}
    model, datamodule, out_dir, own = _analysis_setup("recipe", args, extra)
    if own.batches < 1:
        raise ConfigError(f"--batches={own.batches} must be a positive integer")
    batches = _training_batches(datamodule, own.batches)
    hp = model.hparams
    recipe = run_recipe(model.net, batches, hp.T, hp.K, _ep_beta(model))
    path = write_recipe(recipe, out_dir, own.batches)
    print(recipe_report(recipe))
    print(f"sign agreement over {own.batches} batches written to {path}")
    return recipe


def _cell(value: float | None, digits: int) -> str:
    """A number of the table; ``-`` where the epoch has none (not evaluated, or missing)."""
    return "-" if value is None else f"{value:.{digits}f}"


def comparison_table(results: dict[str, list[dict]]) -> str:
    """Markdown table: one row per epoch, train and test error (%) of each algorithm side by
    side (``-`` for an epoch without an evaluation)."""

    algs = list(results)
    header = "| epoch | " + " | ".join(f"{a} train % | {a} test % | {a} s" for a in algs) + " |"
    lines = [header, "|" + "---|" * (1 + 3 * len(algs))]
    for i in range(max(len(r) for r in results.values())):
        cells = [str(i + 1)]
        for a in algs:
            e = results[a][i] if i < len(results[a]) else {}
            cells += [_cell(e.get(k), 2) for k in ("train_error", "test_error")]
            cells.append(_cell(e.get("seconds"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _user_error(err: BaseException | None) -> BaseException | None:
    """The invalid-config or missing-data error in ``err``'s chain (jsonargparse wraps the errors
    raised while instantiating optional arguments), else ``None``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, DataError, FileNotFoundError, MisconfigurationException)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Entry point of ``eqprop``; invalid configs and missing data exit with status 2, a
    divergence or an interruption with status 1, each with a one-line message instead of a
    traceback."""
    args = sys.argv[1:] if args is None else list(args)
    try:
        commands = {
            "compare": compare,
            "gdu": gdu_command,
            "recipe": recipe_command,
            "report": report_command,
        }
        if args[:1] and args[0] in commands:
            commands[args[0]](args[1:])
        else:
            EqPropCLI(args=args if args != sys.argv[1:] else None)
    except DivergenceError as err:
        print(f"eqprop: error: {err}; the last good checkpoint is kept", file=sys.stderr)
        sys.exit(1)
    except SIGTERMException:
        print(
            "eqprop: stopped by Ctrl-C or SIGTERM; continue with "
            "`eqprop fit --config ... --ckpt_path last`",
            file=sys.stderr,
        )
        sys.exit(1)
    except Exception as err:
        cause = _user_error(err)
        if cause is None:
            raise
        print(f"eqprop: error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
