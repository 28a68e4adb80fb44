"""``Config``: RecBole's configurator with the plugin's YAML layered in.

Resolution order, later wins::

    RecBole internal defaults (overall < model < dataset < quick-start presets)
      < recbole_mtl properties (overall.yaml < model/<Model>.yaml < dataset/<dataset>.yaml)
      < config files (in the order given) < config dict < command line

For a RecBole model, the keys it needs that none of those layers' user parts set (``load_col``,
``threshold``, ``train_neg_sample_args`` for a CE loss, ``RATING_FIELD``) are then derived from the
dataset's keys (:mod:`recbole_mtl.derive`), and RecBole's own config errors become one-line
:class:`~recbole_mtl.errors.ConfigError` s.

Only the hooks that find models and internal YAML are overridden; RecBole's ``__init__`` runs
unchanged.
"""

from __future__ import annotations

import os
import sys
from logging import getLogger
from pathlib import Path
from typing import Any, Optional, Sequence

from recbole.config import Config as RecBoleConfig

from recbole_mtl.errors import ConfigError, MissingFileError, RecboleMTLError, UnknownNameError, suggest
from recbole_mtl.hardening import literal_convert
from recbole_mtl.utils import get_model, plugin_model_names

# Keys RecBole and this plugin read that no YAML file declares.
_UNDECLARED_KEYS = {
    "model", "dataset", "config_files", "nproc", "world_size", "ip", "port", "offset",
    "local_rank", "group_offset", "benchmark_filename", "numerical_features", "debug",
}
# Plugin metrics where smaller is better (RecBole knows its own).
SMALLER_SUFFIXES = ("logloss", "loss", "hamming", "rmse", "mae")


def properties_dir() -> Path:
    """The plugin's ``properties/`` folder, installed inside the package or beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "properties", here.parent / "properties"):
        if (candidate / "overall.yaml").is_file():
            return candidate
    raise MissingFileError(
        f"recbole_mtl's properties/overall.yaml is missing (looked in {here / 'properties'} and "
        f"{here.parent / 'properties'}). Reinstall the package: pip install ."
    )


def layer_plugin_properties(config: RecBoleConfig, model: str, dataset: str, root: Path,
                            model_class: Any = None) -> list[str]:
    """Add ``root``'s overall < model < dataset YAML on top of RecBole's internal defaults.

    A model class may name, in ``properties_base``, a model whose YAML holds its family's common
    keys (the multi-task models read ``MTLRec.yaml``); that file is layered below the model's own.

    Returns:
        The files that were applied, in order.
    """
    applied = []
    models = [getattr(model_class, "properties_base", None), model]
    model_files = [root / "model" / f"{m}.yaml" for i, m in enumerate(models) if m and m not in models[:i]]
    for file in (root / "overall.yaml", *model_files, root / "dataset" / f"{dataset}.yaml"):
        if file.is_file():
            loaded = config._update_internal_config_dict(str(file)) or {}
            applied.append(str(file))
            if file.parent.name == "dataset":
                config.parameters["Dataset"] += [k for k in loaded if k not in config.parameters["Dataset"]]
    return applied


def _type_ok(default: Any, value: Any) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, dict):
        return isinstance(value, dict)
    if isinstance(default, list):  # RecBole also accepts one scalar for a list (metrics, topk)
        return isinstance(value, (list, tuple, str, int, float))
    if isinstance(default, str):  # RecBole str()s ids such as gpu_id
        return isinstance(value, (str, int, float))
    return True


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}.get(
        type(value), type(value).__name__
    )


class Config(RecBoleConfig):
    """RecBole ``Config`` that finds plugin models and layers ``properties/``.

    Args:
        model: model name or class (plugin or RecBole).
        dataset: dataset name.
        config_file_list: YAML files, later wins.
        config_dict: parameters, above the files.
        cmd_args: ``--key=value`` strings, above everything; ``None`` reads ``sys.argv[1:]`` as
            RecBole does.

    Example:
        >>> config = Config(model="BPR", dataset="ml-100k", cmd_args=["--epochs=1"])
        >>> config["epochs"]
        1
    """

    #: Folder with ``overall.yaml``, ``model/`` and ``dataset/``; ``None`` uses the plugin's own.
    properties_root: Optional[Path] = None

    def __init__(
        self,
        model=None,
        dataset: Optional[str] = None,
        config_file_list: Optional[Sequence[str]] = None,
        config_dict: Optional[dict] = None,
        cmd_args: Optional[Sequence[str]] = None,
    ):
        self._cmd_args = list(cmd_args) if cmd_args is not None else None
        super().__init__(model, dataset, config_file_list, config_dict)

    # -- external input -------------------------------------------------------------------
    def _convert_config_dict(self, config_dict: dict) -> dict:
        """Parse string values as Python literals (never ``eval``): ``'1'`` -> 1, ``'[1,2]'``."""
        return literal_convert(config_dict)

    def _load_cmd_line(self) -> dict:
        if self._cmd_args is None:
            return super()._load_cmd_line()
        saved = sys.argv
        sys.argv = [saved[0] if saved else "recbole-mtl"] + self._cmd_args
        try:
            return super()._load_cmd_line()
        finally:
            sys.argv = saved

    def _load_config_files(self, file_list):
        for file in file_list or []:
            if not os.path.isfile(file):
                raise ConfigError(f"config file not found: {file}. Check the path given to --config_files.")
        return super()._load_config_files(file_list)

    # -- models and internal YAML ---------------------------------------------------------
    def _get_model_and_dataset(self, model, dataset):
        if isinstance(model, str) or (model is None and isinstance(self.external_config_dict.get("model"), str)):
            name = model if isinstance(model, str) else self.external_config_dict["model"]
            model = get_model(name)  # the plugin first, then RecBole; clear error if unknown
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        root = Path(self.properties_root) if self.properties_root else properties_dir()
        self.plugin_config_files = layer_plugin_properties(self, model, dataset, root, model_class)

    def _get_final_config_dict(self) -> dict:
        self._check_types()
        return super()._get_final_config_dict()

    def _check_types(self) -> None:
        known = set(self.internal_config_dict) | _UNDECLARED_KEYS
        for key, value in self.external_config_dict.items():
            if key in self.internal_config_dict:
                default = self.internal_config_dict[key]
                if not _type_ok(default, value):
                    values = "True or False; " if isinstance(default, bool) else ""
                    raise ConfigError(
                        f"config key '{key}' expects {_type_name(default)} ({values}default: {default!r}) "
                        f"but got {value!r} ({_type_name(value)}). Fix the value in your config file, "
                        f"config dict or --{key}=..."
                    )
            elif key not in known:
                hint = suggest(key, known)
                if hint:
                    getLogger().warning(f"config key '{key}' is not a known parameter.{hint}")

    def _set_default_parameters(self):
        data_path = self.external_config_dict.get("data_path", self.internal_config_dict.get("data_path"))
        self.derived = self._derive()
        try:
            super()._set_default_parameters()
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as e:
            if isinstance(e, RecboleMTLError):
                raise
            from recbole_mtl.derive import recbole_config_error

            raise recbole_config_error(e, self.model) from e
        self._check_dataset(data_path)
        if self.final_config_dict.get("user_id_input") is False and self.final_config_dict.get("user_text_features"):
            raise ConfigError("user_id_input: False drops the user-id embedding from the user side, but "
                              "user_text_features: True fuses the user's text into that embedding: set one of them "
                              "the other way (user_id_input: True, or user_text_features: False).")
        metric = str(self.final_config_dict["valid_metric"]).split("@")[0].lower()
        if "_" in metric:  # a task metric of the multi-task models, e.g. interest_auc or rating_rmse
            self.final_config_dict["valid_metric_bigger"] = not metric.endswith(SMALLER_SUFFIXES)

    def _derive(self) -> dict:
        """What a RecBole model needs from the dataset config (:mod:`recbole_mtl.derive`); the keys set."""
        if self.model in plugin_model_names():
            return {}
        from recbole_mtl.derive import derive

        return derive(self.final_config_dict, self.external_config_dict, self.model, self.model_class, self.dataset)

    def _check_dataset(self, data_root: Optional[str]) -> None:
        """Fail clearly (instead of RecBole trying to download) when the dataset has no files."""
        folder = Path(self.final_config_dict["data_path"])
        name = self.dataset
        if folder.is_dir() and any(folder.glob(f"{name}*.inter")):
            return
        candidates = {"ml-100k"}
        if data_root and Path(data_root).is_dir():
            candidates |= {p.name for p in Path(data_root).iterdir() if p.is_dir()}
        raise UnknownNameError(
            f"unknown dataset '{name}': no atomic file {folder / (name + '.inter')}. Put "
            f"{name}.inter (and optional .user/.item) in {folder}, or set --data_path to the "
            f"folder that holds '{name}/'.{suggest(name, candidates)}"
        )
