"""The errors the ``eqprop`` command reports in one line, without a traceback."""

#: added by ``LastCheckpoint`` to the exception of a ``fit`` stopped before any ``last.ckpt`` was
#: written, so that the command's one line says to run it again rather than to resume
NO_CHECKPOINT_NOTE = "no checkpoint was written before the stop"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and what is
    allowed."""


class DataError(ValueError):
    """A data file is missing, truncated, corrupt or malformed; the message names the file
    (and the line, for text files) and what was expected."""


def check_flag(name: str, value: object) -> None:
    """``value`` is ``True`` or ``False``, else ``ConfigError`` (a string such as ``"false"``
    would be truthy)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} must be true or false")
