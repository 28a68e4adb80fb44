"""Errors that are the user's to fix: the command line prints them on one line (no traceback)."""


class ConfigError(ValueError):
    """A config value has the wrong type or an unsupported value, or a name does not exist."""
