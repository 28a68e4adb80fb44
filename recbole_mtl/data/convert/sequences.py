"""``--format sequences``: one line per user, ``user item item ...`` (items in time order); each
item's ``timestamp`` is its position in the line."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from recbole_mtl.data.convert.common import (Options, Progress, Source, _empty_user, _single_file, _token, _where,
                                             quote, read_lines)
from recbole_mtl.errors import ConvertError

NAME = "sequences"


def read(paths: Sequence[Path], progress: Progress, options: Options) -> Source:
    """The one file given to ``--input``."""
    path = _single_file(paths, "sequences", "one line per user: user item item ...")
    layout = "`user item item ...` (items in time order)"

    def interactions():
        first_line: dict = {}
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            if text[0].isspace():
                raise _empty_user(path, line, text, layout)
            user, *items = text.split()
            user = _token(user, path, line, "user")
            if not items:
                raise ConvertError(f"{_where(path, line)}: user {quote(user)} has no item; each line is {layout}. "
                                   "Add the user's items after the id or drop the line.")
            if user in first_line:
                raise ConvertError(f"{_where(path, line, 'user')}: user {quote(user)} is already on line "
                                   f"{first_line[user]}; each user has one line with all of their items in time "
                                   "order. Merge the two lines (in time order) or drop one.")
            first_line[user] = line
            for position, item in enumerate(items):
                yield user, _token(item, path, line, f"item {position + 1}"), None, str(position)

    return Source(f"sequences {path}", interactions, False, protocol="leave-one-out",
                  time_meaning="the item's position in its user's line (0, 1, 2, ...)")
