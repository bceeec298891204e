"""Files written by the core and the callbacks alike."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eqprop_lightning.errors import ConfigError


def temp_file_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new temporary file in ``path``'s folder, for an atomic
    ``os.replace`` onto ``path``, with the permissions a plain ``open`` would give it
    (``0o666`` less the umask; ``mkstemp``'s ``0o600`` would keep a shared data or cache folder's
    files from its other users)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, name


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Write ``path`` as ``write(name)`` writes a temporary file beside it, then rename it onto
    ``path`` atomically: an interruption or an error leaves the previous file (or none), never
    a truncated one, and no temporary file."""
    fd, name = temp_file_beside(path)
    os.close(fd)
    try:
        write(name)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_atomic` of a text file."""
    write_atomic(path, lambda name: Path(name).write_text(text))


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """:func:`write_atomic` of JSON; a non-finite number raises ``ValueError`` (standard JSON
    has no NaN or Infinity) before anything is written."""
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def check_file_to_write(path: Path, given: str, example: str) -> None:
    """``ConfigError`` unless ``path`` can be written as a file: not a directory, nor under a
    regular file (checked before the work whose result it holds); ``given`` names the option in
    the message, ``example`` a file name to suggest in a directory."""
    if path.is_dir():
        raise ConfigError(
            f"{given} is a directory: give the file to write, such as {path / example}"
        )
    folder = next((p for p in path.absolute().parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"{given}: {folder} is a file, not a directory; give a file to write")
