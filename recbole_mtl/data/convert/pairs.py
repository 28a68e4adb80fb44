"""``--format pairs``: one line per interaction, ``user item``, lines in time order; each
interaction's ``timestamp`` is its line number."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from recbole_mtl.data.convert.common import (Options, Progress, Source, _empty_user, _single_file, _token, _where,
                                             quote, read_lines)
from recbole_mtl.errors import ConvertError

NAME = "pairs"


def read(paths: Sequence[Path], progress: Progress, options: Options) -> Source:
    """The one file given to ``--input``."""
    path = _single_file(paths, "pairs", "one line per interaction: user item")

    def interactions():
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            if text[0].isspace():
                raise _empty_user(path, line, text, "`user item`")
            cols = text.split()
            if len(cols) != 2:
                raise ConvertError(f"{_where(path, line)}: {len(cols)} field(s), expected 2 (`user item`, separated by "
                                   f"whitespace or a tab; no header line). The line starts {quote(text)}; fix or "
                                   "drop it.")
            yield _token(cols[0], path, line, "user"), _token(cols[1], path, line, "item"), None, str(line)

    return Source(f"pairs {path}", interactions, False, protocol="leave-one-out",
                  time_meaning="the line number in the input, so each user's interactions keep the file's order")
