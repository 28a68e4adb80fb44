"""Model and trainer lookup: the plugin first, then RecBole's own zoo.

Convention (as in RecBole and its plugins): model ``Foo`` lives in ``recbole_mtl/model/foo.py``,
its defaults in ``properties/model/Foo.yaml`` and an optional ``FooTrainer`` in
``recbole_mtl/trainer.py``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Iterable

from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

PLUGIN_MODEL_PACKAGE = "recbole_mtl.model"
RECBOLE_MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
# Where a plugin model is registered inside RecBole's zoo, by its ``type``.
_ZOO_SUBMODULE = {
    ModelType.GENERAL: "general_recommender",
    ModelType.CONTEXT: "context_aware_recommender",
    ModelType.SEQUENTIAL: "sequential_recommender",
    ModelType.KNOWLEDGE: "knowledge_aware_recommender",
}


class UnknownNameError(ValueError):
    """A model or dataset name that does not exist; the message suggests close matches."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """' Did you mean: A, B?' for the closest candidates (case-insensitive), or ''."""
    candidates = sorted(set(candidates))
    lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(lower[c] for c in close)}?" if close else ""


def plugin_model_modules() -> list[str]:
    """Module names of the plugin's models (``recbole_mtl.model.<name>``)."""
    package = importlib.import_module(PLUGIN_MODEL_PACKAGE)
    return [
        f"{PLUGIN_MODEL_PACKAGE}.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_") and not m.ispkg
    ]


def plugin_model_names() -> list[str]:
    """Class names of the plugin's registered models, e.g. ``['MTLRec']``."""
    names = []
    for module_name in plugin_model_modules():
        module = importlib.import_module(module_name)
        names += [n for n in getattr(module, "__all__", ()) if n.lower() == module_name.rsplit(".", 1)[1]]
    return names


@functools.lru_cache(maxsize=None)
def recbole_model_names() -> tuple[str, ...]:
    """Class names of RecBole's built-in models (read from its package, nothing imported)."""
    import recbole.model

    root = Path(recbole.model.__file__).parent
    names = []
    for sub in RECBOLE_MODEL_SUBMODULES:
        for f in sorted((root / sub).glob("*.py")):
            if f.stem.startswith("_"):
                continue
            text = f.read_text(encoding="utf-8", errors="ignore")
            names += [
                line.split("class ", 1)[1].split("(", 1)[0].strip()
                for line in text.splitlines()
                if line.startswith("class ") and line.split("class ", 1)[1].split("(")[0].strip().lower() == f.stem
            ]
    return tuple(names)


def all_model_names() -> list[str]:
    return sorted(set(plugin_model_names()) | set(recbole_model_names()))


def get_model(model_name: str):
    """The model class named ``model_name``: the plugin's, else RecBole's.

    Raises:
        UnknownNameError: no such model; the message lists close matches.
    """
    module_path = f"{PLUGIN_MODEL_PACKAGE}.{model_name.lower()}"
    if importlib.util.find_spec(module_path) is not None:
        module = importlib.import_module(module_path)
        if hasattr(module, model_name):
            return getattr(module, model_name)
    if model_name not in recbole_model_names():
        raise UnknownNameError(
            f"unknown model '{model_name}': it is neither a recbole_mtl model nor a RecBole model."
            + suggest(model_name, all_model_names())
        )
    return recbole_get_model(model_name)


def get_trainer(model_type: ModelType, model_name: str):
    """The trainer class for a model: ``recbole_mtl.trainer.<Name>Trainer``, else RecBole's."""
    plugin_trainers = importlib.import_module("recbole_mtl.trainer")
    if hasattr(plugin_trainers, model_name + "Trainer"):
        return getattr(plugin_trainers, model_name + "Trainer")
    return recbole_get_trainer(model_type, model_name)


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

    plugin_trainers = importlib.import_module("recbole_mtl.trainer")
    registered = []
    for module_name in plugin_model_modules():
        module = importlib.import_module(module_name)
        stem = module_name.rsplit(".", 1)[1]
        for name in getattr(module, "__all__", ()):
            if name.lower() != stem:
                continue
            model_class = getattr(module, name)
            sub = _ZOO_SUBMODULE.get(model_class.type, "sequential_recommender")
            sys.modules[f"recbole.model.{sub}.{stem}"] = module
            trainer = getattr(plugin_trainers, name + "Trainer", None)
            if trainer is not None:
                setattr(recbole.trainer, name + "Trainer", trainer)
            dataset_class = getattr(model_class, "dataset_class", None)
            if dataset_class is not None:  # RecBole's create_dataset looks for <Model>Dataset here
                setattr(recbole.data.dataset, name + "Dataset", dataset_class)
            registered.append(name)
    return registered
