"""Every error of the plugin, under one base class.

The command line prints a :class:`RecboleMTLError` on one line (no traceback; ``--debug`` shows
it) and exits with :attr:`RecboleMTLError.exit_code`. Each class also derives from the built-in
error it used to be, so ``except ValueError`` and friends keep working.
"""

import difflib
from typing import Iterable


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """' Did you mean: A, B?' for the closest candidates (case-insensitive), or ''."""
    candidates = sorted(set(candidates))
    lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(lower[c] for c in close)}?" if close else ""


class RecboleMTLError(Exception):
    """Base of every error that is the user's to fix (or that stopped a run on purpose)."""

    #: Exit status of the command line: 2 for a mistake in the input (as argparse).
    exit_code = 2


class ConfigError(RecboleMTLError, ValueError):
    """A config value has the wrong type or an unsupported value, or a name does not exist."""


class UnknownNameError(RecboleMTLError, ValueError):
    """A model or dataset name that does not exist; the message suggests close matches."""


class DataValidationError(ConfigError):
    """An atomic file is malformed, or lacks a field the config names: file, line, field and fix."""


class ConvertError(RecboleMTLError, ValueError):
    """A raw dump given to ``convert`` is malformed or the flags do not fit it: file, line, field."""


class TextFeatureError(RecboleMTLError, ValueError):
    """A text feature file or its inputs are missing or do not match; says how to regenerate."""


class CheckpointError(RecboleMTLError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or unsafe to load."""


class MissingFileError(RecboleMTLError, FileNotFoundError):
    """A file the plugin ships or the user named is not there."""


class NonFiniteLossError(RecboleMTLError, RuntimeError):
    """A task's training loss became NaN or inf; training stopped before the update."""

    exit_code = 1  # a run that failed, not a mistake in the input


class RunFailedError(RecboleMTLError, RuntimeError):
    """A run started in its own process failed; the message names its log."""


class InferenceInputError(RecboleMTLError, ValueError):
    """An input file of ``recommend``/``score``/``categorize`` is malformed or names unknown ids: file,
    line, field or token, and how to fix it."""


class OutputPathError(RecboleMTLError, OSError):
    """An output file cannot be written where the user asked (checked before any work)."""


class UnsureCheck(RecboleMTLError):
    """Internal to the atomic-file check: its fast path saw something it does not decide, and the
    line-by-line check decides instead (never reaches a user)."""


class TimeBudgetSpent(RecboleMTLError):
    """Internal to the benchmark's worker: raised from the validation callback once ``--time_budget``
    is spent, after the trainer saved its best checkpoint; the worker tests that one (never reaches a
    user)."""
