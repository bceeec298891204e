"""Where runs go, without Lightning: ``<default_root_dir>/<logger name>/version_<n>/`` (the
logger's ``save_dir`` is ``trainer.default_root_dir`` unless set explicitly), and the numbered
directories of the analyses beside the versions."""

from __future__ import annotations

from pathlib import Path

#: The logger's ``save_dir`` until it is set: replaced by ``trainer.default_root_dir``.
ROOT_DIR = "<default_root_dir>"
TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "logger": {"class_path": TENSORBOARD, "init_args": {"save_dir": ROOT_DIR, "name": "eqprop"}},
    "log_every_n_steps": 50,
}


def _tensorboard_args(trainer: dict) -> dict | None:
    """The ``init_args`` (over the defaults, ``save_dir`` resolved) of the TensorBoard logger
    that the ``trainer`` values configure; ``None`` for another logger or none."""
    logger = trainer.get("logger", TRAINER_DEFAULTS["logger"])
    if not isinstance(logger, dict) or logger.get("class_path", TENSORBOARD) != TENSORBOARD:
        return None
    init = {**TRAINER_DEFAULTS["logger"]["init_args"], **logger.get("init_args", {})}
    if init["save_dir"] == ROOT_DIR:
        init["save_dir"] = trainer.get("default_root_dir", TRAINER_DEFAULTS["default_root_dir"])
    return init


def run_root(trainer: dict) -> Path | None:
    """``<save_dir>/<name>`` of the TensorBoard logger that the ``trainer`` values (plain dicts,
    over :data:`TRAINER_DEFAULTS`) configure; ``None`` for another logger or none."""
    init = _tensorboard_args(trainer)
    return None if init is None else Path(init["save_dir"]) / init["name"]


def fixed_run_dir(trainer: dict) -> Path | None:
    """``<save_dir>/<name>/<version>`` where the TensorBoard logger (the first of a list, whose
    directory Lightning uses) is given a ``version`` (``n`` is ``version_<n>``); ``None`` where
    each run gets a new ``version_<n>``, or for another logger."""
    logger = trainer.get("logger", TRAINER_DEFAULTS["logger"])
    if isinstance(logger, list) and logger:
        trainer = {**trainer, "logger": logger[0]}
    init = _tensorboard_args(trainer)
    version = None if init is None else init.get("version")
    if version is None:
        return None
    folder = version if isinstance(version, str) else f"version_{version}"
    return Path(init["save_dir"]) / init["name"] / folder


def next_dir(parent: Path, prefix: str) -> Path:
    """``parent/<prefix>_<n>`` for the first ``n`` not taken."""
    n = 0
    while (parent / f"{prefix}_{n}").exists():
        n += 1
    return parent / f"{prefix}_{n}"
