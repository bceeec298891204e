"""The values of composed config files, for code that reads configs without training.

A config under ``configs/`` loads its net family's base with jsonargparse's ``config:`` key and
sets its own values with dotted keys after it (``model.T: 40``); further ``--config`` files
override it in order. :func:`resolved_config` returns what ``eqprop fit --config A --config B
--print_config`` prints, as plain dicts, from the CLI's own parser (so it cannot drift from it).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from eqprop_lightning.resources import resolve_config


class _Parser(Exception):
    """Carries the CLI's parser out of its construction."""


@cache
def cli_parser() -> Any:
    """The ``eqprop`` parser (without subcommands), built once."""
    from eqprop_lightning.cli import EqPropCLI

    class ParserOnly(EqPropCLI):
        def parse_arguments(self, parser, args) -> None:
            raise _Parser(parser)

    try:
        ParserOnly(args=[], run=False)
    except _Parser as found:
        return found.args[0]
    raise RuntimeError("the eqprop parser was not built")


def resolved_config(*configs: str | Path, overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """``--config`` files in order (then ``overrides``, command-line style) as the CLI resolves
    them (a packaged config by its name too, ``mnist/p1h``): bases loaded, defaults filled in,
    ``{"class_path", "init_args"}`` for classes."""
    args = [arg for config in configs for arg in ("--config", resolve_config(str(config)))]
    namespace = cli_parser().parse_args([*args, *overrides])
    namespace.pop("config", None)
    return namespace.as_dict()


def flat(tree: object, prefix: str = "") -> dict[str, object]:
    """``{"model.net.init_args.size_tab": [...], "model.T": 40, ...}`` of a nested dict (tuples
    as lists: a module built in code may give ``lrs`` as a tuple where YAML gives a list)."""
    if isinstance(tree, tuple):
        tree = list(tree)
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
