"""Files shipped with the package: the configs and the four MNIST files.

A wheel installs them inside the package (``eqprop_lightning/configs``, ``eqprop_lightning/data``);
in a checkout (and an editable install) they are the repository's top-level ``configs/`` and
``data/``. Nothing here imports more than the standard library, so that ``eqprop --help`` and the
config lookup stay fast.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from eqprop_lightning.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def packaged(name: str) -> Path:
    """The shipped folder ``name`` (``configs`` or ``data``): inside the installed package, else
    the checkout's top-level folder."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def config_names() -> list[str]:
    """The packaged configs as ``--config`` accepts them: ``mnist/p1h``, ``gdu/fig3_eb1h``, ..."""
    root = packaged("configs")
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.yaml"))


def resolve_config(value: str) -> str:
    """``--config``'s value: an existing file as given, else the packaged config of that name
    (``mnist/p1h`` or ``mnist/p1h.yaml``); a YAML string (jsonargparse accepts one) is kept. Raise
    ``ConfigError`` naming the closest packaged configs otherwise, or the file's problem when it
    is not a YAML mapping."""
    path = Path(value).expanduser()
    if path.is_file():
        check_config_file(path, value)
        return value
    if any(c in value for c in ":{\n"):
        return value
    root = packaged("configs")
    for candidate in (root / value, root / f"{value}.yaml"):
        if candidate.is_file():
            return str(candidate)
    names = config_names()
    close = difflib.get_close_matches(value.removesuffix(".yaml"), names, n=6, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"packaged: {', '.join(names)}"
    raise ConfigError(
        f"--config {value!r}: no such file, and no packaged config of that name ({hint}; "
        f"packaged configs are in {root})"
    )


def check_config_file(path: Path, name: str) -> None:
    """Raise ``ConfigError`` naming ``--config name`` unless ``path`` holds a YAML mapping."""
    import yaml  # only here: the lookup above needs the standard library only

    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"--config {name}: not valid YAML{where}: {problem or err}") from None
    if not isinstance(content, dict):
        held = "nothing" if content is None else f"a {type(content).__name__}"
        raise ConfigError(
            f"--config {name}: a config is a YAML mapping of options (such as `model.T: 40`); "
            f"this file holds {held}"
        )


def resolve_config_args(args: list[str]) -> list[str]:
    """``args`` with the value of every ``--config``/``-c`` resolved by :func:`resolve_config`."""
    out: list[str] = []
    expect_value = False
    for arg in args:
        if expect_value:
            out.append(resolve_config(arg))
            expect_value = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect_value = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_config(arg.removeprefix("--config=")))
        else:
            out.append(arg)
    return out
