"""The commands of ``eqprop`` that need Lightning: the LightningCLI subcommands (``fit``,
``validate``, ``test``, ``predict``), ``compare`` (EP and BPTT from identical initial weights),
and the inputs of ``gdu`` and ``recipe`` for the configs that the Lightning-free reader of
:mod:`eqprop_lightning.analysis_commands` leaves to the CLI. The command line is parsed and
dispatched by :mod:`eqprop_lightning.commands`, which imports this module only when a command
needs it."""

from __future__ import annotations

import itertools
import json
import logging
import re
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from eqprop_lightning.analysis_commands import READ, AnalysisInputs, check_trainer_overrides
from eqprop_lightning.callbacks import (
    AtomicCheckpointIO,
    GDUCallback,
    LastCheckpoint,
    PredictionWriter,
    ResultsWriter,
)
from eqprop_lightning.config_files import cli_parser
from eqprop_lightning.datamodules.checks import check_positive_int
from eqprop_lightning.errors import ConfigError
from eqprop_lightning.io import write_json_atomic, write_text_atomic
from eqprop_lightning.module import EqPropModule, evaluation_sets
from eqprop_lightning.run_dirs import (
    ROOT_DIR,
    TRAINER_DEFAULTS,
    fixed_run_dir,
    next_dir,
    run_root,
)
from eqprop_lightning.validation import (
    BPTT_UNUSED,
    EXECUTION_ONLY,
    LIGHTNING_CKPT_NAMES,
    check_checkpoint_file,
    check_checkpoint_fits,
    check_net_fits_data,
    check_same_data,
    check_same_evaluation,
    check_same_hparams,
    check_training_state,
    checkpoint_hparams,
    newest_last_checkpoint,
    read_checkpoint,
    resume_seed,
)

EXTRA_COMMANDS = (
    "other commands: compare, gdu, recipe, report (`eqprop --help`; `eqprop gdu --help`, ...)"
)


#: a number of batches (int) or a fraction of them (float), ints first: Lightning types these as
#: ``float | int | None``, under which its CLI reads ``1`` as 1.0, i.e. every batch
BatchLimit = int | float | None


class Trainer(L.Trainer):
    """Lightning's Trainer whose ``limit_*_batches`` read ``1`` as one batch and ``1.0`` as all
    of them, on the command line and in YAML alike."""

    def __init__(
        self,
        *,
        limit_train_batches: BatchLimit = None,
        limit_val_batches: BatchLimit = None,
        limit_test_batches: BatchLimit = None,
        limit_predict_batches: BatchLimit = None,
        **kwargs,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            **kwargs,
        )


class EqPropCLI(LightningCLI):
    """LightningCLI with per-layer learning rates (no ``optimizer:`` entry), a checkpoint and a
    ``results.json`` writer in every run, and the run directory printed at the start."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # a parse error raises (eqprop prints it in one line) instead of printing the usage
        strict = {"exit_on_error": False}
        subcommands = {name: strict for name in self.subcommands()}
        kwargs.setdefault("parser_kwargs", {"epilog": EXTRA_COMMANDS, **strict, **subcommands})
        super().__init__(
            EqPropModule,
            L.LightningDataModule,
            *args,
            subclass_mode_data=True,
            trainer_class=Trainer,
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
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def parse_arguments(self, parser, args) -> None:
        """Parse; put the logger's run directories under ``trainer.default_root_dir`` unless its
        ``save_dir`` is set; then resolve and check ``--ckpt_path`` before Lightning reads the
        checkpoint's hyperparameters (and before anything is instantiated)."""
        with warnings.catch_warnings():
            # eqprop's commands pass ``args`` on purpose, having read sys.argv themselves
            warnings.filterwarnings("ignore", message=".*args parameter is intended")
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        _save_under_root_dir(config.trainer)
        if not config.get("ckpt_path"):
            if subcommand == "fit":
                _refuse_to_overwrite_a_run(config.trainer, config.results.filename)
            return
        if subcommand == "fit":
            self._resume_in_run_directory()
            if config.ckpt_path in LIGHTNING_CKPT_NAMES:
                config.ckpt_path = str(_checkpoint_to_resume(config))
        elif config.ckpt_path in LIGHTNING_CKPT_NAMES:
            config.ckpt_path = str(_checkpoint_to_evaluate(config, subcommand))
        ckpt_path = config.ckpt_path
        if ckpt_path not in LIGHTNING_CKPT_NAMES:
            check_checkpoint_file(ckpt_path)
        # Lightning puts the checkpoint's hyperparameters over the config's: these stay as given
        self._execution_only = {k: config.model.get(k) for k in EXECUTION_ONLY}
        if subcommand == "fit":
            _refuse_to_overwrite_a_run(config.trainer, config.results.filename, ckpt_path)
            saved = read_checkpoint(ckpt_path)
            check_same_hparams(ckpt_path, saved, config.model.as_dict())
            check_same_data(ckpt_path, saved, config.data.as_dict())
            given = config.get("seed_everything")
            seed = resume_seed(ckpt_path, saved, given)
            if seed is not given:  # the run's own, for true or null (not !=: 1 == True)
                rank_zero_info(f"resuming with the run's seed_everything={seed}")
                config.seed_everything = seed
        else:
            model = config.model.as_dict()
            check_same_evaluation(ckpt_path, read_checkpoint(ckpt_path), model, subcommand)

    def _resume_in_run_directory(self) -> None:
        """``fit --ckpt_path PATH|last`` continues in the checkpoint's run directory, so that its
        ``results.json`` and TensorBoard events go on instead of starting a new run."""
        logger = self.config.fit.trainer.logger
        init = logger.init_args if logger and "init_args" in logger else None
        if init is None or "save_dir" not in init:
            return
        ckpt = self.config.fit.ckpt_path
        if ckpt == "last":
            ckpt = self.config.fit.ckpt_path = str(
                newest_last_checkpoint(Path(init.save_dir, init.name), self.config.fit.model)
            )
        run_dir = Path(ckpt).resolve().parent.parent  # <save_dir>/<name>/<version>/checkpoints/
        if run_dir.parent.name == init.name:
            init.version = run_dir.name
            init.save_dir = str(run_dir.parent.parent)
            rank_zero_info(f"resuming {ckpt} in {run_dir}")

    def before_instantiate_classes(self) -> None:
        """After Lightning put a ``--ckpt_path``'s hyperparameters over the config: the
        config's execution-only settings (``compile``) are restored, and a checkpoint written
        before BPTT took no ``beta`` (``algorithm: bptt`` with the config's ``beta`` and
        ``symmetric``, which BPTT never used) has them dropped, saying so."""
        config = self.config.get(str(self.subcommand), self.config)
        for key, value in getattr(self, "_execution_only", {}).items():
            setattr(config.model, key, value)  # over the checkpoint's (``compile``)
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        saved = checkpoint_hparams(ckpt_path)
        if saved.get("algorithm") != "bptt" or config.model.algorithm != "bptt":
            return
        unused = {k: saved[k] for k in BPTT_UNUSED if saved.get(k)}
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
        whatever ``plugins`` holds (unless it brings its own ``CheckpointIO``). An epoch period
        of 0, which Lightning takes and divides by at the first epoch's end, is refused."""
        check_positive_int(
            "trainer.check_val_every_n_epoch",
            config.get("check_val_every_n_epoch"),
            allow_none=True,
        )
        if config.get("enable_checkpointing") is False:
            callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
        elif self.datamodule is not None and "val" not in evaluation_sets(self.datamodule):
            best = [
                cb
                for cb in callbacks
                if type(cb) is ModelCheckpoint and str(cb.monitor).startswith("val/")
            ]
            if best and self.subcommand not in ("validate", "test", "predict"):  # no checkpoints
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
        _check_callbacks(self.trainer, self.model.hparams, self.subcommand)
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES:
            check_checkpoint_fits(ckpt_path, self.model)
            if self.subcommand == "fit":
                check_training_state(ckpt_path)
        if not ckpt_path and self.subcommand != "fit":
            rank_zero_warn(
                f"no --ckpt_path: {self.subcommand} uses the net as initialised (seed "
                f"{self.config[self.subcommand].get('seed_everything')}), not a trained one"
            )

    before_fit = before_validate = before_test = before_predict = _check_run

    def after_fit(self) -> None:
        results = _results_file(self.trainer)
        if results is None:
            results = "none written (fast_dev_run)"
        elif not results.exists():  # e.g. resumed from a checkpoint already at max_epochs
            results = f"none written (no epoch completed; max_epochs={self.trainer.max_epochs})"
        lines = [f"results: {results}"]
        for ckpt in self.trainer.checkpoint_callbacks:
            if isinstance(ckpt, LastCheckpoint):
                lines.append(f"last checkpoint: {ckpt.last_path or 'none written'}")
            elif isinstance(ckpt, ModelCheckpoint) and ckpt.monitor:
                # a resumed callback holds the paths of the run its checkpoint came from, which
                # need not be here (a copy of a finished run's last.ckpt trains nothing)
                best = ckpt.best_model_path if Path(ckpt.best_model_path).is_file() else ""
                if best:  # Lightning counts the epochs in its file names from 0
                    epoch = read_checkpoint(best)["epoch"] + 1
                    best = f"{best} (epoch {epoch} of results.json)"
                lines.append(f"best checkpoint by {ckpt.monitor}: {best or None}")
        rank_zero_info("\n".join(lines))


def _check_callbacks(trainer: L.Trainer, hparams, command: str) -> None:
    """Options of the GDU check and the predictions file that ``command`` would not use
    (``ConfigError``)."""
    for callback in trainer.callbacks:
        if isinstance(callback, GDUCallback):
            callback.check_against(hparams, trainer, command)
        if isinstance(callback, PredictionWriter) and callback.path and command != "predict":
            raise ConfigError(
                f"predictions.path={callback.path!r}: {command} writes no predictions (eqprop "
                "predict does)"
            )


def _results_file(trainer: L.Trainer) -> Path | None:
    """The run's results file, as its :class:`ResultsWriter` names it (``--results.filename``);
    None under ``fast_dev_run``, which writes none."""
    return next(c for c in trainer.callbacks if isinstance(c, ResultsWriter)).path


def _logger_less_last(trainer) -> Path:
    """``<default_root_dir>/checkpoints/last.ckpt``: where a run without a logger writes it."""
    root = trainer.get("default_root_dir") or TRAINER_DEFAULTS["default_root_dir"]
    return Path(root) / "checkpoints" / "last.ckpt"


def _checkpoint_to_resume(config) -> Path:
    """``fit --ckpt_path last|best|hpc|registry`` that the logger's runs did not resolve:
    ``last`` is ``<default_root_dir>/checkpoints/last.ckpt``, where a run without a logger
    writes it; the others name checkpoints of a fit in the same process (``ConfigError``)."""
    name = config.ckpt_path
    if name != "last":
        raise ConfigError(
            f"ckpt_path={name!r} names a checkpoint of a fit in the same process: fit resumes "
            "a checkpoint's file, or 'last' (the newest last.ckpt of this config's runs)"
        )
    last = _logger_less_last(config.trainer)
    if config.trainer.get("logger") or not last.is_file():
        raise ConfigError(
            f"ckpt_path='last': no {last}, where a run without a logger writes it, and no "
            "logger's runs to look in; give the checkpoint's file"
        )
    return last


def _checkpoint_to_evaluate(config, command: str) -> Path:
    """``--ckpt_path last|best|hpc|registry`` of validate, test or predict, which run in a process
    of their own: Lightning's ``last`` would look in the new run's directory, find nothing and
    evaluate the untrained net, and the others name checkpoints of a fit in the same process.
    ``last`` is the newest ``last.ckpt`` of the logger's runs, as for ``fit``; the others are
    refused (``ConfigError``)."""
    name = config.ckpt_path
    root = run_root(config.trainer.as_dict()) if name == "last" else None
    if root is None:
        also = "" if name == "last" else " or 'last' (the newest last.ckpt of this config's runs)"
        raise ConfigError(
            f"ckpt_path={name!r}: {command} runs apart from the training that wrote it; give the "
            f"checkpoint's file (<run>/checkpoints/last.ckpt or epochNNN.ckpt){also}"
        )
    return newest_last_checkpoint(root, config.model)


def _save_under_root_dir(trainer) -> None:
    """A logger without ``save_dir`` writes under ``trainer.default_root_dir``."""
    logger = trainer.get("logger")
    init = logger.get("init_args") if hasattr(logger, "get") else None
    if init is not None and init.get("save_dir") == ROOT_DIR:
        init.save_dir = str(trainer.default_root_dir)


def _refuse_to_overwrite_a_run(trainer, results_filename: str, resuming: str | None = None) -> None:
    """A fit that starts in a run directory of an earlier run would overwrite its results
    (``results.json``) and ``last.ckpt``, and one that resumes a checkpoint from elsewhere
    there would go on with its epochs: without a logger every run writes into
    ``default_root_dir`` itself; a TensorBoard logger given a ``version`` writes into it. A
    checkpoint ``resuming`` from inside that directory is its own run's."""
    if trainer.get("fast_dev_run"):  # writes no files
        return
    if not trainer.get("logger"):
        root = _logger_less_last(trainer).parent.parent
        writes = "trainer.logger=false writes the run into"
        other = (
            "give another --trainer.default_root_dir, or keep the logger (a new version_<n> "
            "per run)"
        )
    else:
        root = fixed_run_dir(trainer.as_dict())
        if root is None:  # a new version_<n>
            return
        writes = "trainer.logger.init_args.version writes the run into"
        other = "give another version (or none: a new version_<n> per run)"
    last = root / "checkpoints" / "last.ckpt"
    if resuming is not None and _of_run(Path(resuming), root, last):
        return
    for earlier in (root / results_filename, last):
        if earlier.exists():
            run = "an earlier run"
            if resuming is not None:
                run += f" that --ckpt_path {resuming} does not resume"
            resume = f"resume {'that run' if resuming else 'it'} with --ckpt_path {last}, or "
            raise ConfigError(
                f"{writes} {root}, which holds {earlier} of {run}: "
                f"{resume if last.exists() else ''}{other}"
            )


def _of_run(checkpoint: Path, root: Path, last: Path) -> bool:
    """``checkpoint`` is in the run directory ``root`` (as written, or with links followed), or
    is its ``last`` by another path."""
    inside = any(
        r in c.parents
        for r, c in (
            (root.absolute(), checkpoint.absolute()),
            (root.resolve(), checkpoint.resolve()),
        )
    )
    return inside or (last.exists() and checkpoint.exists() and checkpoint.samefile(last))


def compare(args: list[str]) -> dict[str, list[dict]]:
    """The original's ``--benchmark``: train BPTT, then EP, from identical initial weights with the
    same hyperparameters; write ``compare.json``, ``compare.md`` and ``compare.png`` and return
    both rules' epochs (on rank 0; ``{}`` on the other ranks of a DDP run)."""
    from eqprop_lightning.plots import plot_error_curves

    given = [a for a in args if a.split("=")[0] == "--model.algorithm"]
    if given:
        raise ConfigError(
            f"{given[0]}: compare trains both rules itself (BPTT, then EP with the "
            "config's beta); drop --model.algorithm"
        )
    model = cli_parser().parse_args(args).model
    if model.get("beta") is None:
        raise ConfigError(
            "model.beta=None: compare trains EP with the config's beta and BPTT from the same "
            "weights; give an EP config (without the bptt or rbp override) or --model.beta B"
        )
    if model.get("algorithm", "ep") != "ep":  # a config's rule would be replaced by EP
        raise ConfigError(
            f"model.algorithm={model.get('algorithm')!r} in the config: compare trains EP "
            "(algorithm ep, with the config's nudging) and BPTT; give an EP config"
        )
    # BPTT takes none of EP's options (its nudge and nudging scheme)
    bptt = ["--model.beta=null", "--model.symmetric=false", "--model.nudging=null"]
    rule_args = {"ep": [], "bptt": [*bptt, "--model.holomorphic_points=null"]}
    clis = {
        alg: EqPropCLI(args=[*args, f"--model.algorithm={alg}", *rule_args[alg]], run=False)
        for alg in ("ep", "bptt")
    }
    logger = clis["ep"].trainer.logger
    if logger is None:
        raise ConfigError(
            "trainer.logger=false: compare writes its two runs (ep/, bptt/) under the logger's "
            "directory; keep the config's TensorBoardLogger"
        )
    if clis["ep"].trainer.fast_dev_run:
        raise ConfigError(
            "trainer.fast_dev_run: compare reads both runs' results, which fast_dev_run does not "
            "write; shorten the runs with --trainer.max_epochs and --trainer.limit_train_batches"
        )
    root = next_dir(Path(logger.save_dir) / logger.name, "compare")
    for alg, cli in clis.items():  # (the logger writes nothing before training)
        cli.trainer.logger = TensorBoardLogger(save_dir=str(root), name="", version=alg)
        _check_callbacks(cli.trainer, cli.model.hparams, "compare")
    clis["bptt"].model.load_state_dict(clis["ep"].model.state_dict())
    results = {}
    for alg in ("bptt", "ep"):
        cli = clis[alg]
        rank_zero_info(f"{alg}: run directory {cli.trainer.log_dir}")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        if cli.trainer.is_global_zero:  # under DDP only rank 0 writes results.json
            results[alg] = json.loads(_results_file(cli.trainer).read_text())["epochs"]
    if results:
        write_json_atomic(root / "compare.json", results)
        table = comparison_table(results)
        write_text_atomic(root / "compare.md", table + "\n")
        plot_error_curves(results, root / "compare.png")
        print(table)
        print(f"comparison written to {root}")
    return results


def analysis_inputs_from_cli(args: list[str], n_batches: int) -> AnalysisInputs:
    """:class:`~eqprop_lightning.analysis_commands.AnalysisInputs` built like ``fit`` builds its
    model and data, for the configs that :func:`~eqprop_lightning.analysis_commands.analysis_inputs`
    does not read."""
    parser = cli_parser()
    check_analysis_options(parser.parse_args(args), parser.get_defaults())
    check_trainer_overrides(args, skip=NOT_ANALYSED)
    # the analyses write no checkpoint (nor say which they would keep), and run no Trainer: its
    # start-up lines (seed, accelerators, batch limits) are not theirs to print
    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        cli = EqPropCLI(args=[*args, "--trainer.enable_checkpointing=false"], run=False)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    model, datamodule, logger = cli.model, cli.datamodule, cli.trainer.logger
    check_net_fits_data(model.net, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    if n_batches > len(loader):
        raise ConfigError(f"--batches={n_batches}: the training set has only {len(loader)} batches")
    # the text data modules embed token ids in on_after_batch_transfer
    batches = [
        datamodule.on_after_batch_transfer(b, 0) for b in itertools.islice(loader, n_batches)
    ]
    hp = model.hparams
    if logger is None:  # trainer.logger=false: where fit writes its run
        root = Path(cli.trainer.default_root_dir)
    elif logger.save_dir is None:
        raise ConfigError(
            f"trainer.logger={type(logger).__name__} has no save_dir: the analyses write under "
            "<save_dir>/<name>; set --trainer.logger.init_args.save_dir"
        )
    else:
        root = Path(logger.save_dir) / (logger.name or "")
    net_config = cli.config.model.net.as_dict()
    return AnalysisInputs(
        model.net, model.rule, hp.T, hp.K, hp.beta, hp.symmetric, batches, root, net_config
    )


#: options of ``fit`` that the analyses could be expected to use and do not: refused, saying why
NOT_ANALYSED = {
    "trainer.precision": "they run in float32, or in float64 with --double",
    "trainer.accelerator": "they run on the CPU",
    "trainer.devices": "they run in one process on the CPU",
    "trainer.num_nodes": "they run in one process on the CPU",
    "trainer.strategy": "they run in one process on the CPU",
    # refused in the configs too: Lightning then replaces the logger, which places the outputs
    "trainer.fast_dev_run": f"they run no training or evaluation loop; {READ}",
    "gdu": "--gdu.* set the GDU callback of fit; the analyses take T, K and beta from the model "
    "(--model.T, --model.K, --model.beta)",
}


#: values of those options that are what the analyses do
ANALYSED_AS_GIVEN = {
    "trainer.precision": (32, "32", "32-true"),
    "trainer.accelerator": ("cpu",),
    "trainer.devices": (1, "1"),
}


def check_analysis_options(config, defaults) -> None:
    """``eqprop gdu`` and ``recipe`` analyse the config's seeded net on the CPU: each option of
    :data:`NOT_ANALYSED` set away from its default is a ``ConfigError`` (it would be ignored),
    in the configs too; the trainer's other options are refused on the command line by
    :func:`~eqprop_lightning.analysis_commands.check_trainer_overrides`."""
    for key, why in NOT_ANALYSED.items():
        if config.get(key) not in (defaults.get(key), *ANALYSED_AS_GIVEN.get(key, ())):
            given = config.get(key)
            shown = given.as_dict() if hasattr(given, "as_dict") else given
            raise ConfigError(f"{key}={shown!r} is not used by eqprop gdu and eqprop recipe: {why}")


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


def run_lightning_cli(args: list[str]) -> None:
    """``eqprop fit|validate|test|predict``: LightningCLI on ``args`` (the command line, its
    configs resolved)."""
    EqPropCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """The ``eqprop`` command (:func:`eqprop_lightning.commands.main`)."""
    from eqprop_lightning.commands import main as eqprop

    eqprop(args)


if __name__ == "__main__":
    main()
