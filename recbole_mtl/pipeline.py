"""The one way from a config to a trained and tested model: :func:`build`, then :func:`run`.

Every entry point goes through here: the command line, :mod:`recbole_mtl.quick_start`, the
benchmark command's worker, ``demo.py``, the scripts in ``benchmarks/`` and the tests.

Example:
    >>> from recbole_mtl.config import Config
    >>> from recbole_mtl import pipeline
    >>> config = Config(model="MTLRec", dataset="ml-100k", cmd_args=["--epochs=1"])
    >>> result = pipeline.run(config)          # doctest: +SKIP
    >>> result["test_result"]["ndcg@10"]       # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from logging import getLogger
from typing import Any, Optional

from recbole.data import data_preparation
from recbole.data.transform import construct_transform
from recbole.data.utils import get_dataloader
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_mtl import checkpoint, distributed, errors
from recbole_mtl.config import Config
from recbole_mtl.data.validate import build_dataset, check_run_folders, validate_dataset
from recbole_mtl.derive import recbole_data_error
from recbole_mtl.errors import CheckpointError, ConfigError, RecboleMTLError
from recbole_mtl.data import history_mask, saved
from recbole_mtl.data.windows import UserWindows
from recbole_mtl.hardening import dataset_class_of, safe_create_dataset, saves_arrays
from recbole_mtl.utils import get_model, get_trainer, plugin_model_names


@dataclass
class Built:
    """What :func:`build` makes from a config: the data, its loaders, the model and its trainer."""

    config: Config
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any
    trainer: Any


def build_data_and_model(config: Config) -> tuple:
    """``(dataset, train_data, valid_data, test_data, model)`` for ``config``, seeded as RecBole does.

    The atomic files are checked first (unless ``validate_data: False``); in a multi-process run
    each rank gets its part of every training epoch and the whole of every evaluation. With
    ``eval_mask_history: True`` the full-ranking evaluation of a sequential model scores each user's
    earlier items minus infinity (:mod:`recbole_mtl.data.history_mask`).
    """
    try:
        dataset = obtain_dataset(config)
        if distributed.context().is_distributed:
            train_data, valid_data, test_data = _distributed_data(config, dataset)
            # the same seed on every rank: the tables start as in one process (DDP syncs the rest)
            init_seed(config["seed"], config["reproducibility"])
        else:
            train_data, valid_data, test_data = data_preparation(config, dataset)
            init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    except (AttributeError, ValueError) as e:  # RecBole's own, when the config is the cause: one line
        if isinstance(e, RecboleMTLError):
            raise
        translated = recbole_data_error(e, config)
        if translated is None:
            raise
        raise translated from e
    history_mask.apply(config, train_data, valid_data, test_data)  # eval_mask_history
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if distributed.context().is_distributed:
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    return dataset, train_data, valid_data, test_data, model


def obtain_dataset(config: Config, save: Optional[bool] = None):
    """The run's dataset: loaded from its saved arrays when they match ``config``
    (:mod:`recbole_mtl.data.saved`), else built from the atomic files (checked first unless
    ``validate_data: False``) and, with ``save_dataset`` (or ``save=True``), split and saved.

    In a multi-process run that saves, rank 0 builds and saves and the other ranks load what it saved.
    """
    cls = dataset_class_of(config)
    save = bool(config["save_dataset"]) if save is None else save
    path = saved.default_path(config, cls) if saves_arrays(cls) else None
    why = saved.mismatch(path, config, cls) if path else None
    logger = getLogger()
    if path and why is None:
        if config["validate_data"] is not False and not (saved.read_meta(path) or {}).get("validated"):
            _validate_once(config)
        dataset = saved.load(path, config, cls)
        init_seed(config["seed"], config["reproducibility"])
        return dataset
    save = bool(path) and save
    if path and os.path.exists(path):
        logger.warning(f"the saved dataset {path} is not used: {why}. Building the dataset from its atomic files"
                       + (" and saving it anew." if save else "; --save_dataset=True saves it anew."))
    if not (save and distributed.context().is_distributed):
        return _from_files(config, path if save else None, _validate_once)
    error = None
    if distributed.rank() == 0:
        try:
            dataset = _from_files(config, path, validate_dataset)
        except Exception as e:  # the other ranks wait for the saved dataset: tell them it will not come
            error = e
    shared = distributed.broadcast_object(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    if shared is not None:
        raise getattr(errors, shared[0], RecboleMTLError)(f"rank 0 could not build the dataset: {shared[1]}")
    if distributed.rank() != 0:
        dataset = saved.load(path, config, cls)
    init_seed(config["seed"], config["reproducibility"])
    return dataset


def _from_files(config: Config, save_to: Optional[str], check) -> Any:
    """The dataset built from its atomic files (checked first by ``check`` unless ``validate_data:
    False``), saved to ``save_to`` when given."""
    if config["validate_data"] is not False:
        check(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = build_dataset(config, safe_create_dataset)
    if save_to:
        save_dataset(dataset, save_to)
    return dataset


def save_dataset(dataset, path: str) -> str:
    """Split ``dataset`` (``build()``; later calls return the same parts) and save it to ``path``."""
    parts = dataset.build()
    dataset._saved_built = parts
    return saved.save(dataset, parts, path, UserWindows.segments(parts[0]) if parts else None)


def _validate_once(config: Config) -> None:
    """Check the atomic files; in a multi-process run rank 0 checks them and every rank raises
    its error (the files are the same for all, and one check costs one rank's time and memory)."""
    if not distributed.context().is_distributed:
        validate_dataset(config)
        return
    error = None
    if distributed.rank() == 0:
        try:
            validate_dataset(config)
        except RecboleMTLError as e:
            error = e
    error = distributed.broadcast_object(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise getattr(errors, error[0], RecboleMTLError)(error[1])


def _distributed_data(config: Config, dataset):
    """RecBole's loaders with the training epoch split over ranks and evaluation whole on each.

    Every rank evaluates every user: sharded lookups are collective, so all ranks run the same
    evaluation batches, and the metrics equal those of one process.
    """
    with distributed.recbole_view(config, single_process=True):
        train_data, valid_data, test_data = data_preparation(config, dataset)
    train_data = get_dataloader(config, "train")(config, train_data._dataset, train_data._sampler,
                                                 shuffle=config["shuffle"])
    if train_data.sampler is not None and hasattr(train_data.sampler, "seed"):
        train_data.sampler.seed = int(config["seed"])
    return train_data, valid_data, test_data


def build(config: Config) -> Built:
    """Dataset, loaders, model and trainer for ``config`` (the plugin's trainer or RecBole's)."""
    dataset, train_data, valid_data, test_data, model = build_data_and_model(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return Built(config, dataset, train_data, valid_data, test_data, model, trainer)


def resume_path(config: Config) -> Optional[str]:
    """The checkpoint a run continues from: ``checkpoint``, else the ``-last.pth`` when ``resume``."""
    if config["checkpoint"]:
        return config["checkpoint"]
    if not config["resume"]:
        return None
    path = checkpoint.last_checkpoint_path(config)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"--resume: nothing to resume from: {path} does not exist. Each finished epoch of a run "
            "writes it (under checkpoint_dir); start without --resume, or pass --checkpoint=<file>."
        )
    return path


def start(config: Config) -> None:
    """Join the run's processes (under torchrun), seed and start RecBole's logger."""
    if distributed.init_from_env(config) and config["model"] not in plugin_model_names():
        raise ConfigError(f"multi-process training shards the plugin's models ({plugin_model_names()}); "
                          f"run the RecBole model {config['model']} in one process (no --nproc, no torchrun).")
    check_run_folders(config, text=False)  # before the logger creates ./log and any data is read
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)


def run(config: Config, saved: bool = True, verbose: bool = True) -> dict:
    """Train and test the model ``config`` names, as RecBole's ``run_recbole`` does.

    Args:
        config: the run's config (:class:`recbole_mtl.config.Config`).
        saved: save the best checkpoint under ``checkpoint_dir`` and test with it.
        verbose: log RecBole's per-epoch lines.

    Returns:
        RecBole's result dict: ``best_valid_score``, ``valid_score_bigger``,
        ``best_valid_result``, ``test_result``, plus ``checkpoint`` (the saved file or None).
    """
    start(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    if getattr(config, "derived", None):
        logger.info(f"derived from the dataset config for {config['model']}: {config.derived}")
    built = build(config)
    logger.info(built.dataset)
    logger.info(built.model)
    if config["model"] not in plugin_model_names():
        transform = construct_transform(config)
        flops = get_flops(built.model, built.dataset, config["device"], logger, transform)
        logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = built.trainer
    resume_from = resume_path(config)
    if resume_from:
        trainer.resume_checkpoint(resume_from)
    best_valid_score, best_valid_result = trainer.fit(
        built.train_data, built.valid_data, verbose=verbose, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(built.test_data, load_best_model=saved, show_progress=config["show_progress"])

    saved_file = trainer.saved_model_file if saved else None
    if saved and distributed.context().is_distributed:  # every rank wrote its shards; rank 0 joins them
        distributed.barrier()
        if distributed.rank() == 0:
            checkpoint.export_checkpoint(saved_file)
        distributed.barrier()
    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": saved_file,
    }


def load_data_and_model(model_file: str, config_dict: Optional[dict] = None, state: Optional[dict] = None):
    """Rebuild config, data and model from a checkpoint (loaded with ``weights_only=True``).

    Args:
        model_file: a ``.pth`` written by a recbole_mtl run.
        config_dict: overrides on top of the saved settings (e.g. ``{"data_path": ...}``).
        state: the checkpoint dict when it is already in memory (e.g. per-rank files joined by
            :func:`recbole_mtl.checkpoint.join_shards`); ``model_file`` then only names it.

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)`` as RecBole's function.

    Raises:
        CheckpointError: the file is missing or unreadable, or it was trained on other data
            (:func:`recbole_mtl.checkpoint.check_dataset`).
    """
    state = checkpoint.load_checkpoint(model_file) if state is None else state
    external = dict(state["config"]["external"])
    external.update(config_dict or {})
    model_name, dataset_name = external.pop("model"), external.pop("dataset")
    config = Config(model=model_name, dataset=dataset_name, config_dict=external, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data, model = build_data_and_model(config)
    checkpoint.check_dataset(state, str(model_file), config, model)
    checkpoint.load_model_state(model, state, str(model_file))
    return config, model, dataset, train_data, valid_data, test_data
