"""The checkpoint format: what a ``.pth`` file holds, how it is written and read back.

This module is the one owner of checkpoints; everything else calls it.

* **Tensors and plain data only.** RecBole pickles its whole ``Config`` into every checkpoint;
  here the config is a plain dict (:func:`plain_config`), a model's ``other_parameter()`` is
  packed into tensors (:func:`pack_other`), and files are read with
  ``torch.load(..., weights_only=True)`` (:func:`load_checkpoint`), which refuses pickled objects.
* **Atomic writes.** Every file goes to a temp file beside its target, is fsynced and renamed
  over it (:func:`atomic_open`): a crash mid-write leaves the previous file whole, so a partial
  checkpoint never replaces a good one.
* **Kinds.** The best model (RecBole's ``saved_model_file``); the ``-last.pth`` written after
  every finished epoch (:func:`save_last_checkpoint`), which also holds the best-so-far result and every
  random-number generator (:func:`rng_state`) so that a resumed run ends where an uninterrupted
  one ends; and the per-rank files of a multi-process run, ``<name>.rank<r>-of-<W>.pth``
  (:func:`shard_path`), which :func:`export_checkpoint` joins into one single-process file.

Shapes and keys of a checkpoint dict::

    format, config {final, external}, dataset {name, files: {file name: {bytes, sha256}}},
    epoch, cur_step, best_valid_score, state_dict, other_parameter, optimizer
    [+ kind "last", best_model_file, best_valid_result, train_loss_dict, rng]
    [+ exported_from {world_size, plan}]

``dataset`` (:func:`dataset_fingerprint`) lets a checkpoint tell whether the atomic files it is
read with are the ones it was trained on (:func:`check_dataset`); files older than that key are
only checked by the sizes of their tables.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import hashlib
import os
import pickle
import random
import re
import tempfile
import zipfile
from logging import getLogger
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from recbole_mtl.errors import CheckpointError, ConfigError

FORMAT = "recbole_mtl.checkpoint.v1"
#: Keys that may differ between a run and the run it resumes.
RUN_CONTROL_KEYS = frozenset({"checkpoint", "resume", "epochs", "show_progress", "state", "log_wandb",
                              "checkpoint_dir", "worker", "gpu_id", "use_gpu", "device", "local_rank"})
_SHARD_RE = re.compile(r"\.rank(\d+)-of-(\d+)\.pth$")
_SKIP = object()


# -- atomic writes ------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    A crash or an exception mid-write leaves the previous file untouched and no temp file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; keep the usual file mode
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_folder(folder)


def fsync_folder(folder) -> None:
    """Make renames inside ``folder`` durable (fsync the folder itself)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some filesystems refuse fsync on folders; the rename is still atomic
        pass


def atomic_torch_save(obj: Any, path) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path, text: str) -> None:
    """Write a text file through :func:`atomic_open`."""
    with atomic_open(path, "w") as f:
        f.write(text)


# -- plain data ---------------------------------------------------------------------------------
def to_plain(value: Any) -> Any:
    """Convert a config value into plain data that ``weights_only=True`` can load.

    Enums become their names, devices and other objects their ``str``; numpy scalars become
    Python numbers; dicts, lists and tuples are converted recursively (tuples become lists).
    """
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return str(value)


def _packed_key(key: Any) -> Any:
    """A dict key of ``other_parameter`` as ``weights_only=True`` loads it back: ints stay ints.

    Why: RippleNet's ``ripple_set`` is keyed by user id; keys turned into ``str`` are not found
    after a reload (``KeyError: 1`` at test time).
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key)
    return str(key)


def pack_other(value: Any) -> Any:
    """A model's ``other_parameter()`` as tensors and plain data (reversed by :func:`unpack_other`).

    numpy arrays and scipy sparse matrices (EASE, ItemKNN, ...) are stored as tensors with a
    marker; ``nn.Module`` values (DIN's ``embedding_layer``) are left out, since they are
    sub-modules whose weights the ``state_dict`` already holds; anything else that is not plain
    data is left out too.
    """
    if isinstance(value, torch.nn.Module):
        return _SKIP
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))} if value.dtype != object else _SKIP
    if type(value).__module__.startswith("scipy.sparse"):
        coo = value.tocoo()
        return {"__scipy_sparse__": value.format, "shape": list(coo.shape), "row": torch.from_numpy(coo.row.astype(np.int64)),
                "col": torch.from_numpy(coo.col.astype(np.int64)), "data": torch.from_numpy(np.asarray(coo.data))}
    if isinstance(value, dict):
        packed = {_packed_key(k): pack_other(v) for k, v in value.items()}
        return {k: v for k, v in packed.items() if v is not _SKIP}
    if isinstance(value, (list, tuple)):
        packed = [pack_other(v) for v in value]
        return _SKIP if any(v is _SKIP for v in packed) else packed
    if isinstance(value, (np.generic, enum.Enum, bool, int, float, str)) or value is None:
        return to_plain(value)
    return _SKIP


def unpack_other(value: Any) -> Any:
    """Reverse :func:`pack_other`: numpy arrays and scipy matrices come back as they were."""
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__scipy_sparse__" in value:
            import scipy.sparse as sp

            coo = sp.coo_matrix((value["data"].numpy(), (value["row"].numpy(), value["col"].numpy())),
                                shape=tuple(value["shape"]))
            return coo.asformat(value["__scipy_sparse__"])
        return {k: unpack_other(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack_other(v) for v in value]
    return value


def plain_config(config: Any) -> dict:
    """The parts of a RecBole ``Config`` a checkpoint needs, as plain data.

    ``final`` is every resolved key (for reading and comparison); ``external`` is what the user
    set (config files, dict and command line) plus model and dataset, enough to rebuild the
    same ``Config`` in :func:`recbole_mtl.pipeline.load_data_and_model`.
    """
    external = dict(getattr(config, "external_config_dict", {}) or {})
    external["model"] = config["model"]
    external["dataset"] = config["dataset"]
    return {
        "final": to_plain(dict(config.final_config_dict)),
        "external": to_plain(external),
    }


def config_differences(saved: dict, config: Any) -> List[str]:
    """Keys whose value in ``config`` differs from the saved final config (run-control keys aside)."""
    current = to_plain(dict(config.final_config_dict))
    return sorted(k for k in set(saved) | set(current)
                  if k not in RUN_CONTROL_KEYS and saved.get(k) != current.get(k))


# -- random-number state ------------------------------------------------------------------------
def _np_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def rng_state(train_data: Any = None) -> dict:
    """Every random-number generator a training epoch draws from, as tensors and plain data."""
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _np_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    generator = getattr(train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: dict, train_data: Any = None) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(train_data, "generator", None)
    if "loader" in state and isinstance(generator, torch.Generator):
        generator.set_state(state["loader"])


# -- reading ------------------------------------------------------------------------------------
def load_checkpoint(path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` and explain every way it can fail.

    Raises:
        CheckpointError: the file is missing, holds pickled objects, is truncated or corrupt,
            or is not a checkpoint of this plugin.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint not found: {path}. Train first (it is written under `checkpoint_dir`) "
            "or pass the path of an existing .pth file."
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled Python objects, not only tensors and "
            f"plain data ({str(e).splitlines()[0][:200]}). Checkpoints written by plain RecBole "
            "pickle the whole Config; re-train with recbole_mtl to get a safe checkpoint."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else 'no detail'}). Use an earlier "
            "checkpoint or re-train."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a recbole_mtl checkpoint (no 'state_dict' entry). Pass a .pth file "
            "written by run_recbole_mtl.py."
        )
    return checkpoint


def load_model_state(model: torch.nn.Module, checkpoint: dict, path: str) -> None:
    """Put a checkpoint's weights and ``other_parameter`` into ``model``, with a clear error if they do not fit."""
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:200]}...). It was "
            f"written by {checkpoint['config']['final'].get('model')} with other settings; resume with "
            "the settings it was trained with, or start without it."
        ) from None
    load_other(model, checkpoint)


def restore_model(trainer: Any, model_file: Any = None) -> None:
    """Load a trainer's model from ``model_file`` (default: its best checkpoint), safely."""
    path = str(model_file or trainer.saved_model_file)
    load_model_state(trainer.model, load_checkpoint(path, map_location=trainer.device), path)
    trainer.logger.info(f"Loading model structure and parameters from {path}")


def load_other(model: torch.nn.Module, checkpoint: dict) -> None:
    """The model's ``load_other_parameter`` with the checkpoint's unpacked ``other_parameter``."""
    other = checkpoint.get("other_parameter")
    model.load_other_parameter(unpack_other(other) if other else other)


# -- writing ------------------------------------------------------------------------------------
def state(trainer: Any, epoch: int) -> dict:
    """A trainer's checkpoint after ``epoch``: plain config, weights, optimizer, early-stopping state."""
    return {
        "format": FORMAT,
        "config": plain_config(trainer.config),
        "dataset": dataset_fingerprint(trainer.config),
        "epoch": int(epoch),
        "cur_step": int(trainer.cur_step),
        "best_valid_score": float(trainer.best_valid_score),
        "state_dict": trainer.model.state_dict(),
        "other_parameter": pack_other(trainer.model.other_parameter()),
        "optimizer": trainer.optimizer.state_dict(),
    }


def save(trainer: Any, epoch: int, path) -> str:
    """Write :func:`state` to ``path`` atomically; returns ``path``."""
    atomic_torch_save(state(trainer, epoch), path)
    return os.fspath(path)


def last_checkpoint_path(config: Any) -> str:
    """Where every finished epoch of a run is saved: ``<checkpoint_dir>/<model>-<dataset>-last.pth``."""
    return os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-last.pth")


def save_last_checkpoint(trainer: Any, epoch: int, train_data: Any) -> str:
    """Write ``trainer``'s state after ``epoch`` to its ``-last.pth`` file, atomically."""
    checkpoint = state(trainer, epoch)
    checkpoint.update({
        "kind": "last",
        "best_model_file": trainer.saved_model_file,
        "best_valid_result": to_plain(trainer.best_valid_result),
        "train_loss_dict": to_plain(trainer.train_loss_dict),
        "rng": rng_state(train_data),
    })
    path = last_checkpoint_path(trainer.config)
    atomic_torch_save(checkpoint, path)
    trainer.last_checkpoint_file = path
    return path


def resume(trainer: Any, checkpoint: dict, path: str) -> None:
    """Continue ``trainer`` from a checkpoint it did not write itself (model, optimizer, epoch).

    A ``-last.pth`` checkpoint also restores the best-so-far result, the file the best model is
    saved to, and (at the start of the next ``fit``) every random-number generator.
    """
    saved_model = checkpoint["config"]["final"]["model"]
    if saved_model.lower() != trainer.config["model"].lower():
        raise CheckpointError(
            f"checkpoint {path} was trained with model {saved_model}, but this run uses "
            f"{trainer.config['model']}. Resume with --model={saved_model}, or start without the checkpoint."
        )
    differences = config_differences(checkpoint["config"]["final"], trainer.config)
    if differences:
        trainer.logger.warning(
            f"resuming from {path} with settings that differ from the ones it was trained "
            f"with: {', '.join(differences[:12])}{' ...' if len(differences) > 12 else ''}; the "
            "result will not match an uninterrupted run."
        )
    load_model_state(trainer.model, checkpoint, path)
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.start_epoch = checkpoint["epoch"] + 1
    trainer.cur_step = checkpoint["cur_step"]
    trainer.best_valid_score = checkpoint["best_valid_score"]
    if checkpoint.get("kind") == "last":
        trainer.saved_model_file = checkpoint.get("best_model_file") or trainer.saved_model_file
        trainer.best_valid_result = checkpoint.get("best_valid_result")
        trainer.train_loss_dict = {int(k): v for k, v in (checkpoint.get("train_loss_dict") or {}).items()}
        trainer._pending_rng_state = checkpoint.get("rng")
    else:
        trainer.saved_model_file = path


# -- the per-rank files of a multi-process run --------------------------------------------------
def shard_path(path: str, rank: int, world: int) -> str:
    """``saved/MTLRec-x.pth`` -> ``saved/MTLRec-x.rank0-of-2.pth``."""
    return f"{unsharded_path(path)[:-4]}.rank{rank}-of-{world}.pth"


def is_shard_file(path) -> bool:
    return bool(_SHARD_RE.search(str(path)))


def unsharded_path(path) -> str:
    """``<name>.rank<r>-of-<W>.pth`` or ``<name>.pth`` -> ``<name>.pth``."""
    path = str(path)
    if is_shard_file(path):
        return _SHARD_RE.sub(".pth", path)
    return path if path.endswith(".pth") else path + ".pth"


def shard_sets(path: str) -> Dict[int, Dict[int, str]]:
    """Every per-rank file beside ``path``, as ``{world size: {rank: file}}`` (empty if none).

    The world size is read from the file names (``.rank<r>-of-<W>.pth``), never guessed.
    """
    stem = unsharded_path(path)[:-4]
    found: Dict[int, Dict[int, str]] = {}
    for f in glob.glob(glob.escape(stem) + ".rank*-of-*.pth"):
        m = _SHARD_RE.search(f)
        if m and f[: m.start()] == stem:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = f
    return found


def shard_files(path: str) -> List[str]:
    """The per-rank files written for ``path``, ordered by rank (clear error when incomplete)."""
    stem = unsharded_path(path)[:-4]
    found = shard_sets(path)
    if not found:
        raise ConfigError(f"no sharded checkpoint files {stem}.rank<r>-of-<W>.pth beside {path}.")
    if len(found) > 1:
        raise ConfigError(f"sharded checkpoint files of several world sizes {sorted(found)} beside {path}; "
                          "keep one set.")
    (world, by_rank), = found.items()
    missing = sorted(set(range(world)) - set(by_rank))
    if missing:
        raise ConfigError(f"sharded checkpoint {stem} lacks the files of ranks {missing} (of {world}).")
    return [by_rank[r] for r in range(world)]


def rank_file(path: str, rank: int, world: int) -> str:
    """The file one rank of a ``world``-process run reads for ``path``.

    Its own per-rank file when there is one, else the single-process file ``path``.

    Raises:
        ConfigError: only per-rank files of another number of processes exist.
    """
    path = unsharded_path(path)
    mine = shard_path(path, rank, world)
    if os.path.isfile(mine) or os.path.isfile(path):
        return mine if os.path.isfile(mine) else path
    others = sorted(w for w in shard_sets(path) if w != world)
    if others:
        raise ConfigError(f"{shard_path(path, 0, others[0])} was written by a different number of processes "
                          f"than this run's {world}; resume with the same --nproc, or export it "
                          f"(run_recbole_mtl.py export --checkpoint={path}) and resume from the export.")
    return path


def merge_shards(states: List[dict]) -> Dict[str, torch.Tensor]:
    """Full tables from the sharded table states of every rank (single-process state_dict keys).

    Args:
        states: the ``sparse_optimizer`` entry of ranks 0..W-1 (``{"rank", "world_size",
            "tables": {key: {"size", "shards": [(offsets, tensor)]}}, ...}``).
    """
    ranks = sorted(s["rank"] for s in states)
    if ranks != list(range(states[0]["world_size"])):
        raise ConfigError(f"need the shards of ranks 0..{states[0]['world_size'] - 1}, got ranks {ranks}.")
    full: Dict[str, torch.Tensor] = {}
    filled: Dict[str, torch.Tensor] = {}
    for rank_state in states:
        for key, entry in rank_state["tables"].items():
            for offsets, tensor in entry["shards"]:
                if key not in full:
                    full[key] = torch.zeros(entry["size"], dtype=tensor.dtype)
                    filled[key] = torch.zeros(entry["size"], dtype=torch.bool)
                index = tuple(slice(o, o + n) for o, n in zip(offsets, tensor.shape))
                full[key][index] = tensor
                filled[key][index] = True
    sizes = {k: e["size"] for s in states for k, e in s["tables"].items()}
    missing = sorted(k for k in sizes if k not in filled or not bool(filled[k].all()))
    if missing:
        raise ConfigError(f"the shards do not cover tables {missing}: a rank's checkpoint file is missing.")
    return full


def join_shards(path: str) -> dict:
    """The single-process checkpoint of the per-rank files of ``path``, in memory (nothing is written).

    Args:
        path: ``<name>.pth`` (or one of its ``<name>.rank<r>-of-<W>.pth`` files).

    Returns:
        The checkpoint dict :func:`export_checkpoint` writes: rank 0's entries, full tables in
        ``state_dict`` (``sparse.<table>``), no fused-optimizer accumulators, ``exported_from``.
    """
    states = [load_checkpoint(f) for f in shard_files(path)]
    sparse = [s["other_parameter"]["sparse_optimizer"] for s in states]
    full = merge_shards(sparse)
    checkpoint = dict(states[0])
    checkpoint["state_dict"] = dict(states[0]["state_dict"])
    checkpoint["state_dict"].update({f"sparse.{k}": v for k, v in full.items()})
    checkpoint["other_parameter"] = {"sparse_optimizer": {}}
    checkpoint["exported_from"] = {"world_size": sparse[0]["world_size"], "plan": sparse[0]["plan"]}
    return checkpoint


def load_single_or_sharded(path) -> tuple[dict, str]:
    """A checkpoint for one process from ``path``: the single-process file ``<name>.pth`` when it
    exists, else its per-rank files joined in memory (:func:`join_shards`).

    Returns:
        ``(checkpoint, what was read)``: the file, or ``<name>.rank*-of-<W>.pth``.
    """
    path = os.fspath(path)
    single = unsharded_path(path)
    if os.path.isfile(path) and not is_shard_file(path):
        return load_checkpoint(path), path
    if os.path.isfile(single):
        return load_checkpoint(single), single
    found = shard_sets(single)
    if not found:
        load_checkpoint(path)  # raises: not found, naming the file
    checkpoint = join_shards(single)
    world = checkpoint["exported_from"]["world_size"]
    return checkpoint, f"{single[:-4]}.rank*-of-{world}.pth"


def export_checkpoint(path: str, out: Optional[str] = None) -> str:
    """Join the per-rank files of ``path`` into one single-process checkpoint.

    Args:
        path: ``<name>.pth`` whose ``<name>.rank<r>-of-<W>.pth`` files exist.
        out: where to write (default ``path``).

    Returns:
        The written file. It loads with ``weights_only=True``, and ``run_recbole_mtl.py``
        evaluates or resumes it in one process; the tables' fused-optimizer accumulators are not
        carried over (they restart from zero if training resumes from it).
    """
    checkpoint = join_shards(path)
    target = out or path
    atomic_torch_save(checkpoint, target)
    getLogger().info(f"exported the sharded checkpoint of {checkpoint['exported_from']['world_size']} ranks "
                     f"to {target}")
    return target


# -- which data a checkpoint belongs to ---------------------------------------------------------
_FINGERPRINTS: Dict[tuple, dict] = {}


def dataset_files(config: Any) -> List[str]:
    """The atomic files of ``config``'s dataset a run reads (``.inter``, ``.user``, ``.item`` and
    ``additional_feat_suffix`` files, those that exist), in a fixed order."""
    name = str(config["dataset"])
    folder = os.path.join(str(config["data_path"]), "")
    if not os.path.isdir(folder):
        return []
    suffixes = ["inter", "user", "item"] + list(config["additional_feat_suffix"] or [])
    files = [os.path.join(folder, f"{name}.{suffix}") for suffix in suffixes]
    return [f for f in files if os.path.isfile(f)]


def _file_digest(path: str) -> dict:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FINGERPRINTS:  # hashed once per file version and process, not at every save
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FINGERPRINTS[key] = {"bytes": int(stat.st_size), "sha256": digest.hexdigest()}
    return _FINGERPRINTS[key]


def dataset_fingerprint(config: Any) -> dict:
    """``{"name", "files": {file name: {"bytes", "sha256"}}}`` of the atomic files a run reads."""
    return {"name": str(config["dataset"]),
            "files": {os.path.basename(f): _file_digest(f) for f in dataset_files(config)}}


def check_dataset(checkpoint: dict, path: str, config: Any, model: torch.nn.Module) -> None:
    """Refuse a checkpoint that does not belong to the dataset ``config`` reads.

    Compares the dataset name, the size of every embedding table (users, items, attribute
    tokens) and, for checkpoints that store them, the digests of the atomic files.

    Raises:
        CheckpointError: what differs, and how to point the command at the right data.
    """
    saved_config = checkpoint["config"]["final"]
    trained_on = saved_config.get("dataset")
    fix = (f"Pass the data it was trained on (--data_path=...; it was trained with data_path "
           f"{saved_config.get('data_path')}), or train a model on this data.")
    if trained_on != config["dataset"]:
        raise CheckpointError(f"checkpoint {path} was trained on dataset '{trained_on}', not '{config['dataset']}'. "
                              f"{fix}")
    mine = model.state_dict()
    for key, tensor in checkpoint["state_dict"].items():
        if key.startswith("sparse.") and key in mine and tuple(tensor.shape) != tuple(mine[key].shape):
            table = key.rsplit(".", 2)[-2]
            raise CheckpointError(
                f"checkpoint {path} does not match dataset '{config['dataset']}' in {config['data_path']}: its "
                f"'{table}' table has {tensor.shape[0]} rows (ids, padding included) but the dataset has "
                f"{mine[key].shape[0]}. The data changed since training. {fix}")
    saved_files = (checkpoint.get("dataset") or {}).get("files")
    if not saved_files:
        return
    now = dataset_fingerprint(config)["files"]
    changed = sorted(f for f in set(saved_files) | set(now) if saved_files.get(f) != now.get(f))
    if changed:
        details = ", ".join(
            f"{f} ({'missing now' if f not in now else 'new' if f not in saved_files else 'other contents'})"
            for f in changed)
        raise CheckpointError(
            f"checkpoint {path} was trained on other files of dataset '{config['dataset']}' than those in "
            f"{config['data_path']}: {details}. Ids, histories and labels would not mean what the model "
            f"learned. {fix}")
