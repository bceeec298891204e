"""Where every data module looks for its files, and where it may write: the data root (the
``data_dir`` argument, else ``$EQPROP_DATA_DIR``, else ``./data``) and the user's cache."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

ENV_VAR = "EQPROP_DATA_DIR"
DEFAULT_DATA_DIR = "./data"


def resolve_data_dir(data_dir: str | None = None) -> tuple[Path, str]:
    """The data root and where it came from (``data_dir argument``, the environment variable,
    ``default``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir argument"
    env_value = os.environ.get(ENV_VAR)
    if env_value:
        return Path(env_value).expanduser(), f"{ENV_VAR} environment variable"
    return Path(DEFAULT_DATA_DIR), "default"


def data_not_found(
    what: str,
    root: Path,
    origin: str,
    looked: str,
    holding: str,
    also: str = "",
    hint: str = "",
    download: str = "",
) -> FileNotFoundError:
    """The error for data missing under a data root: ``what`` is missing, the root (where it
    came from, resolved), the paths ``looked`` for, and how to point at a directory ``holding``
    the files (``also``: another way out; ``hint``: a sentence after it; ``download``: where
    the files can be downloaded)."""
    where = f" Download: {download}" if download else ""
    return FileNotFoundError(
        f"{what}. Data root {str(root)!r} (from the {origin}, resolved to {root.resolve()}); "
        f"{looked}\nPoint at a directory containing {holding} with --data.data_dir /path/to/root "
        f"or the {ENV_VAR} environment variable{also}.{hint}{where}"
    )


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/eqprop_lightning`` (default ``~/.cache/eqprop_lightning``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eqprop_lightning"


def is_writable(directory: Path) -> bool:
    """Whether ``directory`` may receive files: its permission bits let someone write there
    (root ignores them, but a folder made read-only for all is meant to stay as it is), and a
    file can be created in it (probed: a read-only mount)."""
    try:
        if not directory.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False
