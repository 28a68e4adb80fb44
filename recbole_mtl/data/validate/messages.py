"""The wording ``validate``'s errors share: where (file, line, field), values quoted at most
:data:`QUOTE_LIMIT` characters, and the errors for a file that is not text of its encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from recbole_mtl.errors import DataValidationError

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
