"""The error raised for invalid configuration values."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and what is
    allowed. The ``eqprop`` command prints it without a traceback."""
