"""Saved datasets: RecBole's ``save_dataset`` / ``dataset_save_path``, as arrays instead of a pickle.

RecBole saves a filtered dataset with ``pickle`` and loads it back on the next run whose dataset
arguments match. The plugin never unpickles a file (:mod:`recbole_mtl.hardening`), and a pickle
would bring every array back into memory anyway. Here a multi-task dataset is saved **after its
split** as a folder of ``.npy`` files and one ``meta.json``:

* every interaction, user and item column, the flat interaction arrays, the token maps
  (``field2id_token``, as fixed-width strings) and the split parts' rows, each one file;
* the training part's per-user segments of the flat arrays, from which the training windows are
  cut without reading the rows (:mod:`recbole_mtl.data.windows`);
* in ``meta.json``: the values of the config keys that decide the data (RecBole's
  ``dataset_arguments``, ``eval_args``, the label keys), the size and modification time of every
  atomic file read, and every other attribute of the dataset (field types, sources, ...).

A run loads the folder when all of these match (else it builds from the atomic files, and
re-saves when ``save_dataset`` is set). Loading maps the files into memory (copy-on-write): a
process reads only the pages it touches, so a training process touches the flat arrays and its
windows, not the token strings, the rows of every part or the item columns it never reads, and
the processes of a multi-process run share one copy in the page cache. A folder is written
whole: into a temporary folder first, which then replaces the old one.

Example::

    run_recbole_mtl.py prepare --model=MTLRec --dataset=big     # or --save_dataset=True on a run
    torchrun --nproc_per_node=2 run_recbole_mtl.py --model=MTLRec --dataset=big   # every rank loads it
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import time
from logging import getLogger
from typing import Any, Optional

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType
from recbole.utils.argument_list import dataset_arguments

from recbole_mtl.errors import ConfigError

#: Bumped whenever the folder layout or the meaning of a saved attribute changes.
FORMAT = 1
META = "meta.json"
#: Attributes set from the current config on load, never restored.
FROM_CONFIG = ("config", "logger", "holdout_ratio")
#: Attributes not saved: rebuilt on load from what is saved.
REBUILT = ("field2token_id",)
_ENUMS = {"FeatureType": FeatureType, "FeatureSource": FeatureSource}
#: Rows written at a time when a token map is turned into fixed-width strings.
_CHUNK = 1 << 20


def data_keys(config) -> dict:
    """The config values that decide a saved dataset's contents (RecBole's ``dataset_arguments``,
    the split, the label keys), as JSON-able values."""
    from recbole_mtl.data.labels import label_sources

    keys = list(dataset_arguments) + ["eval_args", "repeatable", "user_review_field", "interest_threshold",
                                      "encoding", "dataset"]
    keys += [s.config_key for s in label_sources()]
    values = {k: _plain(config[k]) for k in sorted(set(keys))}
    values["data_path"] = os.path.abspath(str(config["data_path"]))
    return values


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def default_path(config, dataset_class) -> str:
    """``dataset_save_path``, else ``<checkpoint_dir>/<dataset>-<DatasetClass>.arrays``."""
    return str(config["dataset_save_path"] or os.path.join(
        config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.arrays"))


def source_files(config) -> dict:
    """``{file name: [bytes, mtime_ns]}`` of the atomic files a run reads."""
    from recbole_mtl.checkpoint import dataset_files

    stats = {os.path.basename(f): os.stat(f) for f in dataset_files(config)}
    return {name: [st.st_size, st.st_mtime_ns] for name, st in stats.items()}


def describe(config, dataset_class) -> dict:
    """What a saved folder must record to serve ``config`` (compared by :func:`mismatch`)."""
    return {"format": FORMAT, "class": dataset_class.__name__,
            "flags": {"lean_sequences": bool(getattr(dataset_class, "lean_sequences", False)),
                      "keeps_review_text": bool(getattr(dataset_class, "keeps_review_text", False))},
            "keys": data_keys(config), "files": source_files(config)}


def read_meta(path: str) -> Optional[dict]:
    try:
        with open(os.path.join(path, META), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mismatch(path: str, config, dataset_class) -> Optional[str]:
    """Why the folder ``path`` cannot serve ``config`` (None when it can)."""
    if not os.path.isdir(path):
        return "there is none" if not os.path.exists(path) else "it is not a folder of arrays"
    meta = read_meta(path)
    if meta is None:
        return f"{META} is missing or unreadable"
    want = describe(config, dataset_class)
    for part in ("format", "class", "flags", "files"):
        if meta.get(part) != want[part]:
            return {"format": "it was written by another version of the plugin",
                    "class": f"it holds a {meta.get('class')}, not a {want['class']}",
                    "flags": "it was saved with other dataset options",
                    "files": "the atomic files changed since it was saved"}[part]
    changed = sorted(k for k in set(meta.get("keys", {})) | set(want["keys"])
                     if meta.get("keys", {}).get(k) != want["keys"].get(k))
    if changed:
        return "these config keys differ: " + ", ".join(changed)
    return None


def size_text(path: str) -> str:
    total = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return f"{total / 2**30:.2f} GiB" if total >= 2**30 else f"{total / 2**20:.1f} MiB"


# -- writing ----------------------------------------------------------------------------------
class _Writer:
    def __init__(self, folder: str):
        self.folder = folder
        self.count = 0
        self.seen: dict[int, Any] = {}  # id(object) -> its encoding (objects shared by attributes)
        self.keep: list = []  # keeps encoded objects alive, so that their ids stay theirs

    def array(self, values: np.ndarray) -> str:
        name = f"a{self.count:05d}.npy"
        self.count += 1
        path = os.path.join(self.folder, name)
        if values.dtype == object:  # strings: fixed width, written in chunks
            width = max((len(str(v)) for v in values), default=1) or 1
            out = np.lib.format.open_memmap(path, mode="w+", dtype=f"<U{width}", shape=values.shape)
            for lo in range(0, len(values), _CHUNK):
                out[lo:lo + _CHUNK] = values[lo:lo + _CHUNK].astype(str)
            out.flush()
            del out
        else:
            np.save(path, values, allow_pickle=False)
        return name

    def encode(self, value: Any, where: str):
        if isinstance(value, (bool, int, float, str)) or value is None:
            return value
        key = id(value)
        if key in self.seen:
            return self.seen[key]
        self.keep.append(value)
        if isinstance(value, torch.Tensor):
            out = {"tensor": self.array(value.detach().cpu().contiguous().numpy())}
        elif isinstance(value, np.ndarray):
            out = {"ndarray": self.array(value)}
        elif isinstance(value, Interaction):
            out = {"interaction": {k: self.encode(v, f"{where}.{k}") for k, v in value.interaction.items()}}
        elif isinstance(value, enum.Enum) and type(value).__name__ in _ENUMS:
            out = {"enum": [type(value).__name__, value.value]}
        elif isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise ConfigError(f"cannot save the dataset: {where} has keys that are not strings.")
            out = {"dict": {k: self.encode(v, f"{where}.{k}") for k, v in value.items()}}
        elif isinstance(value, (list, tuple)):
            out = {"list": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        else:
            raise ConfigError(f"cannot save the dataset: its attribute {where} is a {type(value).__name__}, "
                              "which a saved dataset does not hold.")
        self.seen[key] = out
        return out


def save(dataset, parts: list, path: str, segments: Optional[dict] = None) -> str:
    """Write ``dataset`` (after its split) and its split ``parts`` to the folder ``path``, whole.

    Args:
        dataset: the dataset ``parts`` were built from (``dataset.build()``).
        parts: the training, validation and test datasets.
        segments: the training part's per-user segments of the flat arrays (``users``, ``starts``,
            ``ends``), when it has them.

    Returns:
        ``path``.
    """
    start = time.perf_counter()
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"dataset_save_path {path} is a file (a dataset RecBole pickled?), not a folder of "
                          "arrays; nothing was written. Point dataset_save_path at a folder (or leave it unset).")
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        writer = _Writer(tmp)
        state = {k: writer.encode(v, k) for k, v in vars(dataset).items()
                 if k not in FROM_CONFIG + REBUILT and not k.startswith("_saved")}
        part_states = []
        for part in parts:  # only what differs from the dataset (a part is a shallow copy of it)
            own = {k: v for k, v in vars(part).items()
                   if k not in FROM_CONFIG + REBUILT and not k.startswith("_saved")
                   and (k not in vars(dataset) or vars(dataset)[k] is not v)}
            part_states.append({k: writer.encode(v, f"part.{k}") for k, v in own.items()})
        meta = describe(dataset.config, type(dataset))
        meta.update({"state": state, "parts": part_states,
                     "segments": None if segments is None else
                     {k: writer.encode(torch.as_tensor(v), f"segments.{k}") for k, v in segments.items()},
                     "validated": dataset.config["validate_data"] is not False,
                     "saved": time.strftime("%Y-%m-%d %H:%M:%S")})
        with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f".{os.path.basename(path)}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    getLogger(__name__).info(f"saved the dataset and its split to {path} in {time.perf_counter() - start:.1f} s")
    return path


# -- reading ----------------------------------------------------------------------------------
class _Reader:
    def __init__(self, folder: str):
        self.folder = folder
        self.cache: dict[str, Any] = {}

    def array(self, name: str) -> np.ndarray:
        path = os.path.join(self.folder, name)
        if name not in self.cache:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shape, _, _ = read_header(f)
            empty = int(np.prod(shape)) == 0
            self.cache[name] = np.load(path, mmap_mode=None if empty else "c", allow_pickle=False)
        return self.cache[name]

    def decode(self, value: Any):
        if not isinstance(value, dict):
            return value
        if "tensor" in value:
            out = self.array(value["tensor"])
            out = torch.from_numpy(out) if out.dtype != object else out
        elif "ndarray" in value:
            out = self.array(value["ndarray"])
        elif "interaction" in value:
            out = Interaction({k: self.decode(v) for k, v in value["interaction"].items()})
        elif "enum" in value:
            cls, member = value["enum"]
            out = _ENUMS[cls](member)
        elif "dict" in value:
            out = {k: self.decode(v) for k, v in value["dict"].items()}
        elif "list" in value:
            out = [self.decode(v) for v in value["list"]]
        else:
            raise ValueError(f"unknown entry {sorted(value)}")
        return out


def load(path: str, config, dataset_class):
    """The dataset saved in ``path`` for ``config``, with its split ready for ``build()``.

    Raises:
        ConfigError: the folder is damaged (a file missing or unreadable), naming it and the fix.
    """
    from recbole_mtl.data.dataset import TokenIds

    start = time.perf_counter()
    meta = read_meta(path)
    try:
        if meta is None:
            raise OSError(f"{META} is missing or unreadable")
        reader = _Reader(path)
        dataset = dataset_class.__new__(dataset_class)
        state = {k: reader.decode(v) for k, v in meta["state"].items()}
        parts = [{k: reader.decode(v) for k, v in p.items()} for p in meta["parts"]]
        segments = None if meta.get("segments") is None else \
            {k: reader.decode(v) for k, v in meta["segments"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"the saved dataset {path} is damaged ({type(e).__name__}: {e}). Delete that folder "
                          "(or point dataset_save_path elsewhere) and run again to build the dataset from its "
                          "atomic files; --save_dataset=True saves it anew.") from e
    dataset.__dict__.update(state)
    dataset.config = config
    dataset.logger = getLogger()
    dataset.field2token_id = {}
    for field, tokens in dataset.field2id_token.items():
        dataset.field2token_id[field] = TokenIds(tokens)
    if hasattr(dataset, "_config_checks"):
        dataset._config_checks(config)
    dataset._saved_parts = parts
    dataset._saved_segments = segments
    dataset._saved_path = path
    getLogger(__name__).info(f"loaded the saved dataset {path} ({meta.get('saved')}) in "
                             f"{time.perf_counter() - start:.2f} s")
    return dataset
