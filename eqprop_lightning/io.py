"""Files written by the core and the callbacks alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eqprop_lightning.errors import ConfigError


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename; a non-finite number
    raises ``ValueError`` (standard JSON has no NaN or Infinity)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


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
