"""``--format amazon``: Amazon reviews (JSON lines, 2014's Python-literal lines too), then optionally
the metadata file; ``.gz`` read as is."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from recbole_mtl.data.convert.common import (CATEGORY, MAX_TEXT_CHARS, Options, Progress, Source, _id, _number, _pick,
                                             _required, clean_categories, clean_text, parse_price, read_json_lines)
from recbole_mtl.errors import ConvertError

NAME = "amazon"
AMAZON_USER = ("reviewerID", "user_id")
AMAZON_ITEM = ("parent_asin", "asin")
AMAZON_RATING = ("overall", "rating")
AMAZON_TIME = ("unixReviewTime", "timestamp")
AMAZON_ITEM_FIELDS = [("title", "token_seq"), ("brand", "token"), ("price", "float"), (CATEGORY, "token_seq"),
                      ("description", "token_seq")]


def read(paths: Sequence[Path], progress: Progress, options: Options) -> Source:
    """The reviews file and optionally the metadata file given to ``--input``."""
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
