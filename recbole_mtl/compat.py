"""Compatibility layer between RecBole 1.2.1 and today's stack (torch >= 2.6, numpy < 2).

This is the only module that patches RecBole. It fixes three things:

* **Safe checkpoints.** RecBole pickles its whole ``Config`` object into every checkpoint and
  reads it back with a bare ``torch.load``; torch >= 2.6 loads with ``weights_only=True`` by
  default, so every run with ``saved=True`` crashes at test time. Here checkpoints hold tensors and
  plain data only (the config as a plain dict), are written atomically (temp file, fsync, rename),
  and are read with ``torch.load(..., weights_only=True)``.
* **No ray on the train/evaluate path.** ``recbole.quick_start`` imports ``ray.tune`` at module
  level although only hyper-parameter tuning uses it. When ray is not installed, the module is
  imported with a placeholder ``ray.tune`` whose use raises a clear ``ImportError``, so
  ``recbole.quick_start.run_recbole`` keeps working without ray.
* **Plugin defaults in RecBole's own Config.** RecBole's ``Config`` only reads its own YAML;
  for a plugin model (``run_recbole(model="MTLRec")``) it now also layers the plugin's
  ``properties/`` exactly as :class:`recbole_mtl.config.Config` does. Baselines are untouched.
* **Logging.** Importing torchrec adds a handler to the root logger, which turns RecBole's
  ``init_logger`` (a ``logging.basicConfig``) into a no-op: no log file, no console log. The
  handler is removed right after the import.
* **Nothing is unpickled.** RecBole ``pickle.load``s a saved dataset
  (``<checkpoint_dir>/<dataset>-<Class>.pth`` or ``dataset_save_path``) and saved dataloaders
  whenever such a file exists, and ``eval``s command-line values; a planted file or argument could
  run code. Here saved datasets/dataloaders are neither written nor read (a warning says so),
  command-line values are parsed with ``ast.literal_eval`` and YAML with a safe loader.
* **Resumable runs.** Every finished epoch writes ``<checkpoint_dir>/<model>-<dataset>-last.pth``
  (model, optimizers, early-stopping state and every random-number generator, the train loader's
  included), so a killed run continues with ``--resume`` and ends where an uninterrupted run ends.
* **RecBole's quick-start with this plugin's checkpoints.** ``recbole.quick_start.
  load_data_and_model`` reads them with ``weights_only=True``; ``tune.report`` (the last line
  of RecBole's ``objective_function``) does nothing without ray, as ray does outside a session.
* **FLOPs.** RecBole's ``get_flops`` (logged only) warns instead of stopping a run whose
  model refuses ``predict`` (GRU4RecCPR, SASRecCPR).
* **Newer scipy.** ``dok_matrix._update`` (gone in scipy 1.13), used by RecBole's graph models, is restored.
* **numpy shims.** RecBole's ``Config.compatibility_settings`` re-adds ``np.float`` and friends,
  which needs numpy < 2; :func:`check_numpy` says so clearly instead of an ``AttributeError``.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import importlib
import importlib.util
import os
import pickle
import random
import re
import sys
import tempfile
import types
import zipfile
from logging import getLogger
from typing import Any

import numpy as np
import torch
import yaml

CHECKPOINT_FORMAT = "recbole_mtl.checkpoint.v1"

_APPLIED = False


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or unsafe to load."""


def check_numpy() -> None:
    """Fail early and clearly when numpy is too new for RecBole 1.2.1."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise ImportError(
            f"RecBole 1.2.1 needs numpy<2 (it uses np.float_), but numpy {np.__version__} is "
            "installed. Fix: pip install 'numpy<2' 'pandas<2.3' 'scipy<1.14' 'scikit-learn<1.6'."
        )


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


_SKIP = object()


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


def _packed_key(key: Any) -> Any:
    """A dict key of ``other_parameter`` as ``weights_only=True`` loads it back: ints stay ints.

    Why: RippleNet's ``ripple_set`` is keyed by user id; keys turned into ``str`` are not found
    after a reload (``KeyError: 1`` at test time).
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key)
    return str(key)


def unpack_other(value: Any) -> Any:
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
    same ``Config`` in :func:`recbole_mtl.quick_start.load_data_and_model`.
    """
    external = dict(getattr(config, "external_config_dict", {}) or {})
    external["model"] = config["model"]
    external["dataset"] = config["dataset"]
    return {
        "final": to_plain(dict(config.final_config_dict)),
        "external": to_plain(external),
    }


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


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` and explain every way it can fail."""
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


def _checkpoint_state(trainer: Any, epoch: int) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "config": plain_config(trainer.config),
        "epoch": int(epoch),
        "cur_step": int(trainer.cur_step),
        "best_valid_score": float(trainer.best_valid_score),
        "state_dict": trainer.model.state_dict(),
        "other_parameter": pack_other(trainer.model.other_parameter()),
        "optimizer": trainer.optimizer.state_dict(),
    }


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """Replacement for ``Trainer._save_checkpoint``: plain data, atomic write."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    atomic_torch_save(_checkpoint_state(self, epoch), saved_model_file)
    if verbose:
        from recbole.utils import set_color

        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def last_checkpoint_path(config: Any) -> str:
    """Where every finished epoch of a run is saved: ``<checkpoint_dir>/<model>-<dataset>-last.pth``."""
    return os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-last.pth")


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


#: Keys that may differ between a run and the run it resumes.
_RUN_CONTROL_KEYS = {"checkpoint", "resume", "epochs", "show_progress", "state", "log_wandb",
                     "checkpoint_dir", "worker", "gpu_id", "use_gpu", "device", "local_rank"}


def _config_differences(saved: dict, config: Any) -> list[str]:
    current = to_plain(dict(config.final_config_dict))
    return sorted(k for k in set(saved) | set(current)
                  if k not in _RUN_CONTROL_KEYS and saved.get(k) != current.get(k))


def _load_model_state(trainer: Any, checkpoint: dict, path: str) -> None:
    try:
        trainer.model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({str(e).splitlines()[0][:200]}...). It was "
            f"written by {checkpoint['config']['final'].get('model')} with other settings; resume with "
            "the settings it was trained with, or start without it."
        ) from None
    other = checkpoint.get("other_parameter")
    trainer.model.load_other_parameter(unpack_other(other) if other else other)


def _resume_checkpoint(self, resume_file):
    """Replacement for ``Trainer.resume_checkpoint``: ``weights_only=True``, exact resumption.

    A ``-last.pth`` checkpoint also restores the best-so-far result, the file the best model is
    saved to and every random-number generator, so training continues as if never stopped.
    """
    resume_file = str(resume_file)
    checkpoint = load_checkpoint(resume_file, map_location=self.device)
    saved_model = checkpoint["config"]["final"]["model"]
    if saved_model.lower() != self.config["model"].lower():
        raise CheckpointError(
            f"checkpoint {resume_file} was trained with model {saved_model}, but this run uses "
            f"{self.config['model']}. Resume with --model={saved_model}, or start without the checkpoint."
        )
    differences = _config_differences(checkpoint["config"]["final"], self.config)
    if differences:
        self.logger.warning(
            f"resuming from {resume_file} with settings that differ from the ones it was trained "
            f"with: {', '.join(differences[:12])}{' ...' if len(differences) > 12 else ''}; the "
            "result will not match an uninterrupted run."
        )
    _load_model_state(self, checkpoint, resume_file)
    self.optimizer.load_state_dict(checkpoint["optimizer"])
    self.start_epoch = checkpoint["epoch"] + 1
    self.cur_step = checkpoint["cur_step"]
    self.best_valid_score = checkpoint["best_valid_score"]
    if checkpoint.get("kind") == "last":
        self.saved_model_file = checkpoint.get("best_model_file") or self.saved_model_file
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.train_loss_dict = {int(k): v for k, v in (checkpoint.get("train_loss_dict") or {}).items()}
        self._pending_rng_state = checkpoint.get("rng")
    else:
        self.saved_model_file = resume_file
    self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


def save_last_checkpoint(trainer: Any, epoch: int, train_data: Any) -> str:
    """Write ``trainer``'s state after ``epoch`` to its ``-last.pth`` file, atomically."""
    state = _checkpoint_state(trainer, epoch)
    state.update({
        "kind": "last",
        "best_model_file": trainer.saved_model_file,
        "best_valid_result": to_plain(trainer.best_valid_result),
        "train_loss_dict": to_plain(trainer.train_loss_dict),
        "rng": rng_state(train_data),
    })
    path = last_checkpoint_path(trainer.config)
    atomic_torch_save(state, path)
    trainer.last_checkpoint_file = path
    return path


def _wrap_fit(original):
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        pending = getattr(self, "_pending_rng_state", None)
        if pending is not None:
            set_rng_state(pending, train_data)
            self._pending_rng_state = None
        if self.start_epoch > 0 and self.start_epoch >= self.epochs:
            self.logger.info(f"training already finished {self.start_epoch} epochs; nothing left to train.")
            return self.best_valid_score, self.best_valid_result
        if not saved or not self.config["single_spec"]:  # several processes: per-rank checkpoints instead
            return original(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)
        validates = bool(valid_data) and self.eval_step > 0
        train_epoch = self._train_epoch  # the class's method, bound

        def train_then_save(data, epoch_idx, *args, **kwargs):
            result = train_epoch(data, epoch_idx, *args, **kwargs)
            if not (validates and (epoch_idx + 1) % self.eval_step == 0):
                self.train_loss_dict[epoch_idx] = sum(result) if isinstance(result, tuple) else result
                save_last_checkpoint(self, epoch_idx, train_data)
            return result

        def after_validation(epoch_idx, valid_score):
            save_last_checkpoint(self, epoch_idx, train_data)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        self._train_epoch = train_then_save
        try:
            return original(self, train_data, valid_data, verbose, saved, show_progress, after_validation)
        finally:
            del self._train_epoch

    fit.__doc__ = original.__doc__
    fit.__wrapped__ = original
    return fit


def restore_model(trainer: Any, model_file: Any = None) -> None:
    """Load a trainer's model from ``model_file`` (default: its best checkpoint), safely."""
    checkpoint_file = model_file or trainer.saved_model_file
    checkpoint = load_checkpoint(checkpoint_file, map_location=trainer.device)
    _load_model_state(trainer, checkpoint, str(checkpoint_file))
    trainer.logger.info(f"Loading model structure and parameters from {checkpoint_file}")


def _wrap_evaluate(original):
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            restore_model(self, model_file)
        return original(self, eval_data, load_best_model=False, show_progress=show_progress)

    evaluate.__doc__ = original.__doc__
    evaluate.__wrapped__ = original
    return evaluate


def _save_pretrained_model(self, epoch, saved_model_file):
    """Replacement for ``PretrainTrainer.save_pretrained_model``: plain data, atomic write."""
    state = _checkpoint_state(self, epoch)
    atomic_torch_save(state, saved_model_file)
    self.saved_model_file = saved_model_file


def _dataset_class(config: Any):
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    if hasattr(module, config["model"] + "Dataset"):
        return getattr(module, config["model"] + "Dataset")
    names = {ModelType.SEQUENTIAL: "SequentialDataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}
    return getattr(module, names.get(config["MODEL_TYPE"], "Dataset"))


def safe_create_dataset(config: Any):
    """``recbole.data.create_dataset`` without its ``pickle.load`` of a saved dataset."""
    dataset_class = _dataset_class(config)
    saved = config["dataset_save_path"] or os.path.join(
        config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth")
    logger = getLogger(__name__)
    if os.path.exists(saved):
        logger.warning(f"{saved} is a pickled dataset; it is not loaded (unpickling a file can run "
                       "code). The dataset is built from its atomic files.")
    if config["save_dataset"]:
        logger.warning("save_dataset=True is ignored: saved datasets are pickles, which are never loaded.")
    return dataset_class(config)


def _no_saved_dataloaders(config: Any):
    """``load_split_dataloaders`` replacement: saved dataloaders are pickles and are never read."""
    default = os.path.join(config["checkpoint_dir"], f"{config['dataset']}-for-{config['model']}-dataloader.pth")
    path = config["dataloaders_save_path"] or default
    if os.path.exists(path):
        getLogger(__name__).warning(f"{path} holds pickled dataloaders; it is not loaded (unpickling "
                                    "a file can run code). The splits are built from the dataset.")
    return None


def _skip_saving_dataloaders(config: Any, dataloaders: Any) -> None:
    getLogger(__name__).warning("save_dataloaders=True is ignored: saved dataloaders are pickles, "
                                "which are never loaded.")


def literal_convert(config_dict: dict) -> dict:
    """Parse string config values as Python literals, never with ``eval``.

    ``'1'`` -> 1, ``'[1,2]'`` -> [1, 2], ``'true'`` -> True, ``'[a,b]'`` -> ['a', 'b'];
    anything else stays a string.
    """
    for key, param in config_dict.items():
        if not isinstance(param, str):
            continue
        try:
            value = ast.literal_eval(param)
            if not isinstance(value, (str, int, float, list, tuple, dict, bool, enum.Enum, type(None))):
                value = param
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = {"true": True, "false": False}.get(param.lower(), param)
            if param.startswith("[") and param.endswith("]"):  # --tasks=[sequence,interest]
                value = [literal_convert({"v": x.strip()})["v"] for x in param[1:-1].split(",") if x.strip()]
        config_dict[key] = value
    return config_dict


class SafeConfigLoader(yaml.SafeLoader):
    """RecBole's YAML loader (floats such as ``1e-3`` read as floats) on ``yaml.SafeLoader``."""


SafeConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _convert_config_dict(self, config_dict):
    return literal_convert(config_dict)


def _build_yaml_loader(self):
    return SafeConfigLoader


def _patch_safe_loading() -> None:
    import recbole.data
    import recbole.data.utils as data_utils
    from recbole.config import configurator

    configurator.Config._convert_config_dict = _convert_config_dict
    configurator.Config._build_yaml_loader = _build_yaml_loader
    data_utils.create_dataset = safe_create_dataset
    data_utils.load_split_dataloaders = _no_saved_dataloaders
    data_utils.save_split_dataloaders = _skip_saving_dataloaders
    recbole.data.create_dataset = safe_create_dataset
    recbole.data.load_split_dataloaders = _no_saved_dataloaders
    quick_start = sys.modules.get("recbole.quick_start.quick_start")
    if quick_start is not None:
        quick_start.create_dataset = safe_create_dataset


def _tune_report_outside_session(*args: Any, **kwargs: Any) -> None:
    """``ray.tune.report`` as real ray behaves outside a Tune session: nothing is reported.

    Why: RecBole's ``objective_function`` ends with ``tune.report(**test_result)`` even when
    no Tune session runs (its own tests, hyperopt tuning); ray then only warns, once.
    """
    global _TUNE_REPORT_WARNED
    if not _TUNE_REPORT_WARNED:
        _TUNE_REPORT_WARNED = True
        getLogger(__name__).warning("tune.report: no Tune session (ray is not installed); the "
                                    "metrics are returned by the caller, not reported.")


_TUNE_REPORT_WARNED = False


class _RayTunePlaceholder(types.ModuleType):
    """Stands in for ``ray.tune`` inside ``recbole.quick_start`` when ray is absent.

    ``report`` does what ray does outside a Tune session (nothing); every other name is only
    needed by a real Tune run and raises a clear ``ImportError``.
    """

    report = staticmethod(_tune_report_outside_session)

    def __getattr__(self, name):
        raise ImportError(
            f"ray.tune.{name} is needed only for RecBole's hyper-parameter tuning and ray is not "
            "installed. Fix: pip install 'ray[tune]==2.6.3' 'setuptools>=77,<81'."
        )


def _import_quick_start_without_ray() -> None:
    if "recbole.quick_start" in sys.modules or importlib.util.find_spec("ray") is not None:
        return
    ray = types.ModuleType("ray")
    ray.tune = _RayTunePlaceholder("ray.tune")
    saved = {k: sys.modules.get(k) for k in ("ray", "ray.tune")}
    sys.modules["ray"], sys.modules["ray.tune"] = ray, ray.tune
    try:
        importlib.import_module("recbole.quick_start")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _recbole_load_data_and_model(model_file: str):
    """``recbole.quick_start.load_data_and_model`` for this plugin's checkpoints.

    Why: RecBole's version reads the checkpoint with a bare ``torch.load`` (``weights_only=True``
    on torch >= 2.6) and expects a pickled ``Config`` in it; checkpoints here hold plain data,
    so the plugin's loader (same signature and return value) rebuilds the ``Config`` instead.
    """
    from recbole_mtl.quick_start import load_data_and_model

    return load_data_and_model(model_file)


def _patch_quick_start_load_data_and_model() -> None:
    quick_start = sys.modules.get("recbole.quick_start.quick_start")
    if quick_start is None:  # ray is installed: importing quick_start here would import ray
        return
    quick_start.load_data_and_model = _recbole_load_data_and_model
    sys.modules["recbole.quick_start"].load_data_and_model = _recbole_load_data_and_model


def _dok_update(self, data: dict) -> None:
    """``dok_matrix._update`` as older scipy had it: store ``{(row, col): value}`` unchecked.

    Why: RecBole's LightGCN, NGCF, SpectralCF, GCMC, NCL, KGIN and MCCLK build their adjacency
    matrix with it; scipy 1.13 keeps the entries in ``self._dict`` and has no ``_update``.
    """
    self._dict.update(data)


def _patch_scipy_dok_update() -> None:
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update") and hasattr(sp.dok_matrix((1, 1)), "_dict"):
        sp.dok_matrix._update = _dok_update


def _flops_or_warning(original):
    """``recbole.utils.get_flops`` that logs a warning instead of stopping the run when it fails.

    Why: RecBole counts FLOPs (a number it only logs) by calling ``predict`` on a copy of the
    model before training; GRU4RecCPR and SASRecCPR refuse ``predict`` (``assert False``), so
    ``run_recbole`` stopped before training for them.
    """

    def get_flops(model, dataset, device, logger, transform, verbose=False):
        try:
            return original(model, dataset, device, logger, transform, verbose)
        except Exception as e:  # noqa: BLE001  (the model itself is untouched: get_flops works on a copy)
            logger.warning(f"FLOPs not counted: {type(model).__name__}.predict failed on one interaction "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'}).")
            return None

    get_flops.__wrapped__ = original
    return get_flops


def _patch_get_flops() -> None:
    import recbole.utils
    import recbole.utils.utils

    if hasattr(recbole.utils.get_flops, "__wrapped__"):
        return
    patched = _flops_or_warning(recbole.utils.utils.get_flops)
    recbole.utils.utils.get_flops = recbole.utils.get_flops = patched
    quick_start = sys.modules.get("recbole.quick_start.quick_start")
    if quick_start is not None:
        quick_start.get_flops = patched


def _import_torchrec_keeping_root_logger() -> None:
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    importlib.import_module("torchrec")
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)


def _wrap_load_internal_config(original):
    def _load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        from recbole_mtl.config import Config, layer_plugin_properties, properties_dir

        if not isinstance(self, Config) and getattr(model_class, "__module__", "").startswith("recbole_mtl."):
            layer_plugin_properties(self, model, dataset, properties_dir(), model_class)

    return _load_internal_config_dict


def apply() -> None:
    """Apply every patch once. Called by ``import recbole_mtl``."""
    global _APPLIED
    if _APPLIED:
        return
    check_numpy()
    from recbole.config import configurator
    from recbole.trainer import trainer as rb_trainer

    configurator.Config._load_internal_config_dict = _wrap_load_internal_config(
        configurator.Config._load_internal_config_dict
    )
    rb_trainer.Trainer._save_checkpoint = _save_checkpoint
    rb_trainer.Trainer.resume_checkpoint = _resume_checkpoint
    rb_trainer.Trainer.evaluate = _wrap_evaluate(rb_trainer.Trainer.evaluate)
    rb_trainer.Trainer.fit = _wrap_fit(rb_trainer.Trainer.fit)
    rb_trainer.PretrainTrainer.save_pretrained_model = _save_pretrained_model
    _import_quick_start_without_ray()
    _patch_safe_loading()
    _patch_quick_start_load_data_and_model()
    _patch_scipy_dok_update()
    _patch_get_flops()
    _import_torchrec_keeping_root_logger()
    _APPLIED = True
    getLogger(__name__).debug("recbole_mtl compatibility patches applied")
