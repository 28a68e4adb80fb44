"""The fast path of :func:`~recbole_mtl.data.validate.reader.check_file`: chunks of about
:data:`FAST_CHUNK_BYTES`, the row shapes checked with numpy on the raw bytes, the needed columns read
by pandas' C parser and checked column-wise. It may only accept a file: on anything it is not sure
of it raises :class:`~recbole_mtl.errors.UnsureCheck` and the line-by-line check decides."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from recbole_mtl.data.validate.rules import FileReport, FileRules, parse_header
from recbole_mtl.errors import UnsureCheck


# -- the fast path: whole chunks at a time; it may only accept a file -------------------------------
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
