"""What the input formats share: the output field names, value cleaning, error messages that
name the file, line and field, the line readers, and :class:`Source`, what a format reads.

A format is one module with ``NAME`` (its ``--format``) and ``read(paths, progress, options) ->
Source``, registered in :data:`recbole_mtl.data.convert.READERS`.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from recbole_mtl.errors import ConvertError

#: Characters of a bad value an error message quotes.
QUOTE_LIMIT = 200
#: Longest text value written (descriptions); the PLM reads far less than this.
MAX_TEXT_CHARS = 2000
#: The output field names (the interaction file's are fixed; an item/user file names its own).
USER, ITEM, RATING, TIME, CATEGORY = "user_id", "item_id", "rating", "timestamp", "class"

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]+")
_SPACES = re.compile(r"\s+")
_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


# -- messages and values ----------------------------------------------------------------------------
def quote(value) -> str:
    """``repr`` of at most the first :data:`QUOTE_LIMIT` characters of ``value``."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return repr(text[:QUOTE_LIMIT] + "..." if len(text) > QUOTE_LIMIT else text)


def _where(path, line: Optional[int] = None, name: Optional[str] = None) -> str:
    out = str(path)
    if line is not None:
        out += f", line {line}"
    if name is not None:
        out += f", field {quote(name)}"
    return out


def clean_text(value, limit: Optional[int] = None) -> str:
    """One line of text that is safe in an atomic file (no tab, newline, control character or ``"``)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = html.unescape(str(value)) if "&" in str(value) else str(value)
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).replace('"', "'").strip()
    if limit and len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    return text


def clean_token(value) -> str:
    """One token of a ``token_seq`` (a category): cleaned text whose spaces become ``_``."""
    return clean_text(value).replace(" ", "_")


def _flatten(value) -> Iterator:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)
    elif value is not None:
        yield value


def clean_categories(values: Iterable) -> str:
    """Categories (a list, possibly of lists) -> a ``token_seq`` value, in order, without repeats."""
    seen: dict = {}
    if not isinstance(values, (list, tuple, str)):
        values = list(values)
    for v in _flatten(values):
        token = clean_token(v)
        if token:
            seen.setdefault(token, None)
    return " ".join(seen)


def parse_price(value) -> str:
    """``"$1,299.99"``, ``12.5``, ``"$10.00 - $20.00"`` (the lower bound) -> a float string; '' if none."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, (int, float)):
        return repr(float(value)) if math.isfinite(value) else ""
    match = _NUMBER.search(str(value).replace(",", ""))
    return repr(float(match.group())) if match else ""


def split_title_year(title: str) -> tuple[str, str]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", "1995")``."""
    match = _YEAR.match(title)
    return (match.group(1), match.group(2)) if match else (title, "")


def _number(value, path, line: int, name: str) -> str:
    """A required numeric value as written (checked to be a finite number)."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise ConvertError(f"{_where(path, line, name)}: the value is empty; every row needs a number here. "
                           "Fill it in or drop the line.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConvertError(f"{_where(path, line, name)}: expected a number, got {quote(value)}. "
                           "Fix the value or drop the line.") from None
    if not math.isfinite(number):
        raise ConvertError(f"{_where(path, line, name)}: {quote(value)} is not a finite number. "
                           "Fix the value or drop the line.")
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)


def _id(value, path, line: int, name: str) -> str:
    token = clean_text(value) if not isinstance(value, (dict, list)) else ""
    if not token:
        raise ConvertError(f"{_where(path, line, name)}: the id is empty ({quote(value) if value else 'no value'}). "
                           "Every line needs one; fill it in or drop the line.")
    return token


# -- reading ------------------------------------------------------------------------------------------
class Progress:
    """Prints ``<file>: N lines read`` to stderr every ``every`` seconds (never when ``every`` is None)."""

    def __init__(self, every: Optional[float] = 5.0, stream=None):
        self.every = every
        self.stream = stream or sys.stderr
        self._last = time.monotonic()

    def tick(self, path, line: int) -> None:
        if self.every is None or line % 4096:
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            print(f"  {path}: {line:,} lines read", file=self.stream, flush=True)

    def say(self, message: str) -> None:
        if self.every is not None:
            print(message, file=self.stream, flush=True)


def _open_binary(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_lines(path: Path, progress: Progress, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line (UTF-8, else Latin-1 for that line: old MovieLens files)."""
    try:
        source = _open_binary(path)
    except OSError as e:
        raise ConvertError(f"{path}: cannot read the file ({e.strerror or e}).") from None
    with source:
        for number, data in enumerate(source, start=1):
            progress.tick(path, number)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text if keep_ends else text.rstrip("\r\n")


def split_line(path, line: int, text: str, sep: str, width: int, what: str) -> list[str]:
    """``text`` split on ``sep`` into exactly ``width`` columns, else an error naming the line."""
    cols = text.split(sep)
    if len(cols) != width:
        raise ConvertError(f"{_where(path, line)}: {len(cols)} column(s) separated by {sep!r}, expected {width} "
                           f"({what}). The line starts {quote(text)}; fix or drop it.")
    return cols


def read_json_lines(path: Path, progress: Progress) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of a JSON-lines file; Python-literal lines (Amazon 2014's "loose
    JSON") are read with ``ast.literal_eval``, never evaluated."""
    for number, text in read_lines(path, progress):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as e:
            try:
                obj = ast.literal_eval(text) if text.lstrip().startswith("{") else None
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                obj = None
            if obj is None:
                raise ConvertError(f"{_where(path, number)}: not valid JSON ({e.msg} at column {e.colno}): "
                                   f"{quote(text)}. Each line must be one JSON object.") from None
        if not isinstance(obj, dict):
            raise ConvertError(f"{_where(path, number)}: expected a JSON object ({{...}}), got {quote(text)}.")
        yield number, obj


def _pick(obj: dict, names: Sequence[str]):
    for name in names:
        if name in obj and obj[name] is not None:
            return name, obj[name]
    return None, None


def _required(obj: dict, names: Sequence[str], path, line: int):
    name, value = _pick(obj, names)
    if name is None:
        alternatives = " or ".join(repr(n) for n in names)
        raise ConvertError(f"{_where(path, line, names[0])}: the required field {alternatives} is missing. "
                           f"Every line needs it; the line starts {quote(json.dumps(obj, ensure_ascii=False))}.")
    return name, value


def _csv_rows(path: Path, sep: str, progress: Progress, header: bool = True) -> Iterator[tuple[int, list, list]]:
    """``(line number, header, row)`` of a CSV file (quoted fields; a field may span lines)."""
    lines = read_lines(path, progress, keep_ends=True)
    numbered = ((n, text) for n, text in lines)
    current = [0]

    def texts():
        for n, text in numbered:
            current[0] = n
            yield text

    reader = csv.reader(texts(), delimiter=sep, quotechar='"', strict=False)
    names: list = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header and not names:
                names = [c.strip() for c in row]
                continue
            if names and len(row) != len(names):
                raise ConvertError(
                    f"{_where(path, current[0])}: {len(row)} column(s), the header has {len(names)} "
                    f"({quote(', '.join(names))}). Fix the line (a value holding {sep!r} must be quoted) or drop it.")
            yield current[0], names, row
    except csv.Error as e:
        raise ConvertError(f"{_where(path, current[0])}: the line cannot be split into fields ({e}).") from None


def _column(names: list, wanted: str, path, hint: str) -> int:
    if wanted in names:
        return names.index(wanted)
    raise ConvertError(f"{_where(path, 1, wanted)}: the header has no column {quote(wanted)} ({hint}); "
                       f"its columns: {quote(', '.join(names))}.")


def _token(value: str, path, line: int, name: str) -> str:
    """A whitespace-free token as an id: as it is when already clean, else through :func:`_id`."""
    return value if value.isprintable() and '"' not in value and "&" not in value else _id(value, path, line, name)


def _single_file(paths: Sequence[Path], fmt: str, layout: str) -> Path:
    if len(paths) != 1 or paths[0].is_dir():
        given = ", ".join(str(p) for p in paths)
        raise ConvertError(f"--format {fmt} takes one file ({layout}), got {quote(given)}. Give the one file to --input.")
    return paths[0]


def _empty_user(path, line: int, text: str, layout: str) -> ConvertError:
    return ConvertError(f"{_where(path, line, 'user')}: the line starts with whitespace, so the user id (its first "
                        f"field) is empty; each line is {layout}. The line starts {quote(text)}; put the user id "
                        "first or drop the line.")


# -- sources ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """What a format reads: interactions, and optionally item and user rows.

    ``interactions()`` yields ``(user, item, rating or None, time)``; ``items()``/``users()`` yield
    ``(id, [values in the order of item_fields/user_fields])``, with the file and line for errors.
    """

    description: str
    interactions: Callable[[], Iterator[tuple]]
    has_rating: bool = True
    item_fields: list = field(default_factory=list)  # [(name, type)] after the id
    items: Optional[Callable[[], Iterator[tuple]]] = None
    user_fields: list = field(default_factory=list)
    users: Optional[Callable[[], Iterator[tuple]]] = None
    text_fields: list = field(default_factory=list)
    category_field: Optional[str] = None
    item_load: list = field(default_factory=list)  # item fields the model loads (not long texts)
    notes: list = field(default_factory=list)
    #: The evaluation protocol the YAML carries: None (RecBole's and the plugin's defaults) or
    #: ``"leave-one-out"`` (:data:`LEAVE_ONE_OUT_YAML`, the sequential-recommendation papers').
    protocol: Optional[str] = None
    #: What ``timestamp`` holds, for the YAML's comment (the ordered formats have no real time).
    time_meaning: Optional[str] = None


@dataclass(frozen=True)
class Options:
    """The command's options a format may read (``--format csv``: the separators, the column
    mappings as given, whether the files have a header)."""

    sep: str = ","
    columns: Optional[str] = None
    item_columns: Optional[str] = None
    item_sep: Optional[str] = None
    category_sep: str = "|"
    header: bool = True
