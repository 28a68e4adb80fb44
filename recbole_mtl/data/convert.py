"""``convert``: raw dataset dumps -> RecBole atomic files plus a dataset YAML for this plugin.

    python run_recbole_mtl.py convert --format movielens --input ml-1m/ --out dataset --name ml-1m
    python run_recbole_mtl.py convert --format amazon --input reviews.jsonl meta.jsonl --out dataset --name beauty
    python run_recbole_mtl.py convert --format csv --input ratings.csv items.csv --out dataset --name shop \\
        --columns user=uid,item=iid,rating=stars,time=ts --item_columns item=iid,title=name,category=genres
    python run_recbole_mtl.py convert --format sequences --input ../shared/data/amazon-seq/Beauty.txt --out dataset --name beauty
    python run_recbole_mtl.py convert --format pairs --input clicks.txt --out dataset --name clicks

Writes ``<out>/<name>/<name>.inter`` (``user_id:token item_id:token rating:float timestamp:float``),
``<name>.item`` (title, categories as ``class:token_seq``, ...), ``<name>.user`` when the source has
user attributes, and ``<name>.yaml``, the config that names the fields for the multi-task models:

    python run_recbole_mtl.py --model=MTLRec --dataset=<name> --data_path=<out> --config_files=<out>/<name>/<name>.yaml

The two ordered formats carry no rating and no time, only the order:

* ``sequences``: one line per user, ``user item item ...`` (whitespace-separated, items in time order;
  the preprocessed Amazon Beauty/Sports files of S3-Rec, CL4SRec, DuoRec and ICLRec). Each item is one
  interaction whose ``timestamp`` is its position in the line (0, 1, 2, ...). A user on two lines,
  a user with no item, or a line starting with whitespace (an empty user id) is a malformed line.
* ``pairs``: one line per interaction, ``user item`` (whitespace or a tab between, exactly two fields,
  no header), lines in time order; ``timestamp`` is the line number, so each user's order is the
  file's and different users' lines may interleave.

For these two the YAML also carries the protocol those papers publish (:data:`LEAVE_ONE_OUT_YAML`):
leave-one-out by time (last item test, second-to-last validation), full ranking over all items with
the user's earlier items masked (``eval_mask_history``), HR and NDCG at 5, 10 and 20,
``MAX_ITEM_LIST_LENGTH: 50``, and no filter that drops a user or an item.

How it works:

* Streaming: every input is read line by line and written as it is read; what grows with the input
  is only the per-user and per-item interaction counts (and the item/user ids seen, to drop
  duplicates). ``.gz`` inputs are read as they are.
* ``kcore=K``: users and items with fewer than K interactions are dropped, again and again until
  every one left has K (each round is one more pass over the interactions written so far).
* Atomic: everything is written to a staging folder inside ``<out>`` first, checked with the
  ``validate`` rules, and only then renamed over ``<out>/<name>/<name>.*``. A conversion that fails
  (a malformed line, a kill) leaves no partial file and never touches a previous output.
* A malformed line stops the conversion with one line naming the file, the line and the field,
  quoting at most the first 200 characters of the bad value.
* Values are cleaned for the atomic format: tabs, newlines and other control characters become
  spaces, runs of spaces are collapsed, double quotes become single quotes (RecBole's reader would
  take a leading ``"`` as CSV quoting), HTML entities (``&amp;``) are decoded; a category's own
  spaces become ``_`` (``Science Fiction`` -> ``Science_Fiction``), since a ``token_seq`` is split on
  spaces.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from recbole_mtl.checkpoint import fsync_folder
from recbole_mtl.errors import ConvertError

FORMATS = ("movielens", "amazon", "csv", "sequences", "pairs")
#: Characters of a bad value an error message quotes.
QUOTE_LIMIT = 200
#: Longest text value written (descriptions); the PLM reads far less than this.
MAX_TEXT_CHARS = 2000
#: The 19 genres of ml-100k's u.item flag columns, used when u.genre is not there.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
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


def _movielens(paths: Sequence[Path], progress: Progress) -> Source:
    folder = paths[0] if len(paths) == 1 and paths[0].is_dir() else paths[0].parent
    names = {p.name for p in (folder.iterdir() if folder.is_dir() else [])}
    names |= {p.name for p in paths}
    at = {name: folder / name for name in names}
    if "u.data" in names:
        return _ml100k(at, folder, progress)
    if "ratings.dat" in names:
        return _ml1m(at, progress)
    if "ratings.csv" in names:
        return _ml20m(at, progress)
    raise ConvertError(f"{folder}: no MovieLens ratings file: expected u.data (100k), ratings.dat (1m/10m) or "
                       "ratings.csv (20m/25m/latest) in the folder given to --input.")


def _tab_ratings(path: Path, sep: str, progress: Progress) -> Iterator[tuple]:
    for line, text in read_lines(path, progress):
        if not text.strip():
            continue
        u, i, r, t = split_line(path, line, text, sep, 4, "user, item, rating, timestamp")
        yield (_id(u, path, line, "user"), _id(i, path, line, "item"), _number(r, path, line, "rating"),
               _number(t, path, line, "timestamp"))


ML_ITEM = [("movie_title", "token_seq"), ("release_year", "token"), (CATEGORY, "token_seq")]
ML_USER_100K = [("age", "token"), ("gender", "token"), ("occupation", "token"), ("zip_code", "token")]
ML_USER_1M = [("gender", "token"), ("age", "token"), ("occupation", "token"), ("zip_code", "token")]


def _ml_source(description, ratings, items, users, user_fields) -> Source:
    return Source(description, ratings, True, ML_ITEM if items else [], items, user_fields if users else [], users,
                  text_fields=["movie_title", "release_year"], category_field=CATEGORY if items else None,
                  item_load=["movie_title", "release_year", CATEGORY])


def _ml100k(at: dict, folder: Path, progress: Progress) -> Source:
    genres = list(ML100K_GENRES)
    if "u.genre" in at:
        listed = [text.split("|")[:2] for _, text in read_lines(at["u.genre"], progress) if "|" in text]
        genres = [name for name, _ in sorted(((n, int(i)) for n, i in listed if i.strip().isdigit()),
                                             key=lambda x: x[1])] or genres
    width = 5 + len(genres)

    def items():
        path = at["u.item"]
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            cols = split_line(path, line, text, "|", width, f"id|title|release date|video date|url|{len(genres)} genre flags")
            title, year = split_title_year(cols[1])
            release = cols[2].strip()[-4:] if cols[2].strip()[-4:].isdigit() else year
            flags = cols[5:]
            yield path, line, _id(cols[0], path, line, "movie id"), [
                clean_text(title), clean_token(release), clean_categories(g for g, f in zip(genres, flags) if f == "1")]

    def users():
        path = at["u.user"]
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            u, age, gender, occupation, zip_code = split_line(path, line, text, "|", 5, "id|age|gender|occupation|zip")
            yield path, line, _id(u, path, line, "user id"), [clean_token(v) for v in (age, gender, occupation, zip_code)]

    return _ml_source(f"MovieLens 100k layout in {folder}", lambda: _tab_ratings(at["u.data"], "\t", progress),
                      items if "u.item" in at else None, users if "u.user" in at else None, ML_USER_100K)


def _ml1m(at: dict, progress: Progress) -> Source:
    def items():
        path = at["movies.dat"]
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            i, title, genres = split_line(path, line, text, "::", 3, "MovieID::Title::Genres")
            title, year = split_title_year(title)
            yield path, line, _id(i, path, line, "MovieID"), [
                clean_text(title), year, clean_categories(g for g in genres.split("|") if g != "(no genres listed)")]

    def users():
        path = at["users.dat"]
        for line, text in read_lines(path, progress):
            if not text.strip():
                continue
            u, *rest = split_line(path, line, text, "::", 5, "UserID::Gender::Age::Occupation::Zip-code")
            yield path, line, _id(u, path, line, "UserID"), [clean_token(v) for v in rest]

    return _ml_source(f"MovieLens 1m layout in {at['ratings.dat'].parent}",
                      lambda: _tab_ratings(at["ratings.dat"], "::", progress),
                      items if "movies.dat" in at else None, users if "users.dat" in at else None, ML_USER_1M)


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


def _ml20m(at: dict, progress: Progress) -> Source:
    def ratings():
        path = at["ratings.csv"]
        index = None
        for line, names, row in _csv_rows(path, ",", progress):
            if index is None:
                index = [_column(names, n, path, "MovieLens ratings.csv") for n in ("userId", "movieId", "rating", "timestamp")]
            u, i, r, t = (row[k] for k in index)
            yield (_id(u, path, line, "userId"), _id(i, path, line, "movieId"), _number(r, path, line, "rating"),
                   _number(t, path, line, "timestamp"))

    def items():
        path = at["movies.csv"]
        index = None
        for line, names, row in _csv_rows(path, ",", progress):
            if index is None:
                index = [_column(names, n, path, "MovieLens movies.csv") for n in ("movieId", "title", "genres")]
            i, title, genres = (row[k] for k in index)
            title, year = split_title_year(title.strip())
            yield path, line, _id(i, path, line, "movieId"), [
                clean_text(title), year, clean_categories(g for g in genres.split("|") if g != "(no genres listed)")]

    return _ml_source(f"MovieLens 20m/latest layout in {at['ratings.csv'].parent}", ratings,
                      items if "movies.csv" in at else None, None, [])


AMAZON_USER = ("reviewerID", "user_id")
AMAZON_ITEM = ("parent_asin", "asin")
AMAZON_RATING = ("overall", "rating")
AMAZON_TIME = ("unixReviewTime", "timestamp")
AMAZON_ITEM_FIELDS = [("title", "token_seq"), ("brand", "token"), ("price", "float"), (CATEGORY, "token_seq"),
                      ("description", "token_seq")]


def _amazon(paths: Sequence[Path], progress: Progress) -> Source:
    if not 1 <= len(paths) <= 2:
        raise ConvertError(f"--format amazon takes the reviews file and optionally the metadata file, got {len(paths)} "
                           "paths.")
    reviews = paths[0]

    def interactions():
        for line, obj in read_json_lines(reviews, progress):
            name, user = _required(obj, AMAZON_USER, reviews, line)
            user = _id(user, reviews, line, name)
            name, item = _required(obj, AMAZON_ITEM, reviews, line)
            item = _id(item, reviews, line, name)
            name, rating = _required(obj, AMAZON_RATING, reviews, line)
            rating = _number(rating, reviews, line, name)
            name, stamp = _required(obj, AMAZON_TIME, reviews, line)
            yield user, item, rating, _number(stamp, reviews, line, name)

    def items():
        meta = paths[1]
        for line, obj in read_json_lines(meta, progress):
            name, item = _required(obj, AMAZON_ITEM, meta, line)
            categories = obj.get("categories") if obj.get("categories") is not None else obj.get("category")
            if categories is None and obj.get("main_category"):
                categories = [obj["main_category"]]
            if isinstance(categories, str):
                categories = [categories]
            _, brand = _pick(obj, ("brand", "store"))
            yield meta, line, _id(item, meta, line, name), [
                clean_text(obj.get("title"), MAX_TEXT_CHARS), clean_text(brand), parse_price(obj.get("price")),
                clean_categories(categories or []), clean_text(obj.get("description"), MAX_TEXT_CHARS)]

    with_meta = len(paths) == 2
    return Source(f"Amazon reviews {reviews}" + (f" with metadata {paths[1]}" if with_meta else ""), interactions,
                  True, AMAZON_ITEM_FIELDS if with_meta else [], items if with_meta else None,
                  text_fields=["title", "description"] if with_meta else [],
                  category_field=CATEGORY if with_meta else None, item_load=["brand", "price", CATEGORY])


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


def _sequences(paths: Sequence[Path], progress: Progress) -> Source:
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


def _pairs(paths: Sequence[Path], progress: Progress) -> Source:
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


# -- writing ------------------------------------------------------------------------------------------
def _header(fields: Sequence[tuple]) -> str:
    return "\t".join(f"{n}:{t}" for n, t in fields) + "\n"


def _kcore(path: Path, users: Counter, items: Counter, k: int, progress: Progress) -> tuple[set, set, int]:
    """Users and items left when each must have >= k interactions, removed round after round
    (each round one pass over the interaction file ``path``)."""
    keep_u = {u for u, c in users.items() if c >= k}
    keep_i = {i for i, c in items.items() if c >= k}
    rounds = 1
    while True:
        cu, ci = Counter(), Counter()
        with open(path, encoding="utf-8") as f:
            next(f)
            for text in f:
                u, i, _ = text.split("\t", 2)
                if u in keep_u and i in keep_i:
                    cu[u] += 1
                    ci[i] += 1
        new_u = {u for u, c in cu.items() if c >= k}
        new_i = {i for i, c in ci.items() if c >= k}
        if new_u == keep_u and new_i == keep_i:
            return keep_u, keep_i, rounds
        keep_u, keep_i, rounds = new_u, new_i, rounds + 1
        progress.say(f"k-core {k}, round {rounds}: {len(keep_u):,} users, {len(keep_i):,} items left")


def _write_side(path: Path, id_name: str, fields: list, rows: Iterator[tuple], keep: Optional[set]) -> dict:
    """Write ``.item``/``.user`` rows whose id is in ``keep``; the first row of a repeated id wins."""
    written, duplicates, first_dup = set(), 0, None
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(_header([(id_name, "token")] + fields))
        for source, line, key, values in rows:
            if keep is not None and key not in keep:
                continue
            if key in written:
                duplicates += 1
                first_dup = first_dup or f"{source}, line {line} (id {quote(key)})"
                continue
            written.add(key)
            out.write("\t".join([key, *values]) + "\n")
    return {"rows": len(written), "duplicates": duplicates, "first_duplicate": first_dup}


#: The evaluation protocol of the sequential-recommendation papers on the Amazon Beauty/Sports
#: sequences (S3-Rec, CL4SRec, DuoRec, ICLRec), written for the ``sequences`` and ``pairs`` formats.
LEAVE_ONE_OUT_YAML = """\
# The published protocol: leave-one-out by time (each user's last item is the test item, the
# second-to-last the validation item, the rest train), full ranking over all items with the user's
# earlier items masked, HR and NDCG at K = 5, 10, 20.
eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}
eval_mask_history: True         # full ranking: the user's earlier items score -inf
metrics: [Hit, NDCG]
topk: [5, 10, 20]
valid_metric: NDCG@10
MAX_ITEM_LIST_LENGTH: 50        # the history length of the Amazon papers
user_inter_num_interval: "[0,inf)"   # keep every user and item (convert --kcore filters before writing)
item_inter_num_interval: "[0,inf)"
rm_dup_inter: ~                 # an item a user took twice stays twice in the sequence
# The next-item settings measured best on this family of data (sparse, short histories; see
# docs/training.md and results/sequence_recipe/beauty/report.md): heavy dropout, as the SASRec paper
# uses on Amazon (RecBole's SASRec defaults to the same), and L2-normalised scores over a temperature.
hidden_dropout_prob: 0.5
attn_dropout_prob: 0.5
sequence_score: cosine
sequence_temperature: 0.05
"""


def dataset_yaml(name: str, source: Source, out_root: Path, interest_threshold: float, has_user: bool,
                 has_item: bool, command: str) -> str:
    """The dataset config: field names, what each task reads, what RecBole loads; and for a source
    with ``protocol="leave-one-out"``, :data:`LEAVE_ONE_OUT_YAML` (the published protocol)."""
    inter_cols = [USER, ITEM] + ([RATING] if source.has_rating else []) + [TIME]
    lines = [
        f"# {name}: written by `{command}`",
        f"# python run_recbole_mtl.py --model=MTLRec --dataset={name} --data_path={out_root} "
        f"--config_files={out_root / name / (name + '.yaml')}",
        f"USER_ID_FIELD: {USER}",
        f"ITEM_ID_FIELD: {ITEM}",
        f"RATING_FIELD: {RATING if source.has_rating else '~'}",
        f"TIME_FIELD: {TIME}",
        "load_col:                       # the columns RecBole loads (long texts stay out; `embed` reads them)",
        f"  inter: [{', '.join(inter_cols)}]",
    ]
    if has_item:
        lines.append(f"  item: [{', '.join([ITEM] + [f for f in source.item_load if f in dict(source.item_fields)])}]")
    if has_user:
        lines.append(f"  user: [{', '.join([USER] + [f for f, _ in source.user_fields])}]")
    if source.has_rating:
        lines += [f"interest_label_field: {RATING}    # the interest task: {RATING} >= interest_threshold is 'liked'",
                  f"interest_threshold: {float(interest_threshold)}",
                  f"rating_label_field: {RATING}"]
    else:
        lines.append("interest_label_field: ~         # no rating in the source: no interest task")
    if has_item and source.category_field:
        lines.append(f"category_field: {source.category_field}          # the category task's labels (token_seq of .item)")
    else:
        lines.append("category_field: ~               # no categories in the source: no category task")
    text = [f for f in source.text_fields if f in dict(source.item_fields)] if has_item else []
    lines.append(f"text_fields: [{', '.join(text)}]" if text else "text_fields: ~")
    tasks = ["sequence"] + (["interest"] if source.has_rating else []) + \
        (["category"] if has_item and source.category_field else [])
    if len(tasks) < 3:
        lines.append(f"tasks: [{', '.join(tasks)}]          # the tasks this data can serve")
    if source.time_meaning:
        at = next(n for n, text in enumerate(lines) if text.startswith("TIME_FIELD:"))
        lines.insert(at, f"# {TIME}: {source.time_meaning}")
    out = "\n".join(lines) + "\n"
    if source.protocol == "leave-one-out":
        out += LEAVE_ONE_OUT_YAML
    elif source.protocol is not None:
        raise ValueError(f"unknown protocol {source.protocol!r}")
    return out


@dataclass
class Result:
    folder: Path
    files: list
    interactions: int
    users: int
    items: int
    dropped: int
    kcore_rounds: int
    item_rows: Optional[int]
    user_rows: Optional[int]
    warnings: list


def _commit(stage: Path, target: Path, produced: list, stale: list) -> None:
    """Rename each staged file over its target (the YAML last), then remove outputs of an earlier
    conversion that this one does not write."""
    target.mkdir(parents=True, exist_ok=True)
    for name in produced:
        staged = stage / name
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(staged, target / name)
    for name in stale:
        if (target / name).exists():
            os.unlink(target / name)
    fsync_folder(target)


def convert(fmt: str, inputs: Sequence, out: str, name: str, kcore: int = 0, *, sep: str = ",",
            columns: Optional[str] = None, item_columns: Optional[str] = None, item_sep: Optional[str] = None,
            category_sep: str = "|", header: bool = True, interest_threshold: float = 4.0,
            progress_every: Optional[float] = 5.0, validate: bool = True, command: str = "") -> Result:
    """Convert raw files to ``<out>/<name>/`` (see the module doc). Raises :class:`ConvertError`."""
    if fmt not in FORMATS:
        raise ConvertError(f"--format must be one of {', '.join(FORMATS)}; got {quote(fmt)}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name or ""):
        raise ConvertError(f"--name {quote(name)}: use letters, digits, '-', '_' and '.' (it names files and the dataset).")
    if kcore < 0:
        raise ConvertError(f"--kcore must be >= 0, got {kcore}.")
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise ConvertError(f"--input {p}: no such file or folder.")
    progress = Progress(progress_every)
    if fmt == "movielens":
        source = _movielens(paths, progress)
    elif fmt == "amazon":
        source = _amazon(paths, progress)
    elif fmt == "sequences":
        source = _sequences(paths, progress)
    elif fmt == "pairs":
        source = _pairs(paths, progress)
    else:
        source = _csv(paths, progress, "\t" if sep in ("\\t", "tab") else sep, parse_mapping(columns, "--columns"),
                      parse_mapping(item_columns, "--item_columns"),
                      ("\t" if item_sep in ("\\t", "tab") else item_sep), category_sep, header)
    out_root = Path(out)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        stage_root = Path(tempfile.mkdtemp(prefix=f".{name}.convert-", dir=out_root))
    except OSError as e:
        raise ConvertError(f"--out {out_root}: cannot write there ({e.strerror or e}). Choose a writable folder.") from None
    try:
        stage = stage_root / name
        stage.mkdir()
        return _convert_into(source, stage, out_root, name, kcore, interest_threshold, progress, validate, command)
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)


def _convert_into(source: Source, stage: Path, out_root: Path, name: str, kcore: int, interest_threshold: float,
                  progress: Progress, validate: bool, command: str) -> Result:
    progress.say(f"reading {source.description}")
    inter_fields = [(USER, "token"), (ITEM, "token")] + ([(RATING, "float")] if source.has_rating else []) + \
        [(TIME, "float")]
    inter_path = stage / f"{name}.inter"
    users, items = Counter(), Counter()
    with open(inter_path, "w", encoding="utf-8", newline="") as f:
        f.write(_header(inter_fields))
        for user, item, rating, stamp in source.interactions():
            f.write("\t".join([user, item, stamp] if rating is None else [user, item, rating, stamp]) + "\n")
            users[user] += 1
            items[item] += 1
    total = sum(users.values())
    if total == 0:
        raise ConvertError(f"{source.description}: no interactions found.")
    keep_u = keep_i = None
    rounds, kept = 0, total
    if kcore > 1:
        keep_u, keep_i, rounds = _kcore(inter_path, users, items, kcore, progress)
        if not keep_u:
            raise ConvertError(f"--kcore {kcore} leaves no interaction of the {total:,} read: no set of users and items "
                               f"has {kcore} interactions each. Lower --kcore.")
        filtered = stage / f"{name}.inter.kcore"
        kept = 0
        with open(inter_path, encoding="utf-8") as src, open(filtered, "w", encoding="utf-8", newline="") as dst:
            dst.write(next(src))
            for text in src:
                u, i, _ = text.split("\t", 2)
                if u in keep_u and i in keep_i:
                    dst.write(text)
                    kept += 1
        os.replace(filtered, inter_path)
        progress.say(f"k-core {kcore}: kept {kept:,} of {total:,} interactions ({rounds} round(s))")
    n_users = len(keep_u) if keep_u is not None else len(users)
    n_items = len(keep_i) if keep_i is not None else len(items)
    item_ids = keep_i if keep_i is not None else set(items)
    user_ids = keep_u if keep_u is not None else set(users)
    del users, items

    produced, warnings = [inter_path.name], list(source.notes)
    item_rows = user_rows = None
    if source.items is not None:
        info = _write_side(stage / f"{name}.item", ITEM, source.item_fields, source.items(), item_ids)
        item_rows = info["rows"]
        produced.append(f"{name}.item")
        if info["duplicates"]:
            warnings.append(f"{info['duplicates']} repeated item row(s) skipped, the first at {info['first_duplicate']}; "
                            "the first row of each item is kept.")
        if item_rows < n_items:
            warnings.append(f"{n_items - item_rows} of {n_items} items have no row in the item file; their "
                            "attributes are empty.")
    if source.users is not None:
        info = _write_side(stage / f"{name}.user", USER, source.user_fields, source.users(), user_ids)
        user_rows = info["rows"]
        produced.append(f"{name}.user")
        if info["duplicates"]:
            warnings.append(f"{info['duplicates']} repeated user row(s) skipped, the first at {info['first_duplicate']}.")
    yaml_text = dataset_yaml(name, source, out_root.resolve(), interest_threshold, source.users is not None,
                             source.items is not None, command or f"convert --name {name}")
    (stage / f"{name}.yaml").write_text(yaml_text, encoding="utf-8")
    produced.append(f"{name}.yaml")
    if validate:
        _validate_staged(stage, name)
    target = out_root / name
    stale = [f"{name}.{s}" for s in ("item", "user") if f"{name}.{s}" not in produced]
    try:
        _commit(stage, target, produced, stale)
    except OSError as e:
        raise ConvertError(f"cannot write the output to {target} ({e.strerror or e}: {e.filename}). "
                           "Choose another --out or --name.") from None
    for message in warnings:
        progress.say(f"warning: {message}")
    return Result(target, [target / p for p in produced], kept, n_users, n_items, total - kept, rounds,
                  item_rows, user_rows, warnings)


def _validate_staged(stage: Path, name: str) -> None:
    """The ``validate`` subcommand's checks on the staged files, before they replace anything."""
    from recbole_mtl.config import Config
    from recbole_mtl.data.validate import validate_dataset

    config = Config(model="MTLRec", dataset=name, config_file_list=[str(stage / f"{name}.yaml")],
                    config_dict={"data_path": str(stage.parent), "state": "ERROR"}, cmd_args=[])
    validate_dataset(config)
