"""``--format csv``: an interaction file and optionally an item file, any separator, their
columns mapped to roles by ``--columns`` and ``--item_columns`` (by name, or by number without a
header)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from recbole_mtl.data.convert.common import (CATEGORY, MAX_TEXT_CHARS, Options, Progress, Source, _column, _csv_rows,
                                             _id, _number, _where, clean_categories, clean_text, parse_price, quote)
from recbole_mtl.errors import ConvertError

NAME = "csv"


def read(paths: Sequence[Path], progress: Progress, options: Options) -> Source:
    """The files given to ``--input``, read as ``options`` maps their columns."""
    sep, item_sep = options.sep, options.item_sep
    return _csv(paths, progress, "\t" if sep in ("\\t", "tab") else sep, parse_mapping(options.columns, "--columns"),
                parse_mapping(options.item_columns, "--item_columns"),
                ("\t" if item_sep in ("\\t", "tab") else item_sep), options.category_sep, options.header)


def parse_mapping(text: Optional[str], flag: str) -> dict:
    """``"user=uid,item=iid"`` -> ``{"user": "uid", "item": "iid"}``."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, column = part.partition("=")
        if not eq or not key.strip() or not column.strip():
            raise ConvertError(f"{flag}: {quote(part)} is not role=column (e.g. {flag} user=uid,item=iid).")
        mapping[key.strip()] = column.strip()
    return mapping


CSV_ROLES = {"user", "item", "rating", "time"}
#: item roles -> (output field, type); any other role becomes a token field of that name
CSV_ITEM_ROLES = {"title": ("title", "token_seq"), "category": (CATEGORY, "token_seq"), "brand": ("brand", "token"),
                  "price": ("price", "float"), "text": ("description", "token_seq")}


def _safe_name(name: str, flag: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConvertError(f"{flag}: {quote(name)} cannot be a field name; use letters, digits and _.")
    return name


def _csv(paths: Sequence[Path], progress: Progress, sep: str, columns: dict, item_columns: dict,
         item_sep: Optional[str], category_sep: str, header: bool) -> Source:
    if not 1 <= len(paths) <= 2:
        raise ConvertError(f"--format csv takes the interaction file and optionally an item file, got {len(paths)} paths.")
    for role in ("user", "item"):
        if role not in columns:
            raise ConvertError(f"--columns must name the {role} column, e.g. --columns user=uid,item=iid,rating=stars,time=ts.")
    unknown = set(columns) - CSV_ROLES
    if unknown:
        raise ConvertError(f"--columns: unknown role(s) {sorted(unknown)}; the roles are {sorted(CSV_ROLES)}.")
    inter = paths[0]

    def resolve(names, wanted: str, path, flag) -> int:
        if header:
            return _column(names, wanted, path, f"named by {flag}")
        if not wanted.isdigit() or int(wanted) < 1:
            raise ConvertError(f"{flag}: without a header, columns are numbers from 1; got {quote(wanted)}.")
        return int(wanted) - 1

    def width_check(path, line, row, need):
        if not header and len(row) <= need:
            raise ConvertError(f"{_where(path, line)}: {len(row)} column(s), but column {need + 1} is mapped. "
                               "Fix or drop the line.")

    def interactions():
        index = None
        for line, names, row in _csv_rows(inter, sep, progress, header):
            if index is None:
                index = {role: resolve(names, col, inter, "--columns") for role, col in columns.items()}
            width_check(inter, line, row, max(index.values()))
            label = (lambda role: names[index[role]] if header else f"{role} (column {index[role] + 1})")
            user = _id(row[index["user"]], inter, line, label("user"))
            item = _id(row[index["item"]], inter, line, label("item"))
            rating = _number(row[index["rating"]], inter, line, label("rating")) if "rating" in index else None
            stamp = _number(row[index["time"]], inter, line, label("time")) if "time" in index else str(line)
            yield user, item, rating, stamp

    item_fields, roles = [], []
    if len(paths) == 2:
        if "item" not in item_columns:
            raise ConvertError("--item_columns must name the item file's id column, e.g. --item_columns item=iid,title=name.")
        for role in item_columns:
            if role == "item":
                continue
            out = CSV_ITEM_ROLES.get(role, (_safe_name(role, "--item_columns"), "token"))
            item_fields.append(out)
            roles.append(role)

    def items():
        path = paths[1]
        index = None
        for line, names, row in _csv_rows(path, item_sep or sep, progress, header):
            if index is None:
                index = {role: resolve(names, col, path, "--item_columns") for role, col in item_columns.items()}
            width_check(path, line, row, max(index.values()))
            values = []
            for role in roles:
                raw = row[index[role]]
                if role == "category":
                    values.append(clean_categories(raw.split(category_sep) if category_sep else [raw]))
                elif role == "price":
                    values.append(parse_price(raw))
                elif role in ("title", "text"):
                    values.append(clean_text(raw, MAX_TEXT_CHARS))
                else:
                    values.append(clean_text(raw))
            yield path, line, _id(row[index["item"]], path, line, item_columns["item"]), values

    names = [f for f, _ in item_fields]
    text = [f for f in ("title", "description") if f in names]
    notes = [] if "time" in columns else [
        "--columns names no time column: the timestamp is the line number, so each user's interactions keep "
        "the file's order."]
    return Source(f"CSV {inter}" + (f" with items {paths[1]}" if len(paths) == 2 else ""), interactions,
                  "rating" in columns, item_fields, items if item_fields or len(paths) == 2 else None,
                  text_fields=text, category_field=CATEGORY if CATEGORY in names else None,
                  item_load=[f for f in names if f != "description"], notes=notes)
