"""Check a dataset's atomic files before RecBole loads them.

RecBole reads ``.inter``/``.user``/``.item`` with ``pandas.read_csv`` and, given a malformed file,
either fails deep inside with a cryptic traceback ("not enough values to unpack", "Length
mismatch") or silently accepts it (an extra column on one line, a rating of "four", a NaN
timestamp). :func:`validate_dataset` streams every file the run will load once, line by line, and
stops at the first problem with a :class:`DataValidationError` that names the file, the line, the
field, what was expected and how to fix it. Problems that do not stop a run (ids in a feature file
that no interaction uses) come back as warnings.

Rows are split exactly as RecBole's reader splits them (``field_separator``, double-quoted fields
as in ``csv``), so a file the validator accepts is one RecBole reads as intended.

Each file first goes through a fast path (:func:`_fast_check`): chunks of about 8 MB, the row
shapes checked with numpy on the raw bytes, the needed columns (loaded fields that have a rule, the
ids) read by pandas' C parser and checked column-wise: numbers and plain integer ids (their bytes
checked first) come as numpy arrays, other values as str checked as the line-by-line check does;
an id on two rows is found across chunks from the id set's size (or, when the ids are not
collected, their hashes). The fast path may only accept a file. On anything it is not sure of (a
candidate problem, a double quote, a NUL byte, a carriage return, bytes that are not UTF-8, a
``float_seq`` column to check, another encoding or a separator that is not one ASCII character)
the whole file goes through the line-by-line check (:func:`_check_rows`), the one authority for
error messages, so messages and verdicts do not depend on the path.
:data:`~recbole_mtl.data.validate.reader.FAST_PATH` ``= False`` (or ``check_file(fast=False)``)
checks line by line only.

The package: :mod:`~recbole_mtl.data.validate.messages` (the wording the errors share),
:mod:`~recbole_mtl.data.validate.rules` (field types, :class:`FileRules`, the header and per-value
checks), :mod:`~recbole_mtl.data.validate.reader` (:func:`check_file` and the line-by-line check),
:mod:`~recbole_mtl.data.validate.fast` (the vectorised path), :mod:`~recbole_mtl.data.validate.dataset`
(:func:`validate_dataset`, the tasks, the text features) and :mod:`~recbole_mtl.data.validate.folders`
(the folders a command writes). Their public names are importable from here.
"""

from __future__ import annotations

from recbole_mtl.data.build import build_dataset, empty_dataset_error
from recbole_mtl.data.validate.dataset import (check_tasks, check_text_features, check_user_text_features,
                                               validate_dataset)
from recbole_mtl.data.validate.folders import check_run_folders, run_folders
from recbole_mtl.data.validate.messages import QUOTE_LIMIT
from recbole_mtl.data.validate.reader import check_file
from recbole_mtl.data.validate.rules import FIELD_TYPES, FileReport, FileRules, parse_header
from recbole_mtl.errors import DataValidationError

__all__ = ["DataValidationError", "FIELD_TYPES", "FileReport", "FileRules", "QUOTE_LIMIT", "build_dataset",
           "check_file", "check_run_folders", "check_tasks", "check_text_features", "check_user_text_features",
           "empty_dataset_error", "parse_header", "run_folders", "validate_dataset"]
