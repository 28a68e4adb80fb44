"""What an atomic file must satisfy: the field types, :class:`FileRules` (what a file must hold
beyond being well formed), :class:`FileReport` (what a checked file holds), the header parser and
the per-value checks of ``float`` and ``float_seq`` fields."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from recbole_mtl.data.validate.messages import _clip, _short, _where
from recbole_mtl.errors import DataValidationError

#: The field types of RecBole's atomic files.
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class FileReport:
    """What one checked file holds: its header and the ids it mentions."""

    path: Path
    header: dict  # field -> type, in file order
    rows: int = 0
    ids: dict = field(default_factory=dict)  # id field -> set of values
    fast: bool = False  # accepted by the fast path (:func:`_fast_check`)


@dataclass
class FileRules:
    """What a file must satisfy beyond being well formed.

    Attributes:
        required_fields: fields the header must have (``{field: why}``, ``why`` ends the message).
        required_values: float fields whose values may not be empty (rating, timestamp, labels).
        nonempty_tokens: token fields whose values may not be empty (the ids).
        collect_ids: token fields whose values are collected (for the cross-file checks).
        load_col: the columns RecBole will load (``None``: all); values of others are not parsed.
        need_rows: an empty body is an error (the interaction file).
        unique_ids: a token field whose values must not repeat (the id of ``.item``/``.user``).
    """

    required_fields: dict = field(default_factory=dict)
    required_values: set = field(default_factory=set)
    nonempty_tokens: set = field(default_factory=set)
    collect_ids: set = field(default_factory=set)
    load_col: Optional[set] = None
    need_rows: bool = False
    unique_ids: Optional[str] = None


def parse_header(path: Path, line: str, sep: str) -> dict:
    """Parse ``name:type`` header fields; raises on a missing/unknown type or a duplicate."""
    if line.startswith("\ufeff"):
        raise DataValidationError(
            f"{_where(path, 1)}: the file starts with a byte-order mark (BOM), so the first field "
            "name would not match. Fix: save the file as UTF-8 without BOM."
        )
    if line.endswith("\r"):
        raise DataValidationError(
            f"{_where(path, 1)}: the file has Windows line endings (CRLF); RecBole would read the "
            f"last field's type with a trailing carriage return. Fix: convert it, e.g. sed -i 's/\\r$//' {path}"
        )
    if not line.strip():
        raise DataValidationError(
            f"{_where(path, 1)}: the header line is empty. The first line must name every column as "
            f"name:type, separated by {sep!r}, e.g. user_id:token{sep}item_id:token{sep}rating:float."
        )
    header: dict = {}
    for column, raw in enumerate(line.split(sep), start=1):
        if raw.count(":") != 1:
            raise DataValidationError(
                f"{_where(path, 1)}: header column {column} {_short(raw)} is not of the form name:type "
                f"(type one of {', '.join(FIELD_TYPES)}). Fix the header, e.g. "
                f"{_clip(raw.split(':')[0] or 'field', 40)}:token."
                + (f" The file may not be separated by {sep!r}; set field_separator to its separator."
                   if column == 1 and sep not in line else "")
            )
        name, ftype = raw.split(":")
        if not name:
            raise DataValidationError(
                f"{_where(path, 1)}: header column {column} {_short(raw)} has an empty field name. "
                "Give the column a name, e.g. rating:float."
            )
        if ftype not in FIELD_TYPES:
            raise DataValidationError(
                f"{_where(path, 1, name)}: unknown type {_short(ftype)}; RecBole knows "
                f"{', '.join(FIELD_TYPES)}. Fix the header to e.g. {_clip(name, 40)}:token (ids, categories) "
                f"or {_clip(name, 40)}:float (numbers)."
            )
        if name in header:
            raise DataValidationError(
                f"{_where(path, 1, name)}: the field appears twice in the header (columns "
                f"{list(header).index(name) + 1} and {column}). Rename or drop one of them."
            )
        header[name] = ftype
    return header


def _check_float(path: Path, line: int, name: str, value: str, required: bool) -> None:
    text = value.strip()
    if not text:
        if required:
            raise DataValidationError(
                f"{_where(path, line, name)}: the value is empty, but every row needs a number here. "
                "Fill it in or drop the row."
            )
        return
    try:
        number = float(text)
    except ValueError:
        raise DataValidationError(
            f"{_where(path, line, name)}: expected a number (the header says {name}:float), got "
            f"{_short(value)}. Write a decimal number such as 4 or 4.5"
            + ("" if required else ", or leave it empty when unknown") + "."
        ) from None
    if not math.isfinite(number):
        raise DataValidationError(
            f"{_where(path, line, name)}: {_short(value)} is not a finite number; NaN and inf "
            "cannot be learned from. Replace it with a real value"
            + (" or drop the row." if required else ", leave it empty, or drop the row.")
        )


def _check_float_seq(path: Path, line: int, name: str, value: str, seq_sep: str) -> None:
    for position, part in enumerate(filter(None, value.split(seq_sep)), start=1):
        try:
            number = float(part)
        except ValueError:
            raise DataValidationError(
                f"{_where(path, line, name)}: element {position} {_short(part)} of this float_seq is "
                f"not a number. Write numbers separated by {seq_sep!r}."
            ) from None
        if not math.isfinite(number):
            raise DataValidationError(
                f"{_where(path, line, name)}: element {position} is {_short(part)}, not a finite "
                "number. Regenerate or fix the vector."
            )
