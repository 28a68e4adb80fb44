"""``--format movielens``: the unpacked MovieLens folder, its layout found from the file names:
100k (``u.data``, ``u.item``, ``u.user``), 1m/10m (``ratings.dat``, ``movies.dat``, ``users.dat``),
20m/25m/latest (``ratings.csv``, ``movies.csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from recbole_mtl.data.convert.common import (CATEGORY, Options, Progress, Source, _column, _csv_rows, _id, _number,
                                             clean_categories, clean_text, clean_token, read_lines, split_line,
                                             split_title_year)
from recbole_mtl.errors import ConvertError

NAME = "movielens"
#: The 19 genres of ml-100k's u.item flag columns, used when u.genre is not there.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")


def read(paths: Sequence[Path], progress: Progress, options: Options) -> Source:
    """The MovieLens folder (or its files) given to ``--input``, by its layout."""
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
