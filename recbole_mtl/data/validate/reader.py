"""One atomic file checked against its :class:`~recbole_mtl.data.validate.rules.FileRules`
(:func:`check_file`): the fast path first, then, where it is not sure, the line-by-line check
(:func:`_check_rows`), the one authority for error messages."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Optional

from recbole_mtl.data.checked import record_unique_ids
from recbole_mtl.data.validate.fast import _fast_check
from recbole_mtl.data.validate.messages import QUOTE_LIMIT, _clip, _decode_error, _fields, _not_text, _short, _where
from recbole_mtl.data.validate.rules import FileReport, FileRules, _check_float, _check_float_seq, parse_header
from recbole_mtl.errors import DataValidationError

#: Take the fast path (:func:`_fast_check`) before the line-by-line check; ``check_file(fast=...)``
#: overrides it per call.
FAST_PATH = True


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
