"""Python entry points, mirroring ``recbole.quick_start``: train/evaluate, tune, reload.

Each is a thin layer over :mod:`recbole_mtl.pipeline`.
"""

from __future__ import annotations

import logging
from logging import getLogger
from typing import Optional, Sequence

from recbole.utils import init_logger, init_seed

from recbole_mtl import pipeline
from recbole_mtl.config import Config
from recbole_mtl.pipeline import load_data_and_model, resume_path

__all__ = ["run_recbole_mtl", "objective_function", "load_data_and_model", "resume_path"]


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
    return pipeline.run(config, saved=saved)


def objective_function(config_dict=None, config_file_list=None, saved=True) -> dict:
    """RecBole's hyper-parameter objective (for ``recbole.trainer.HyperTuning``), without ray."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list, cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    built = pipeline.build(config)
    best_valid_score, best_valid_result = built.trainer.fit(built.train_data, built.valid_data, verbose=False,
                                                            saved=saved)
    test_result = built.trainer.evaluate(built.test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }
