"""Python entry points, mirroring ``recbole.quick_start``: train/evaluate, tune, reload."""

from __future__ import annotations

import logging
import os
import sys
from logging import getLogger
from typing import Optional, Sequence

from recbole.data import data_preparation
from recbole.data.utils import get_dataloader
from recbole.data.transform import construct_transform
from recbole.utils import get_environment, get_flops, init_logger, init_seed, set_color

from recbole_mtl.compat import CheckpointError, last_checkpoint_path, load_checkpoint, unpack_other
from recbole_mtl.compat import safe_create_dataset as create_dataset
from recbole_mtl.config import Config
from recbole_mtl.data.validate import build_dataset, validate_dataset
from recbole_mtl.distributed import export_checkpoint, init_from_env, is_distributed, barrier, rank
from recbole_mtl.errors import ConfigError
from recbole_mtl.utils import get_model, get_trainer, plugin_model_names


def _build(config: Config):
    if config["validate_data"] is not False:
        validate_dataset(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = build_dataset(config, create_dataset)
    if is_distributed(config):
        train_data, valid_data, test_data = _distributed_data(config, dataset)
        # the same seed on every rank: the tables start as in one process (DDP syncs the rest)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        return dataset, train_data, valid_data, test_data, model
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    return dataset, train_data, valid_data, test_data, model


def _distributed_data(config: Config, dataset):
    """RecBole's loaders with the training epoch split over ranks and evaluation whole on each.

    Every rank evaluates every user: sharded lookups are collective, so all ranks run the same
    evaluation batches, and the metrics equal those of one process.
    """
    config["single_spec"] = True
    train_data, valid_data, test_data = data_preparation(config, dataset)
    config["single_spec"] = False
    train_data = get_dataloader(config, "train")(config, train_data._dataset, train_data._sampler,
                                                 shuffle=config["shuffle"])
    if train_data.sampler is not None and hasattr(train_data.sampler, "seed"):
        train_data.sampler.seed = int(config["seed"])
    return train_data, valid_data, test_data


def run_recbole_mtl(
    model: Optional[str] = None,
    dataset: Optional[str] = None,
    config_file_list: Optional[Sequence[str]] = None,
    config_dict: Optional[dict] = None,
    saved: bool = True,
    cmd_args: Optional[Sequence[str]] = None,
) -> dict:
    """Train and evaluate one model (a plugin model or any RecBole baseline).

    Args:
        model: model name, e.g. ``"MTLRec"`` or ``"SASRec"``.
        dataset: dataset name, e.g. ``"ml-100k"``.
        config_file_list: YAML files (later wins).
        config_dict: parameters above the files.
        saved: save the best checkpoint under ``checkpoint_dir`` and test with it.
        cmd_args: ``--key=value`` strings above everything (``None``: read ``sys.argv``).

    Returns:
        RecBole's result dict: ``best_valid_score``, ``valid_score_bigger``,
        ``best_valid_result``, ``test_result``, plus ``checkpoint`` (the saved file or None).
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict, cmd_args=cmd_args)
    if init_from_env(config) and config["model"] not in plugin_model_names():
        raise ConfigError(f"multi-process training shards the plugin's models ({plugin_model_names()}); "
                          f"run the RecBole model {config['model']} in one process (no --nproc, no torchrun).")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    dataset_obj, train_data, valid_data, test_data, model_obj = _build(config)
    logger.info(dataset_obj)
    logger.info(model_obj)
    if config["model"] not in plugin_model_names():
        transform = construct_transform(config)
        flops = get_flops(model_obj, dataset_obj, config["device"], logger, transform)
        logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    resume_from = resume_path(config)
    if resume_from:
        trainer.resume_checkpoint(resume_from)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )

    checkpoint = trainer.saved_model_file if saved else None
    if saved and is_distributed(config):  # every rank wrote its shards; rank 0 joins them
        barrier()
        if rank() == 0:
            export_checkpoint(checkpoint)
        barrier()
    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": checkpoint,
    }


def resume_path(config: Config) -> Optional[str]:
    """The checkpoint a run continues from: ``checkpoint``, else the ``-last.pth`` when ``resume``."""
    if config["checkpoint"]:
        return config["checkpoint"]
    if not config["resume"]:
        return None
    path = last_checkpoint_path(config)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"--resume: nothing to resume from: {path} does not exist. Each finished epoch of a run "
            "writes it (under checkpoint_dir); start without --resume, or pass --checkpoint=<file>."
        )
    return path


def objective_function(config_dict=None, config_file_list=None, saved=True) -> dict:
    """RecBole's hyper-parameter objective (for ``recbole.trainer.HyperTuning``), without ray."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, train_data, valid_data, test_data, model = _build(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file: str, config_dict: Optional[dict] = None):
    """Rebuild config, data and model from a checkpoint (loaded with ``weights_only=True``).

    Args:
        model_file: a ``.pth`` written by a recbole_mtl run.
        config_dict: overrides on top of the saved settings (e.g. ``{"data_path": ...}``).

    Returns:
        ``(config, model, dataset, train_data, valid_data, test_data)`` as RecBole's function.
    """
    checkpoint = load_checkpoint(model_file)
    external = dict(checkpoint["config"]["external"])
    external.update(config_dict or {})
    model_name, dataset_name = external.pop("model"), external.pop("dataset")
    config = Config(model=model_name, dataset=dataset_name, config_dict=external, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset, train_data, valid_data, test_data, model = _build(config)
    model.load_state_dict(checkpoint["state_dict"])
    other = checkpoint.get("other_parameter")
    model.load_other_parameter(unpack_other(other) if other else other)
    return config, model, dataset, train_data, valid_data, test_data
