"""Check a dataset's atomic files before RecBole loads them.

RecBole reads ``.inter``/``.user``/``.item`` with ``pandas.read_csv`` and, given a malformed file,
either fails deep inside with a cryptic traceback ("not enough values to unpack", "Length
mismatch") or silently accepts it (an extra column on one line, a rating of "four", a NaN
timestamp). :func:`validate_dataset` streams every file the run will load once, line by line, and
stops at the first problem with a :class:`DataValidationError` that names the file, the line, the
field, what was expected and how to fix it. Problems that do not stop a run (ids in a feature file
that no interaction uses) come back as warnings.

Rows are split exactly as RecBole's reader splits them (``field_separator``, double-quoted fields
as in ``csv``), so a file the validator accepts is one RecBole reads as intended.

Each file first goes through a fast path (:func:`_fast_check`): chunks of about 8 MB, the row
shapes checked with numpy on the raw bytes, the needed columns (loaded fields that have a rule, the
ids) read by pandas' C parser and checked column-wise: numbers and plain integer ids (their bytes
checked first) come as numpy arrays, other values as str checked as the line-by-line check does;
an id on two rows is found across chunks from the id set's size (or, when the ids are not
collected, their hashes). The fast path may only accept a file. On anything it is not sure of (a
candidate problem, a double quote, a NUL byte, a carriage return, bytes that are not UTF-8, a
``float_seq`` column to check, another encoding or a separator that is not one ASCII character)
the whole file goes through the line-by-line check (:func:`_check_rows`), the one authority for
error messages, so messages and verdicts do not depend on the path. ``FAST_PATH = False`` (or
``check_file(fast=False)``) checks line by line only.
"""

from __future__ import annotations

import codecs
import csv
import heapq
import io
import math
import os
import tempfile
from dataclasses import dataclass, field
from logging import getLogger
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from recbole_mtl.data.build import build_dataset, empty_dataset_error  # noqa: F401  (re-exported)
from recbole_mtl.data.checked import record_unique_ids
from recbole_mtl.data.labels import label_sources
from recbole_mtl.errors import DataValidationError, UnsureCheck

#: The field types of RecBole's atomic files.
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
#: How many example ids a warning shows.
_EXAMPLES = 3


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


#: The most characters of a value (a field name, a header, an id) an error message quotes.
QUOTE_LIMIT = 200


def _clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text``, cut to its first ``limit`` characters (marked with ...)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _where(path: Path, line: Optional[int] = None, name: Optional[str] = None) -> str:
    out = str(path)
    if line is not None:
        out += f", line {line}"
    if name is not None:
        out += f", field '{_clip(name)}'"
    return out


def _short(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _fields(names) -> str:
    """A header's field names for a message, at most :data:`QUOTE_LIMIT` characters."""
    return _clip(", ".join(names))


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


def _not_text(path: Path, line: int) -> DataValidationError:
    return DataValidationError(
        f"{_where(path, line)}: the file holds NUL bytes, so it is not a text file. Atomic files are "
        "plain text (tab-separated by default); check that the right file is in place (not a "
        "compressed or binary file)."
    )


def _decode_error(path: Path, encoding: str) -> DataValidationError:
    """Find the line and byte that are not ``encoding`` (a second pass, only on failure)."""
    with open(path, "rb") as raw:
        for number, data in enumerate(raw, start=1):
            if b"\x00" in data:
                return _not_text(path, number)
            try:
                data.decode(encoding)
            except UnicodeDecodeError as e:
                return DataValidationError(
                    f"{_where(path, number)}: byte {e.start + 1} of the line is not valid {encoding} "
                    f"({data[e.start:e.start + 1]!r}), so the file is not {encoding} text. Convert it "
                    f"(e.g. iconv -f latin1 -t utf-8) or set `encoding` to the file's encoding."
                )
    return DataValidationError(f"{path}: the file is not valid {encoding} text. Convert it or set `encoding`.")


def _open_text(path: Path, encoding: str):
    try:
        return io.TextIOWrapper(open(path, "rb"), encoding=encoding, newline="")
    except LookupError:
        raise DataValidationError(
            f"config key `encoding` is {encoding!r}, which Python does not know. Set it to e.g. utf-8."
        ) from None


def _check_rows(path: Path, text, rules: FileRules, sep: str, seq_sep: str) -> FileReport:
    first = text.readline()
    if "\x00" in first:
        raise _not_text(path, 1)
    header = parse_header(path, first[:-1] if first.endswith("\n") else first, sep)
    for name, why in rules.required_fields.items():
        if name not in header:
            raise DataValidationError(
                f"{_where(path, 1, name)}: the header has no field '{_clip(name)}', which {why} "
                f"Header fields: {_fields(header)}."
            )
    names = list(header)
    loaded = [rules.load_col is None or n in rules.load_col for n in names]
    report = FileReport(path=path, header=header, ids={n: set() for n in rules.collect_ids if n in header})
    # column index lists, so the loop over rows does no per-field lookups
    floats = [(i, n, n in rules.required_values) for i, n in enumerate(names) if loaded[i] and header[n] == "float"]
    seqs = [(i, n) for i, n in enumerate(names) if loaded[i] and header[n] == "float_seq"]
    tokens = [(i, n) for i, n in enumerate(names) if loaded[i] and n in rules.nonempty_tokens]
    ids = [(i, report.ids[n]) for i, n in enumerate(names) if loaded[i] and n in report.ids]
    unique = names.index(rules.unique_ids) if rules.unique_ids in header else None
    first_line: dict = {}  # id -> the line it first appears on (unique_ids only)
    width = len(names)
    reader = csv.reader(text, delimiter=sep, quotechar='"', strict=False)
    rows = 0
    try:
        for row in reader:
            if len(row) != width:
                if not row:
                    continue  # blank line: pandas skips it too
                raise DataValidationError(
                    f"{_where(path, reader.line_num + 1)}: the row has {len(row)} column(s), the header has "
                    f"{width} ({_fields(names)}). Fix the row: every row needs one value per header "
                    f"field, separated by {sep!r} (an empty value is allowed where the field is optional)."
                )
            for i, name, required in floats:
                value = row[i]
                try:
                    number = float(value)
                except ValueError:
                    _check_float(path, reader.line_num + 1, name, value, required)  # raises unless allowed
                    continue
                if number - number != 0:  # NaN or inf
                    _check_float(path, reader.line_num + 1, name, value, required)
            for i, name in seqs:
                _check_float_seq(path, reader.line_num + 1, name, row[i], seq_sep)
            for i, name in tokens:
                if not row[i] or row[i].isspace():
                    raise DataValidationError(
                        f"{_where(path, reader.line_num + 1, name)}: the id is empty. Every row needs a "
                        f"{name}; fill it in or drop the row."
                    )
            for i, seen in ids:
                seen.add(row[i])
            if unique is not None:
                line = reader.line_num + 1
                first = first_line.setdefault(row[unique], line)
                if first != line:
                    raise DataValidationError(
                        f"{_where(path, line, rules.unique_ids)}: the id {_short(row[unique], QUOTE_LIMIT)} is "
                        f"already on line {first}; each id may have one row (RecBole would silently keep "
                        f"one of them). Merge the two rows (lines {first} and {line}) or drop one."
                    )
            rows += 1
    except csv.Error as e:
        if "NUL" in str(e):
            raise _not_text(path, reader.line_num + 1) from None
        raise DataValidationError(
            f"{_where(path, reader.line_num + 1)}: the row cannot be split into fields ({e}). Check "
            "for an unbalanced double quote or an overlong value."
        ) from None
    report.rows = rows
    return report


# -- the fast path: whole chunks at a time; it may only accept a file -------------------------------
#: Take the fast path (:func:`_fast_check`) before the line-by-line check; ``check_file(fast=...)``
#: overrides it per call.
FAST_PATH = True
#: Bytes of the file the fast path reads at a time (cut at a line end).
FAST_CHUNK_BYTES = 8 << 20
_BOM = "\ufeff".encode("utf-8")


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _chunks(raw, size: int):
    """The rest of ``raw`` in pieces of about ``size`` bytes, each ending at a line end (the last
    one may lack it)."""
    carry = b""
    while True:
        block = raw.read(size)
        if not block:
            if carry:
                yield carry
            return
        data = carry + block if carry else block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1:]
        yield data[:cut + 1] if carry else data


def _line_ends(chunk: bytes, arr: np.ndarray, sep_byte: int, width: int) -> tuple:
    """``(starts, ends, groups)`` of ``chunk``'s lines (``groups``: each line's separator positions,
    one row per line); raises :class:`UnsureCheck` unless every line has exactly ``width`` fields, is
    not blank and is shorter than ``csv``'s field size limit."""
    ends = np.flatnonzero(arr == 10)
    if chunk[-1:] != b"\n":
        ends = np.append(ends, len(chunk))
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    if lengths.min() == 0 or lengths.max() > csv.field_size_limit():
        raise UnsureCheck("a blank or overlong line")
    seps = np.flatnonzero(arr == sep_byte)
    if len(seps) != len(ends) * (width - 1):
        raise UnsureCheck("a row with another column count")
    # the separators in order, width - 1 per line: each line's group lies inside it exactly when
    # every line has width - 1 of them (the total is right)
    groups = seps.reshape(len(ends), width - 1)
    if width > 1 and ((groups[:, 0] < starts).any() or (groups[:, -1] > ends).any()):
        raise UnsureCheck("a row with another column count")
    return starts, ends, groups


#: Bytes that may not be in a number pandas parses (``float()``'s grammar allows only the others
#: once spaces, underscores and words are out).
_NOT_NUMBER = np.ones(256, dtype=bool)
_NOT_NUMBER[list(b"0123456789.eE+-")] = False
#: Bytes that may not be in a plain decimal integer.
_NOT_DIGIT = np.ones(256, dtype=bool)
_NOT_DIGIT[list(b"0123456789")] = False


def _only(starts: np.ndarray, ends: np.ndarray, excluded: np.ndarray) -> bool:
    """Whether no byte of the fields ``[starts, ends)`` is marked in ``excluded`` (one flag per byte)."""
    marks = np.zeros(len(excluded) + 1, dtype=np.int8)
    marks[starts] += 1
    marks[ends] -= 1
    inside = np.cumsum(marks[:-1], dtype=np.int8).view(bool)
    return not (inside & excluded).any()


def _fast_check(path: Path, rules: FileRules, sep: str, seq_sep: str, encoding: str) -> FileReport:
    """What :func:`_check_rows` reports for ``path``, from vectorised checks over chunks of the file
    read by pandas' C parser; raises :class:`UnsureCheck` (or anything else) where it cannot be sure the
    file passes, and the caller then runs :func:`_check_rows`, the one authority for messages."""
    if not _is_utf8(encoding) or not isinstance(sep, str) or len(sep) != 1 or ord(sep) > 127 \
            or sep in '"\r\n\x00':
        raise UnsureCheck("an encoding or separator only the line-by-line check handles")
    with open(path, "rb") as raw:
        head = raw.readline()
        if any(b in head for b in (b'"', b"\x00", b"\r")):
            raise UnsureCheck("a quote, NUL or carriage return in the header")
        text = head.decode("utf-8")
        header = parse_header(path, text[:-1] if text.endswith("\n") else text, sep)
        if any(name not in header for name in rules.required_fields):
            raise UnsureCheck("a required field is missing")
        names = list(header)
        loaded = [rules.load_col is None or n in rules.load_col for n in names]
        if any(loaded[i] and header[n] == "float_seq" for i, n in enumerate(names)):
            raise UnsureCheck("a float_seq column")
        report = FileReport(path=path, header=header, ids={n: set() for n in rules.collect_ids if n in header})
        floats = [(i, n in rules.required_values) for i, n in enumerate(names) if loaded[i] and header[n] == "float"]
        tokens = [i for i, n in enumerate(names) if loaded[i] and n in rules.nonempty_tokens]
        ids = [(i, report.ids[n]) for i, n in enumerate(names) if loaded[i] and n in report.ids]
        unique = names.index(rules.unique_ids) if rules.unique_ids in header else None
        unique_set = next((seen for i, seen in ids if i == unique), None)
        hashes = []  # per chunk, the hashes of the unique column (when its values are not collected)
        columns = sorted({i for i, _ in floats} | set(tokens) | {i for i, _ in ids}
                         | ({unique} if unique is not None else set()))
        width, sep_byte, rows = len(names), ord(sep), 0
        as_text = set(tokens) | {i for i, _ in ids} | ({unique} if unique is not None else set())
        float_only = {i for i, _ in floats} - as_text
        plain_ids = as_text - {i for i, _ in floats} - ({unique} if unique_set is None else set())
        for chunk in _chunks(raw, FAST_CHUNK_BYTES):
            if b'"' in chunk or b"\x00" in chunk or b"\r" in chunk:
                raise UnsureCheck("a quote, NUL or carriage return")
            if not chunk.isascii():
                if _BOM in chunk:  # pandas drops one at the start of its input
                    raise UnsureCheck("a byte-order mark")
                chunk.decode("utf-8")  # a decode error: the line-by-line check names the line
            arr = np.frombuffer(chunk, dtype=np.uint8)
            starts, ends, groups = _line_ends(chunk, arr, sep_byte, width)
            lines = len(ends)
            rows += lines
            if not columns:
                continue
            # columns whose bytes are all number characters (floats) or plain integers (ids) are
            # parsed by pandas into numpy arrays; the others come as str, checked as _check_rows does
            dtypes, numbers, integers = {}, {}, set()
            not_number = _NOT_NUMBER[arr] if float_only else None
            not_digit = _NOT_DIGIT[arr] if plain_ids else None
            for i in columns:
                lo = starts if i == 0 else groups[:, i - 1] + 1
                hi = ends if i == width - 1 else groups[:, i]
                size = hi - lo
                if i in float_only and _only(lo, hi, not_number):
                    numbers[i], dtypes[i] = size == 0, np.float64
                elif i in plain_ids and size.min() >= 1 and size.max() <= 18 \
                        and not ((arr[lo] == 48) & (size > 1)).any() and _only(lo, hi, not_digit):
                    integers.add(i)  # str(int(value)) == value
                    dtypes[i] = np.int64
                else:
                    dtypes[i] = object
            frame = pd.read_csv(io.BytesIO(chunk), sep=sep, header=None, usecols=columns, dtype=dtypes,
                                keep_default_na=False, na_filter=bool(numbers), na_values={i: [""] for i in numbers},
                                float_precision="round_trip", index_col=False, engine="c", encoding="utf-8",
                                skip_blank_lines=False)
            if len(frame) != lines or list(frame.columns) != columns:
                raise UnsureCheck("pandas split the chunk otherwise")
            values = {i: frame[i].to_numpy(dtype=None if i in numbers or i in integers else object) for i in columns}
            del frame
            for i, required in floats:
                column = values[i]
                if i in numbers:  # Python's own parser (round_trip) on the same characters: float() agrees
                    empty = numbers[i]
                    if not np.array_equal(np.isnan(column), empty) or (required and empty.any()) \
                            or not np.isfinite(column[~empty]).all():
                        raise UnsureCheck("an empty or infinite number")
                    continue
                empty = column == ""
                if empty.any():
                    if required:
                        raise UnsureCheck("an empty required number")
                    column = column[~empty]
                if not np.isfinite(column.astype(np.float64)).all():  # float() on each, as _check_rows
                    raise UnsureCheck("a number that is not finite")
            for i in tokens:
                if i not in integers and ((values[i] == "").any() or any(map(str.isspace, values[i]))):
                    raise UnsureCheck("an empty id")
            for i, seen in ids:
                seen.update(map(str, np.unique(values[i]).tolist()) if i in integers else values[i])
            if unique is not None and unique_set is None:
                hashes.append(np.fromiter(map(hash, values[unique]), dtype=np.int64, count=lines))
            del values
    if unique_set is not None and len(unique_set) != rows:
        raise UnsureCheck("an id on two rows")
    if hashes:
        every = np.concatenate(hashes)
        del hashes
        every.sort()
        if (every[1:] == every[:-1]).any():
            raise UnsureCheck("an id (or its hash) on two rows")
    report.rows = rows
    return report


def check_file(path: Path, rules: FileRules, sep: str = "\t", seq_sep: str = " ",
               encoding: str = "utf-8", fast: Optional[bool] = None) -> FileReport:
    """Check one atomic file against ``rules``.

    The fast path (:func:`_fast_check`) tries first and may only accept the file; anything it is not
    sure of (a candidate problem, quotes, CRLF, a ``float_seq`` column, another encoding) sends the
    whole file through the line-by-line :func:`_check_rows`, which alone words the errors.

    Args:
        fast: try the fast path first (``None``: :data:`FAST_PATH`); ``False`` checks line by line.

    Raises:
        DataValidationError: the first problem found, with file, line and field.
    """
    path = Path(path)
    if os.path.getsize(path) == 0:
        raise DataValidationError(
            f"{path}: the file is empty. An atomic file starts with a header line "
            f"(e.g. user_id:token{sep}item_id:token) followed by one row per line; "
            "write it, or remove the file if the dataset has no such data."
        )
    with open(path, "rb") as raw:
        head = raw.read(65536)
    if b"\x00" in head:  # compressed or binary: say so rather than "not utf-8"
        raise _not_text(path, head[:head.index(b"\x00")].count(b"\n") + 1)
    report = None
    if FAST_PATH if fast is None else fast:
        try:
            report = _fast_check(path, rules, sep, seq_sep, encoding)
            report.fast = True
        except Exception:  # not sure: the line-by-line check decides
            report = None
    if report is None:
        with _open_text(path, encoding) as text:
            try:
                report = _check_rows(path, text, rules, sep, seq_sep)
            except UnicodeDecodeError:
                raise _decode_error(path, encoding) from None
    if rules.need_rows and report.rows == 0:
        raise DataValidationError(
            f"{path}: the file has a header but no rows. Add one interaction per line."
        )
    if rules.unique_ids in report.header:
        record_unique_ids(path, rules.unique_ids)
    return report


# -- the whole dataset ---------------------------------------------------------------------------
def _load_col(config, source: str) -> Optional[set]:
    """The fields RecBole loads from ``source`` (``None``: all; empty: the file is skipped)."""
    load_col = config["load_col"]
    if load_col is None:
        return None
    return set(load_col.get(source) or []) if source in load_col else set()


def _user_set(config, key: str) -> bool:
    return key in (getattr(config, "external_config_dict", None) or {})


def _is_sequential(config) -> bool:
    from recbole.utils import ModelType

    return config["MODEL_TYPE"] == ModelType.SEQUENTIAL


def _plugin_tasks(config) -> list:
    from recbole_mtl.utils import plugin_model_names

    if config["model"] not in plugin_model_names():
        return []
    wanted = config["tasks"] or []
    return [wanted] if isinstance(wanted, str) else list(wanted)


def validate_dataset(config) -> list[str]:
    """Check every atomic file ``config``'s run will load; return warnings, raise on errors.

    Args:
        config: a resolved RecBole/recbole_mtl ``Config``.

    Returns:
        Warning messages (also logged), e.g. ids in ``.item`` that no interaction uses.

    Raises:
        DataValidationError: a malformed file or a configured field that is absent.
    """
    name = config["dataset"]
    folder = Path(config["data_path"])
    sep = config["field_separator"] or "\t"
    seq_sep = config["seq_separator"] or " "
    encoding = config["encoding"] or "utf-8"
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    tasks = _plugin_tasks(config)
    warnings: list[str] = []

    inter_rules = FileRules(
        required_fields={uid: "every interaction needs (config key USER_ID_FIELD).",
                         iid: "every interaction needs (config key ITEM_ID_FIELD)."},
        nonempty_tokens={uid, iid}, collect_ids={uid, iid}, load_col=_load_col(config, "inter"), need_rows=True,
    )
    for key in ("RATING_FIELD", "TIME_FIELD", "LABEL_FIELD"):
        if config[key]:
            inter_rules.required_values.add(config[key])
    threshold = config["threshold"]
    if isinstance(threshold, dict):
        for f in threshold:
            inter_rules.required_fields[f] = f"the config key `threshold` ({_clip(threshold)}) turns into labels."
            inter_rules.required_values.add(f)
    for source in label_sources(tasks):
        label = config[source.config_key]
        if source.file != "inter" or not label:
            continue
        inter_rules.required_values.add(label)
        if _user_set(config, source.config_key):
            inter_rules.required_fields[label] = (
                f"the config key {source.config_key} names as {source.meaning}; set it to a float field "
                "of this file (e.g. rating)."
            )

    order = str((config["eval_args"] or {}).get("order", "")).upper()
    time_field = config["TIME_FIELD"]
    if order == "TO" or _is_sequential(config):
        why = ("orders each user's interactions (eval_args order 'TO' / a sequential model); "
               "add it to the file, or change eval_args order to 'RO'.")
        if time_field:
            inter_rules.required_fields[time_field] = why
            loaded = inter_rules.load_col
            if loaded is not None and time_field not in loaded:
                raise DataValidationError(
                    f"config key load_col loads {_clip(sorted(loaded))} from {name}.inter but not the time field "
                    f"'{time_field}', which {why.split(';')[0]}. Add '{time_field}' to load_col['inter']."
                )

    benchmark = config["benchmark_filename"]
    inter_files = [folder / f"{name}.{part}.inter" for part in benchmark] if benchmark else [folder / f"{name}.inter"]
    users, items = set(), set()
    headers: dict = {}  # suffix -> the header of the file RecBole will read (None: not read)
    for path in inter_files:
        if not path.is_file():
            raise DataValidationError(
                f"{path}: the interaction file is missing. Put {path.name} in {folder}"
                + (" (config key benchmark_filename names it)." if benchmark else ".")
            )
        report = check_file(path, inter_rules, sep, seq_sep, encoding)
        headers.setdefault("inter", report.header)
        users |= report.ids.get(uid, set())
        items |= report.ids.get(iid, set())

    side_files = [("user", uid, users, "users"), ("item", iid, items, "items")]
    item_labels = [s for s in label_sources(tasks) if s.file == "item" and config[s.config_key]]
    text_fields = list(config["text_fields"] or []) if config["text_features"] else []
    for suffix, id_field, used, noun in side_files:
        path = folder / f"{name}.{suffix}"
        rules = FileRules(required_fields={id_field: f"identifies each row of the .{suffix} file."},
                          nonempty_tokens={id_field}, collect_ids={id_field}, load_col=_load_col(config, suffix),
                          unique_ids=id_field)
        if suffix == "item":
            for source in item_labels:
                if _user_set(config, source.config_key):
                    rules.required_fields[config[source.config_key]] = (
                        f"the config key {source.config_key} names as {source.meaning}; set it to a token or "
                        "token_seq field of this file."
                    )
            for f in text_fields:
                rules.required_fields[f] = "the config key text_fields joins into each item's text."
        if not path.is_file():
            missing = [f for f in rules.required_fields if f != id_field]
            if missing:
                raise DataValidationError(
                    f"{path}: the file is missing, but the config names its field(s) "
                    f"{', '.join(missing)}. Add {path.name} or unset those keys."
                )
            continue
        if rules.load_col is not None and not rules.load_col:
            continue  # load_col leaves this file out: RecBole does not read it
        report = check_file(path, rules, sep, seq_sep, encoding)
        headers[suffix] = report.header
        unused = report.ids.get(id_field, set()) - used
        if unused:
            examples = ", ".join(repr(x) for x in heapq.nsmallest(_EXAMPLES, unused))
            warnings.append(
                f"{path}: {len(unused)} of {len(report.ids[id_field])} {noun} have no interaction in "
                f"{name}.inter (e.g. {examples}); RecBole keeps their rows but nothing trains them."
            )

    for suffix in config["additional_feat_suffix"] or []:
        path = folder / f"{name}.{suffix}"
        if path.is_file() and (_load_col(config, suffix) is None or _load_col(config, suffix)):
            check_file(path, FileRules(load_col=_load_col(config, suffix)), sep, seq_sep, encoding)

    warnings += check_tasks(config, tasks, headers)
    if config["text_features"] and tasks:
        check_text_features(config, tasks)
    if config["user_text_features"] and tasks:
        check_user_text_features(config)

    logger = getLogger(__name__)
    for message in warnings:
        logger.warning(message)
    return warnings


def _task_problem(config, source, headers: dict) -> Optional[str]:
    """Why the data cannot give ``source``'s task its labels, or None."""
    key, field_name = source.config_key, config[source.config_key]
    kind = "a float field of .inter (e.g. rating)" if source.file == "inter" else "a token or token_seq field of .item"
    if not field_name:
        return f"no {key} is set; set it to {kind}"
    header = headers.get(source.file)
    file = f"{config['dataset']}.{source.file}"
    if header is None:
        return f"{file} is missing or not loaded, so there is no '{_clip(field_name)}' field; add it, or set {key}"
    if field_name not in header:
        return f"{file} has no field '{_clip(field_name)}' (named by {key}); set {key} to {kind}"
    wanted = ("float",) if source.file == "inter" else ("token", "token_seq")
    if header[field_name] not in wanted:
        return f"{key} '{_clip(field_name)}' is a {header[field_name]} field of {file}; it must be {kind}"
    loaded = _load_col(config, source.file)
    if loaded is not None and field_name not in loaded:
        return f"load_col leaves '{_clip(field_name)}' out of {file}; add it to load_col['{source.file}']"
    return None


def check_tasks(config, tasks: list, headers: dict) -> list[str]:
    """Each task of ``tasks`` whose labels the data cannot give: an error when the user asked for it
    (set ``tasks`` or the task's label key), else a warning (the run switches the task off).

    Args:
        headers: file suffix (``inter``, ``item``) -> the checked file's header, absent if not read.
    """
    warnings = []
    for source in label_sources(tasks):
        problem = _task_problem(config, source, headers)
        if problem is None:
            continue
        asked = [k for k in ("tasks", source.config_key) if _user_set(config, k) and config[k]]
        if asked:
            raise DataValidationError(
                f"task '{source.task}' cannot run on dataset '{config['dataset']}': {problem}. Your config sets "
                f"{' and '.join(asked)}, so the run stops instead of training without it: give the data that "
                f"field, or drop '{source.task}' from tasks."
            )
        warnings.append(f"task '{source.task}' (one of the model's default tasks) cannot run on dataset "
                        f"'{config['dataset']}' and will be switched off: {problem}.")
    return warnings


def check_text_features(config, tasks: list) -> None:
    """With ``text_features`` on: the feature file and its sidecar exist and were made from the
    fields (and model) this run would use. Raises :class:`TextFeatureError`."""
    from recbole_mtl.text.embed import feature_folder
    from recbole_mtl.text.features import check_sidecar

    external = getattr(config, "external_config_dict", None) or {}
    forbidden = [config[s.config_key] for s in label_sources(tasks) if s.file == "item" and config[s.config_key]]
    check_sidecar(feature_folder(config), config["dataset"], plm=config["plm"], text_fields=config["text_fields"],
                  forbidden_fields=forbidden,
                  fix_args=[f"--{k}={external[k]}" for k in ("data_path", "text_feature_dir") if external.get(k)])


def check_user_text_features(config) -> None:
    """With ``user_text_features`` on: the user feature file and its sidecar exist and were made from
    the fields, review field and model this run would use. Raises :class:`TextFeatureError`."""
    from recbole_mtl.text.embed import feature_folder
    from recbole_mtl.text.users import check_user_sidecar, fix_args

    check_user_sidecar(feature_folder(config), config["dataset"], plm=config["plm"],
                       text_fields=config["user_text_fields"], review_field=config["user_review_field"] or None,
                       fix_args=fix_args(config))


# -- the folders a run writes --------------------------------------------------------------------
def _unwritable(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be created or written, or None (probes with a temp file)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return "no part of the path exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder" if probe != folder else "it is a file, not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".recbole-mtl-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        where = "" if probe == folder else f"it does not exist and its parent {probe} "
        return f"{where}cannot be written ({e.strerror or e})".strip()
    return None


def run_folders(config, checkpoints: bool = True, text: bool = False) -> list[tuple[Path, str]]:
    """The folders a command writes, each with how to move it: ``checkpoint_dir`` (``checkpoints``),
    RecBole's log folders and, with ``text``, the text-feature folder (what ``embed`` writes)."""
    folders = []
    if checkpoints:
        folders.append((Path(config["checkpoint_dir"] or "saved"),
                        "Set checkpoint_dir to a folder you can write, e.g. --checkpoint_dir=/tmp/saved"))
    logs = "RecBole writes its logs to ./log and ./log_tensorboard of the working directory (no config key " \
           "moves them): run from a folder you can write"
    folders += [(Path("log"), logs), (Path("log_tensorboard"), logs)]
    if text:
        from recbole_mtl.text.embed import feature_folder

        folders.append((feature_folder(config), "Set text_feature_dir to a folder you can write, "
                                                "e.g. --text_feature_dir=/tmp/features"))
    return folders


def check_run_folders(config, checkpoints: bool = True, text: Optional[bool] = None) -> None:
    """Fail before any data is loaded when a folder the command writes cannot be created or written.

    Args:
        checkpoints: check ``checkpoint_dir`` (training runs).
        text: check the text-feature folder; ``None``: when ``text_features`` (``user_text_features``)
            is on and the item (user) feature file is not there yet (``embed`` has to write it).

    Raises:
        DataValidationError: naming the folder and the config key that moves it.
    """
    if text is None:
        from recbole_mtl.text.embed import feature_folder, feature_paths

        from recbole_mtl.text.users import user_feature_paths

        folder = feature_folder(config)
        text = (bool(config["text_features"]) and not feature_paths(folder, config["dataset"])[0].is_file()) or \
            (bool(config["user_text_features"]) and not user_feature_paths(folder, config["dataset"])[0].is_file())
    for folder, fix in run_folders(config, checkpoints, text):
        why = _unwritable(folder)
        if why:
            raise DataValidationError(f"cannot write to {_clip(folder)}: {why}. {fix}.")
