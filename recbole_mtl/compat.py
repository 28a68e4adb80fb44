"""What RecBole 1.2.1 needs to run on today's stack (torch >= 2.6, numpy < 2, no ray), one reason each.

The only module that changes RecBole's own functions; :func:`apply` (called by
``import recbole_mtl``) installs every fix once. The checkpoint format itself lives in
:mod:`recbole_mtl.checkpoint`; protection against pickles, ``eval`` and unsafe YAML in
:mod:`recbole_mtl.hardening`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from logging import getLogger
from typing import Any

import numpy as np
import torch

from recbole_mtl import checkpoint

_APPLIED = False


# RecBole 1.2.1's Config re-adds np.float_ and friends, gone in numpy 2: say so before it fails.
def check_numpy() -> None:
    """Fail early and clearly when numpy is too new for RecBole 1.2.1."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise ImportError(
            f"RecBole 1.2.1 needs numpy<2 (it uses np.float_), but numpy {np.__version__} is "
            "installed. Fix: pip install 'numpy<2' 'pandas<2.3' 'scipy<1.14' 'scikit-learn<1.6'."
        )


# torch >= 2.6 loads with weights_only=True and RecBole pickles its Config: write plain data instead.
def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """Replacement for ``Trainer._save_checkpoint``: plain data, atomic write."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    checkpoint.save(self, epoch, saved_model_file)
    if verbose:
        from recbole.utils import set_color

        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
    if getattr(self, "_epoch_end_on_save", False) and epoch >= 0:  # no validation: this is the epoch's end
        self.on_epoch_end(epoch)


# torch >= 2.6: RecBole's bare torch.load of its own checkpoints fails; read them with weights_only=True.
def _resume_checkpoint(self, resume_file):
    """Replacement for ``Trainer.resume_checkpoint``: ``weights_only=True``, exact resumption."""
    resume_file = str(resume_file)
    state = checkpoint.load_checkpoint(resume_file, map_location=self.device)
    checkpoint.resume(self, state, resume_file)
    self.logger.info(f"Checkpoint {resume_file} loaded. Resume training from epoch {self.start_epoch}")


# torch >= 2.6: Trainer.evaluate(load_best_model=True) reloads with a bare torch.load; reload safely.
def _wrap_evaluate(original):
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            checkpoint.restore_model(self, model_file)
        return original(self, eval_data, load_best_model=False, show_progress=show_progress)

    evaluate.__doc__ = original.__doc__
    evaluate.__wrapped__ = original
    return evaluate


# PretrainTrainer pickles the Config too: plain data, atomic write.
def _save_pretrained_model(self, epoch, saved_model_file):
    """Replacement for ``PretrainTrainer.save_pretrained_model``: plain data, atomic write."""
    checkpoint.save(self, epoch, saved_model_file)
    self.saved_model_file = saved_model_file


# RecBole's fit has no end-of-epoch hook for epochs that do not validate, nor exact resumption.
def on_epoch_end(self, epoch_idx: int) -> None:
    """The trainer's hook after a finished epoch (its validation and early stopping included).

    Writes ``<checkpoint_dir>/<model>-<dataset>-last.pth`` (model, optimizers, early-stopping
    state, every random-number generator) so that a killed run continues with ``--resume``. Runs
    after every epoch that validates (RecBole's end-of-epoch ``callback_fn``), when validation
    is off after every epoch (where RecBole saves the model), and after the last epoch of ``fit``.
    Subclasses may extend it.
    """
    if getattr(self, "_last_checkpoints", False):
        checkpoint.save_last_checkpoint(self, epoch_idx, self._epoch_train_data)
        self._last_epoch_ended = epoch_idx


def _wrap_fit(original):
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        pending = getattr(self, "_pending_rng_state", None)
        if pending is not None:
            checkpoint.set_rng_state(pending, train_data)
            self._pending_rng_state = None
        if self.start_epoch > 0 and self.start_epoch >= self.epochs:
            self.logger.info(f"training already finished {self.start_epoch} epochs; nothing left to train.")
            return self.best_valid_score, self.best_valid_result
        validates = bool(valid_data) and self.eval_step > 0
        # several processes write per-rank files instead (RecBole's own DDP, or the plugin's)
        self._last_checkpoints = saved and self.config["single_spec"] and not getattr(self, "is_distributed", False)
        self._epoch_train_data = train_data
        self._epoch_end_on_save = not validates

        def end_of_validated_epoch(epoch_idx, valid_score):
            self.on_epoch_end(epoch_idx)
            if callback_fn:
                callback_fn(epoch_idx, valid_score)

        self._last_epoch_ended = self.start_epoch - 1
        try:
            result = original(self, train_data, valid_data, verbose, saved, show_progress, end_of_validated_epoch)
            trained = max(self.train_loss_dict, default=-1)
            if trained > self._last_epoch_ended:  # the last epochs did not validate (eval_step > 1)
                self.on_epoch_end(trained)
            return result
        finally:
            self._epoch_end_on_save = False
            self._epoch_train_data = None

    fit.__doc__ = original.__doc__
    fit.__wrapped__ = original
    return fit


# RecBole's objective_function ends with tune.report(**test_result): outside a Tune session ray does nothing.
def _tune_report_outside_session(*args: Any, **kwargs: Any) -> None:
    """``ray.tune.report`` as real ray behaves outside a Tune session: nothing is reported (one warning)."""
    global _TUNE_REPORT_WARNED
    if not _TUNE_REPORT_WARNED:
        _TUNE_REPORT_WARNED = True
        getLogger(__name__).warning("tune.report: no Tune session (ray is not installed); the "
                                    "metrics are returned by the caller, not reported.")


_TUNE_REPORT_WARNED = False


# recbole.quick_start imports ray.tune at module level although only tuning uses it: import it without ray.
class _RayTunePlaceholder(types.ModuleType):
    """Stands in for ``ray.tune`` inside ``recbole.quick_start`` when ray is absent.

    ``report`` does what ray does outside a Tune session (nothing); every other name is only
    needed by a real Tune run and raises a clear ``ImportError``.
    """

    report = staticmethod(_tune_report_outside_session)

    def __getattr__(self, name):
        raise ImportError(
            f"ray.tune.{name} is needed only for RecBole's hyper-parameter tuning (run_hyper) and ray is not "
            "installed. Fix: tune with `python run_recbole_mtl.py benchmark --tune N --models=...` (Optuna, the "
            "same trial budget for every model; docs/benchmark.md), or pip install 'ray[tune]==2.6.3' "
            "'setuptools>=77,<81' for RecBole's own run_hyper."
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


# RecBole's load_data_and_model expects a pickled Config in a bare torch.load: use the plugin's loader.
def _recbole_load_data_and_model(model_file: str):
    """``recbole.quick_start.load_data_and_model`` for this plugin's checkpoints (same signature and return)."""
    from recbole_mtl.quick_start import load_data_and_model

    return load_data_and_model(model_file)


def _patch_quick_start_load_data_and_model() -> None:
    quick_start = sys.modules.get("recbole.quick_start.quick_start")
    if quick_start is None:  # ray is installed: importing quick_start here would import ray
        return
    quick_start.load_data_and_model = _recbole_load_data_and_model
    sys.modules["recbole.quick_start"].load_data_and_model = _recbole_load_data_and_model


# scipy 1.13 dropped dok_matrix._update, which RecBole's graph models (LightGCN, NGCF, ...) call.
def _dok_update(self, data: dict) -> None:
    """``dok_matrix._update`` as older scipy had it: store ``{(row, col): value}`` unchecked."""
    self._dict.update(data)


def _patch_scipy_dok_update() -> None:
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update") and hasattr(sp.dok_matrix((1, 1)), "_dict"):
        sp.dok_matrix._update = _dok_update


# RecBole counts FLOPs (logged only) with predict; GRU4RecCPR/SASRecCPR refuse predict and stopped the run.
def _flops_or_warning(original):
    """``recbole.utils.get_flops`` that logs a warning instead of stopping the run when it fails."""

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


# RecBole's ensure_dir checks, then creates: ranks started together race on ./log (FileExistsError).
def _ensure_dir(dir_path) -> None:
    """``recbole.utils.ensure_dir`` without the race: create the folder unless it exists."""
    import os

    os.makedirs(dir_path, exist_ok=True)


def _patch_ensure_dir() -> None:
    import recbole.data.dataset.dataset
    import recbole.data.utils
    import recbole.trainer.trainer
    import recbole.utils
    import recbole.utils.logger
    import recbole.utils.utils

    for module in (recbole.utils.utils, recbole.utils, recbole.utils.logger, recbole.data.utils,
                   recbole.data.dataset.dataset, recbole.trainer.trainer):
        module.ensure_dir = _ensure_dir


# importing torchrec adds a root-logger handler, which turns RecBole's init_logger (basicConfig) into a no-op.
def _import_torchrec_keeping_root_logger() -> None:
    import logging

    root = logging.getLogger()
    before = list(root.handlers)
    importlib.import_module("torchrec")
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)


# RecBole's own Config reads only its YAML: give plugin models run through it the plugin's defaults too.
def _wrap_load_internal_config(original):
    def _load_internal_config_dict(self, model, model_class, dataset):
        original(self, model, model_class, dataset)
        from recbole_mtl.config import Config, layer_plugin_properties, properties_dir

        if not isinstance(self, Config) and getattr(model_class, "__module__", "").startswith("recbole_mtl."):
            layer_plugin_properties(self, model, dataset, properties_dir(), model_class)

    return _load_internal_config_dict


# RecBole's get_model/get_trainer/create_dataset search only its own modules: enter the plugin's there.
def register_plugin_models() -> list[str]:
    """Make RecBole's own ``get_model``/``get_trainer`` resolve the plugin's models.

    Each plugin model module is entered into RecBole's zoo under
    ``recbole.model.<submodule>.<name>`` (the submodule its ``type`` belongs to), and each plugin
    trainer is added to ``recbole.trainer`` and each model's dataset class to
    ``recbole.data.dataset`` (as ``<Model>Dataset``): the places RecBole's lookups search.

    Returns:
        The names of the registered models.
    """
    import recbole.data.dataset
    import recbole.trainer

    from recbole_mtl import trainer as plugin_trainers
    from recbole_mtl.utils import ZOO_SUBMODULE, plugin_model_modules

    registered = []
    for module_name in plugin_model_modules():
        module = importlib.import_module(module_name)
        stem = module_name.rsplit(".", 1)[1]
        for name in getattr(module, "__all__", ()):
            if name.lower() != stem:
                continue
            model_class = getattr(module, name)
            sub = ZOO_SUBMODULE.get(model_class.type, "sequential_recommender")
            sys.modules[f"recbole.model.{sub}.{stem}"] = module
            trainer = getattr(plugin_trainers, name + "Trainer", None)
            if trainer is not None:
                setattr(recbole.trainer, name + "Trainer", trainer)
            dataset_class = getattr(model_class, "dataset_class", None)
            if dataset_class is not None:  # RecBole's create_dataset looks for <Model>Dataset here
                setattr(recbole.data.dataset, name + "Dataset", dataset_class)
            registered.append(name)
    return registered


# Speed, not breakage: RecBole reads atomic files with pandas' pure-Python parser (about 100 s for a
# 10M-line file here); pandas' C parser gives the same frame for a one-character separator.
class _PandasWithCParser(types.ModuleType):
    """``pandas`` as RecBole's dataset module sees it: ``read_csv(engine="python")`` runs on the C
    parser (with Python's own float rounding) when the separator is one character; everything
    else is pandas itself."""

    def __init__(self, pandas):
        super().__init__("pandas")
        self._pandas = pandas

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pandas, name)

    def read_csv(self, *args: Any, **kwargs: Any):
        separator = kwargs.get("delimiter", kwargs.get("sep"))
        if kwargs.get("engine") == "python" and isinstance(separator, str) and len(separator) == 1:
            kwargs.update(engine="c", float_precision="round_trip")
        return self._pandas.read_csv(*args, **kwargs)


# Speed: RecBole's Interaction turns an array index into a Python list before indexing each
# column (leave-one-out on 10M interactions: about a minute); index with one tensor instead.
def _interaction_getitem(self, index):
    """``Interaction.__getitem__``: the same rows, from an array index without a Python list."""
    if isinstance(index, str):
        return self.interaction[index]
    if isinstance(index, list) and index and isinstance(index[0], (int, np.integer, bool, np.bool_)):
        index = np.asarray(index)
    if isinstance(index, (np.ndarray, torch.Tensor)) and (not isinstance(index, np.ndarray) or index.dtype != object):
        index = torch.as_tensor(index)
        if index.dtype != torch.bool:
            index = index.long()
    from recbole.data.interaction import Interaction

    return Interaction({k: v[index] for k, v in self.interaction.items()})


def _patch_atomic_file_reader() -> None:
    from recbole.data.dataset import dataset as rb_dataset

    if not isinstance(rb_dataset.pd, _PandasWithCParser):
        rb_dataset.pd = _PandasWithCParser(rb_dataset.pd)


# Memory: RecBole's loaders index their rows through ``list(range(n))`` (and a second one for
# the DistributedSampler of a multi-process run): 36 bytes a row, 1.7 GB per rank for 25M
# training rows. A ``range`` gives the data loader the same indices (len, indexing) in O(1).
def _range_not_list(values=(), /):
    """``list`` as RecBole's loader module sees it: a ``range`` stays a ``range``."""
    return values if isinstance(values, range) else list(values)


def _patch_loader_index_lists() -> None:
    from recbole.data.dataloader import abstract_dataloader

    abstract_dataloader.list = _range_not_list


# RecBole 1.2.1's sequential_recommender/sine.py calls torch.autograd.set_detect_anomaly(True) when
# it is imported (importing any of RecBole's sequential models imports it): from then on every model
# of the process trained in anomaly mode, a stack trace recorded per op and a NaN check per gradient,
# slower a batch (results/compat_speed.md). Import it now and put the mode back.
def _import_model_zoo_keeping_anomaly_mode() -> None:
    """Import RecBole's sequential models, leaving autograd's anomaly mode as the process had it
    (off unless the user turned it on; off as well when they were imported before, by RecBole)."""
    imported_before = "recbole.model.sequential_recommender.sine" in sys.modules
    mode = False if imported_before else torch.is_anomaly_enabled()
    check_nan = torch.is_anomaly_check_nan_enabled()
    importlib.import_module("recbole.model.sequential_recommender")
    torch.autograd.set_detect_anomaly(mode, check_nan=check_nan)


# RecBole 1.2.1's FeedForward.gelu (the Transformer models' activation) composes the exact gelu from
# five element-wise ops, each with its own backward (erf's backward alone took a fifth of a SASRec
# step here); torch's own gelu computes the same function in one kernel each way.
def recbole_gelu(self, x: torch.Tensor) -> torch.Tensor:
    """RecBole's ``FeedForward.gelu`` as 1.2.1 ships it (kept for comparison and the tests)."""
    import math

    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _fused_gelu(self, x: torch.Tensor) -> torch.Tensor:
    """Replacement for ``FeedForward.gelu``: ``x * Phi(x)`` (the erf form, not the tanh approximation)."""
    return torch.nn.functional.gelu(x)


def _patch_feedforward_gelu() -> None:
    from recbole.model.layers import FeedForward

    FeedForward.gelu = _fused_gelu


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
    rb_trainer.Trainer.on_epoch_end = on_epoch_end
    rb_trainer.PretrainTrainer.save_pretrained_model = _save_pretrained_model
    _import_quick_start_without_ray()
    _patch_quick_start_load_data_and_model()
    _patch_scipy_dok_update()
    _patch_get_flops()
    _patch_ensure_dir()
    _patch_atomic_file_reader()
    _patch_loader_index_lists()
    _import_model_zoo_keeping_anomaly_mode()
    _patch_feedforward_gelu()
    from recbole.data.interaction import Interaction

    Interaction.__getitem__ = _interaction_getitem
    _import_torchrec_keeping_root_logger()
    _APPLIED = True
    getLogger(__name__).debug("recbole_mtl compatibility patches applied")
