"""Where each task's labels come from in the atomic files: one ``LabelSource`` per task that reads one.

A task module declares its source (:func:`register_label_source`); the data layer never names a
task. The dataset derives each registered ``.inter`` label column from the field's *raw* values
(before RecBole normalises float fields), and the validator checks the configured field exists.

Example::

    register_label_source(LabelSource(task="interest", config_key="interest_label_field", file="inter",
                                      column="interest_label", derive=lambda v, c: (v >= 4.0)))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

Derive = Callable[[np.ndarray, object], np.ndarray]


@dataclass(frozen=True)
class LabelSource:
    """A task's label field.

    Attributes:
        task: the task that reads it.
        config_key: the config key naming the source field (e.g. ``interest_label_field``).
        file: ``inter`` (a float field of each interaction) or ``item`` (a token/token_seq field).
        column: the derived float column added to the interactions (``inter`` sources), or None.
        derive: raw float values ``[N]`` and the config -> label values ``[N]`` (``inter`` sources).
        meaning: what the field is, for error messages (e.g. "the interest label").
    """

    task: str
    config_key: str
    file: str
    column: Optional[str] = None
    derive: Optional[Derive] = None
    meaning: str = "a task label"


_SOURCES: dict[str, LabelSource] = {}


def register_label_source(source: LabelSource) -> LabelSource:
    """Add ``source`` (one per task); returns it, so a task module can keep it as a constant."""
    if source.file not in ("inter", "item"):
        raise ValueError(f"LabelSource.file must be 'inter' or 'item', got {source.file!r}")
    _SOURCES[source.task] = source
    return source


def label_sources(tasks=None) -> list[LabelSource]:
    """The registered sources, of ``tasks`` only when given."""
    return [s for s in _SOURCES.values() if tasks is None or s.task in tasks]


def label_source(task: str) -> Optional[LabelSource]:
    return _SOURCES.get(task)
