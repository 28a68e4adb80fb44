"""Nothing read from disk or the command line runs code: no pickles, no ``eval``, safe YAML.

RecBole 1.2.1 ``pickle.load``s a saved dataset (``<checkpoint_dir>/<dataset>-<Class>.pth`` or
``dataset_save_path``) and saved dataloaders whenever such a file exists, ``eval``s command-line
values and reads YAML with a loader that builds arbitrary Python objects; a planted file or
argument could run code. :func:`apply` (called by ``import recbole_mtl``) replaces each with a
safe equivalent:

* saved datasets/dataloaders are neither written nor read (a warning says so): every run builds
  its data from the atomic files;
* config values given as text are parsed with ``ast.literal_eval`` (:func:`literal_convert`);
* YAML is read with :class:`SafeConfigLoader` (``yaml.SafeLoader`` with RecBole's float rule).
"""

from __future__ import annotations

import ast
import enum
import importlib
import os
import re
import sys
from logging import getLogger
from typing import Any

import yaml


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


def dataset_class_of(config: Any):
    from recbole.utils import ModelType

    module = importlib.import_module("recbole.data.dataset")
    if hasattr(module, config["model"] + "Dataset"):
        return getattr(module, config["model"] + "Dataset")
    names = {ModelType.SEQUENTIAL: "SequentialDataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset"}
    return getattr(module, names.get(config["MODEL_TYPE"], "Dataset"))


def safe_create_dataset(config: Any):
    """``recbole.data.create_dataset`` without its ``pickle.load`` of a saved dataset."""
    dataset_class = dataset_class_of(config)
    saved = config["dataset_save_path"] or os.path.join(
        config["checkpoint_dir"], f"{config['dataset']}-{dataset_class.__name__}.pth")
    logger = getLogger(__name__)
    if os.path.exists(saved):
        logger.warning(f"{saved} is a pickled dataset; it is not loaded (unpickling a file can run "
                       "code). The dataset is built from its atomic files.")
    if config["save_dataset"] and not saves_arrays(dataset_class):
        logger.warning(f"save_dataset=True is ignored for {dataset_class.__name__}: RecBole saves it as a pickle, "
                       "which is never loaded (the plugin's models save theirs as arrays).")
    return dataset_class(config)


def saves_arrays(dataset_class) -> bool:
    """Whether ``dataset_class`` is saved as arrays (``recbole_mtl.data.saved``): the plugin's datasets."""
    return hasattr(dataset_class, "_config_checks") and hasattr(dataset_class, "flat")


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


def _convert_config_dict(self, config_dict):
    return literal_convert(config_dict)


def _build_yaml_loader(self):
    return SafeConfigLoader


def apply() -> None:
    """Install the safe replacements in RecBole (idempotent)."""
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
