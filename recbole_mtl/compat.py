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
* **numpy shims.** RecBole's ``Config.compatibility_settings`` re-adds ``np.float`` and friends,
  which needs numpy < 2; :func:`check_numpy` says so clearly instead of an ``AttributeError``.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import os
import pickle
import sys
import tempfile
import types
import zipfile
from logging import getLogger
from typing import Any

import numpy as np
import torch

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
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return str(value)


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
        "other_parameter": to_plain(trainer.model.other_parameter()),
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


def _resume_checkpoint(self, resume_file):
    """Replacement for ``Trainer.resume_checkpoint`` that loads with ``weights_only=True``."""
    resume_file = str(resume_file)
    checkpoint = load_checkpoint(resume_file, map_location=self.device)
    self.saved_model_file = resume_file
    self.start_epoch = checkpoint["epoch"] + 1
    self.cur_step = checkpoint["cur_step"]
    self.best_valid_score = checkpoint["best_valid_score"]
    saved_model = checkpoint["config"]["final"]["model"]
    if saved_model.lower() != self.config["model"].lower():
        self.logger.warning(
            f"checkpoint {resume_file} was trained with model {saved_model}, "
            f"but this run uses {self.config['model']}; its weights may not fit."
        )
    self.model.load_state_dict(checkpoint["state_dict"])
    self.model.load_other_parameter(checkpoint.get("other_parameter"))
    self.optimizer.load_state_dict(checkpoint["optimizer"])
    self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


def restore_model(trainer: Any, model_file: Any = None) -> None:
    """Load a trainer's model from ``model_file`` (default: its best checkpoint), safely."""
    checkpoint_file = model_file or trainer.saved_model_file
    checkpoint = load_checkpoint(checkpoint_file, map_location=trainer.device)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
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


class _RayTunePlaceholder(types.ModuleType):
    """Stands in for ``ray.tune`` inside ``recbole.quick_start`` when ray is absent."""

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
    rb_trainer.PretrainTrainer.save_pretrained_model = _save_pretrained_model
    _import_quick_start_without_ray()
    _import_torchrec_keeping_root_logger()
    _APPLIED = True
    getLogger(__name__).debug("recbole_mtl compatibility patches applied")
