"""Errors that are the user's to fix: the command line prints them on one line (no traceback)."""


class ConfigError(ValueError):
    """A config value has the wrong type or an unsupported value, or a name does not exist."""


class NonFiniteLossError(RuntimeError):
    """A task's training loss became NaN or inf; training stopped before the update."""
