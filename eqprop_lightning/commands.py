"""Entry point of the ``eqprop`` command: dispatch to the subcommands, each with its own
``--help``, and report invalid configs, missing data, divergences and interruptions in one line.

Nothing heavy is imported here: Lightning, matplotlib and the text libraries are imported by the
command that needs them, so that ``eqprop --help`` answers at once.

- ``fit``, ``validate``, ``test``, ``predict``: LightningCLI (:mod:`eqprop_lightning.cli`).
- ``compare``: EP and BPTT from identical initial weights.
- ``gdu``, ``recipe``: the GDU analysis and its sign agreement over several batches.
- ``report``: the Table 1 reproduction report (:mod:`eqprop_lightning.report`).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from eqprop_lightning import __version__
from eqprop_lightning.errors import NO_CHECKPOINT_NOTE, ConfigError, DataError
from eqprop_lightning.resources import resolve_config, resolve_config_args

LIGHTNING_COMMANDS = {
    "fit": "train a config (`eqprop fit --config mnist/p1h`)",
    "validate": "evaluate a checkpoint on the per-epoch evaluation set",
    "test": "evaluate a checkpoint on the test set",
    "predict": "write the class and output state of every test example (predictions.pt)",
}
OTHER_COMMANDS = {
    "compare": "train the config with BPTT and with EP from identical initial weights",
    "gdu": "EP updates against BPTT gradients step by step on one training batch",
    "recipe": "sign agreement of EP updates and BPTT gradients over several training batches",
    "report": "the Table 1 reproduction report from run directories",
}
CONFIG_HELP = (
    "a YAML file, or a packaged config's name (mnist/p1h, gdu/fig3_eb1h, ...; see the error for "
    "the list); may be given several times, later ones override"
)
OVERRIDES = (
    "Every option of `eqprop fit` (--model.*, --data.*, --trainer.*, --seed_everything) is "
    "accepted too and overrides the config: `eqprop fit --config X --help` lists them."
)
DEBUG_VAR = "EQPROP_DEBUG"


def top_parser() -> argparse.ArgumentParser:
    """``eqprop --help``: the commands, each with a line."""
    commands = {**LIGHTNING_COMMANDS, **OTHER_COMMANDS}
    listing = "\n".join(f"  {name:<9} {text}" for name, text in commands.items())
    parser = argparse.ArgumentParser(
        prog="eqprop",
        usage="eqprop [-h] [--version] COMMAND ...",
        description="Equilibrium Propagation and BPTT for convergent RNNs (PyTorch Lightning).",
        epilog=f"commands:\n{listing}\n\n`eqprop COMMAND --help` lists the options of each. "
        f"{DEBUG_VAR}=1 shows the full traceback behind a one-line error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eqprop {__version__}")
    return parser


ANALYSIS_OVERRIDES = (
    "The options of `eqprop fit` that build the net, the rule and the data (--model.*, --data.*, "
    "--seed_everything) are accepted too and override the config: `eqprop fit --config X --help` "
    "lists them. Of the trainer's options only those placing the outputs are: "
    "--trainer.default_root_dir, --trainer.logger.init_args.save_dir and .name, and "
    "--trainer.logger false (into default_root_dir itself); the others, and --gdu.*, are "
    "refused. The analysis is of the config's net as seeded, or of --ckpt_path's weights, on the "
    "CPU."
)


def _analysis_parser(
    name: str, description: str, epilog: str = ANALYSIS_OVERRIDES
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"eqprop {name}",
        description=description,
        epilog=epilog,
        allow_abbrev=False,
        exit_on_error=False,  # a bad value is one `eqprop: error:` line, as the others
    )
    parser.add_argument("--config", "-c", action="append", required=True, help=CONFIG_HELP)
    return parser


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ckpt_path",
        type=Path,
        default=None,
        help="analyse the weights of this checkpoint (a run's last.ckpt, a shipped model) instead "
        "of the config's seeded net; its net must be the config's (T, K, beta and the batches "
        "stay the config's)",
    )
    parser.add_argument(
        "--double",
        action="store_true",
        help="analyse in float64 (default float32, as training): at small beta, float32 rounding "
        "in EP's finite difference ((s(beta) - s(0)) / beta, or (s(beta) - s(-beta)) / 2 beta when "
        "symmetric) can exceed EP's own difference from BPTT (O(beta), or O(beta^2))",
    )


def compare_parser() -> argparse.ArgumentParser:
    return _analysis_parser(
        "compare",
        "Train the config with BPTT, then with EP, from identical initial weights and the same "
        "settings (the original's --benchmark); write <run root>/<name>/compare_<n>/ with bptt/ "
        "and ep/ run directories, compare.json, compare.md and compare.png.",
        epilog=OVERRIDES,
    )


def gdu_parser() -> argparse.ArgumentParser:
    parser = _analysis_parser(
        "gdu",
        "On the first training batch, compare EP's updates with BPTT's gradients over the last K "
        "steps; write gdu.pt, gdu.json, three figures and TensorBoard events.",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="where to write (default: a new <run root>/<name>/gdu_<n>/)",
    )
    _add_analysis_options(parser)
    return parser


def recipe_parser() -> argparse.ArgumentParser:
    parser = _analysis_parser(
        "recipe",
        "Sign agreement of EP's updates and BPTT's gradients over the first N training batches; "
        "write recipe.json and recipe.md.",
    )
    parser.add_argument("--batches", type=int, default=20, help="training batches (default 20)")
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="where to write (default: a new <run root>/<name>/recipe_<n>/)",
    )
    _add_analysis_options(parser)
    return parser


def _split(parser: argparse.ArgumentParser, args: list[str]) -> tuple[argparse.Namespace, list]:
    """The command's own options, and the rest (the configs and the overrides) for the parser of
    the model and data, with the configs first."""
    own, rest = parser.parse_known_args(args)
    configs = [a for path in own.config for a in ("--config", resolve_config(path))]
    return own, [*configs, *rest]


def run_compare(args: list[str]) -> None:
    _, rest = _split(compare_parser(), args)
    from eqprop_lightning.cli import compare

    compare(rest)


def _analysis_inputs(args: list[str], n_batches: int, own: argparse.Namespace):
    """The analysed net (with ``own.ckpt_path``'s weights), rule and batches (in float64 with
    ``own.double``): read without Lightning where the configs allow it."""
    from eqprop_lightning.analysis_commands import analysis_inputs

    inputs = analysis_inputs(args, n_batches)
    if inputs is None:
        from eqprop_lightning.cli import analysis_inputs_from_cli

        inputs = analysis_inputs_from_cli(args, n_batches)
    if own.ckpt_path is not None:
        inputs = inputs.with_weights(own.ckpt_path)
    return inputs.in_float64() if own.double else inputs


def _check_output_dir(path: Path | None, command: str) -> None:
    """``--output_dir``: a directory, without an earlier analysis' ``<command>.json``."""
    if path is None or not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"--output_dir {path} is a file: give a directory")
    if (earlier := path / f"{command}.json").exists():
        raise ConfigError(
            f"--output_dir {path} holds {earlier} of an earlier analysis: give a new directory "
            f"(or none: a new {command}_<n>/)"
        )


def run_gdu(args: list[str]) -> None:
    own, rest = _split(gdu_parser(), args)
    _check_output_dir(own.output_dir, "gdu")
    from eqprop_lightning.analysis_commands import gdu_command

    gdu_command(_analysis_inputs(rest, 1, own), own.output_dir)


def run_recipe(args: list[str]) -> None:
    own, rest = _split(recipe_parser(), args)
    _check_output_dir(own.output_dir, "recipe")
    if own.batches < 1:
        raise ConfigError(f"--batches={own.batches} must be a positive integer")
    from eqprop_lightning.analysis_commands import recipe_command

    recipe_command(_analysis_inputs(rest, own.batches, own), own.output_dir)


def run_report(args: list[str]) -> None:
    from eqprop_lightning.report import report_command

    report_command(args)


def run_lightning(args: list[str]) -> None:
    from eqprop_lightning.cli import run_lightning_cli

    run_lightning_cli(resolve_config_args(args))


#: Each command's function, called with the arguments after the command's name (LightningCLI's
#: commands with the name: it parses it).
COMMANDS: dict[str, Callable[[list[str]], None]] = {
    **{name: (lambda args, name=name: run_lightning([name, *args])) for name in LIGHTNING_COMMANDS},
    "compare": run_compare,
    "gdu": run_gdu,
    "recipe": run_recipe,
    "report": run_report,
}


def user_error(err: BaseException | None) -> BaseException | None:
    """The invalid-config or missing-data error in ``err``'s chain (jsonargparse wraps the errors
    raised while instantiating optional arguments), else ``None``."""
    user_errors: tuple[type[BaseException], ...] = (
        ConfigError,
        DataError,
        FileNotFoundError,
        argparse.ArgumentError,  # the CLI's parse errors
    )
    if "lightning" in sys.modules:  # only a command that imported Lightning can raise it
        from lightning.pytorch.utilities.exceptions import MisconfigurationException

        user_errors += (MisconfigurationException,)
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, user_errors):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


#: how to go on after an interrupted command (the others are simply run again)
RESUME_HINTS = {
    "fit": "continue with `eqprop fit --config ... --ckpt_path last` (the same options)",
    "compare": "`eqprop compare` does not resume: run it again (the stopped legs stay in their "
    "run directories)",
}


def _stopped(err: BaseException, command: str) -> str | None:
    """The one-line message of a divergence or an interruption of ``command``, else ``None``."""
    if "eqprop_lightning.learning" in sys.modules:
        from eqprop_lightning.learning import DivergenceError

        if isinstance(err, DivergenceError):
            return f"{err}; no checkpoint holds the diverged values (earlier ones are kept)"
    if "lightning" in sys.modules:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(err, SIGTERMException):
            if NO_CHECKPOINT_NOTE in getattr(err, "__notes__", ()):
                return (
                    "stopped by Ctrl-C or SIGTERM before any checkpoint was written: run it again"
                )
            hint = RESUME_HINTS.get(command)
            return "stopped by Ctrl-C or SIGTERM" + (f"; {hint}" if hint else "")
    return None


def fail(message: str, status: int, prog: str = "eqprop") -> None:
    """Print ``prog: error: message`` on one line (jsonargparse nests its messages over several
    indented lines) and exit with ``status``; ``EQPROP_DEBUG=1`` prints the traceback first."""
    if os.environ.get(DEBUG_VAR, "") not in ("", "0"):
        traceback.print_exc()
    message = " ".join(line.strip() for line in message.splitlines())
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``eqprop``; invalid configs and missing data exit with status 2, a
    divergence or an interruption with status 1, each with a one-line message
    (``EQPROP_DEBUG=1`` prints the traceback too)."""
    args = sys.argv[1:] if args is None else list(args)
    if not args or args[0] not in COMMANDS:
        parser = top_parser()
        parser.parse_args(args[:1] if args and args[0].startswith("-") else [])
        parser.print_usage(sys.stderr)
        choice = f"unknown command {args[0]!r}" if args else "no command given"
        print(f"eqprop: error: {choice}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    try:
        COMMANDS[args[0]](args[1:])
    except (Exception, SystemExit) as err:  # Lightning's SIGTERMException is a SystemExit
        message = _stopped(err, args[0])
        if isinstance(err, SystemExit) and message is None:
            raise
        if message is not None:
            fail(message, 1)
        cause = user_error(err)
        if cause is None:
            raise
        fail(str(cause), 2)


if __name__ == "__main__":
    main()
