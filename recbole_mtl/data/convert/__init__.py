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

The package: one module per input format (:mod:`~recbole_mtl.data.convert.movielens`,
:mod:`~recbole_mtl.data.convert.amazon`, :mod:`~recbole_mtl.data.convert.table` for ``csv``,
:mod:`~recbole_mtl.data.convert.sequences`, :mod:`~recbole_mtl.data.convert.pairs`), each a ``NAME``
and a ``read(paths, progress, options) -> Source`` registered in :data:`READERS`;
:mod:`~recbole_mtl.data.convert.common`, what the formats share (values, messages, line readers,
:class:`Source`); :mod:`~recbole_mtl.data.convert.write`, the output (staging, k-core, YAML,
``validate``, the rename).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from recbole_mtl.data.convert import amazon, movielens, pairs, sequences, table
from recbole_mtl.data.convert.amazon import (AMAZON_ITEM, AMAZON_ITEM_FIELDS, AMAZON_RATING, AMAZON_TIME,
                                             AMAZON_USER)
from recbole_mtl.data.convert.common import (CATEGORY, ITEM, MAX_TEXT_CHARS, QUOTE_LIMIT, RATING, TIME, USER, Options,
                                             Progress, Source, clean_categories, clean_text, clean_token, parse_price,
                                             quote, read_json_lines, read_lines, split_line, split_title_year)
from recbole_mtl.data.convert.movielens import ML100K_GENRES, ML_ITEM, ML_USER_1M, ML_USER_100K
from recbole_mtl.data.convert.table import CSV_ITEM_ROLES, CSV_ROLES, parse_mapping
from recbole_mtl.data.convert.write import LEAVE_ONE_OUT_YAML, Result, _convert_into, dataset_yaml
from recbole_mtl.errors import ConvertError

#: Every input format: ``--format`` -> its module's ``read(paths, progress, options) -> Source``. A new
#: format is one module (``NAME`` and ``read``, from :mod:`~recbole_mtl.data.convert.common`'s
#: helpers) and one entry here.
READERS = {module.NAME: module.read for module in (movielens, amazon, table, sequences, pairs)}
FORMATS = tuple(READERS)


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
    source = READERS[fmt](paths, progress, Options(sep, columns, item_columns, item_sep, category_sep, header))
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


__all__ = ["AMAZON_ITEM", "AMAZON_ITEM_FIELDS", "AMAZON_RATING", "AMAZON_TIME", "AMAZON_USER", "CATEGORY",
           "CSV_ITEM_ROLES", "CSV_ROLES", "FORMATS", "ITEM", "LEAVE_ONE_OUT_YAML", "MAX_TEXT_CHARS", "ML100K_GENRES",
           "ML_ITEM", "ML_USER_100K", "ML_USER_1M", "Options", "Progress", "QUOTE_LIMIT", "RATING", "READERS",
           "Result", "Source", "TIME", "USER", "clean_categories", "clean_text", "clean_token", "convert",
           "dataset_yaml", "parse_mapping", "parse_price", "quote", "read_json_lines", "read_lines", "split_line",
           "split_title_year"]
