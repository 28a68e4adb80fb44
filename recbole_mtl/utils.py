"""Model and trainer lookup: the plugin first, then RecBole's own zoo.

Convention (as in RecBole and its plugins): model ``Foo`` lives in ``recbole_mtl/model/foo.py``,
its defaults in ``properties/model/Foo.yaml`` and an optional ``FooTrainer`` in
``recbole_mtl/trainer.py``. Models are found by name at run time; the plugin's trainers are
entered into ``recbole.trainer`` by :func:`recbole_mtl.compat.register_plugin_models`, where
RecBole's own lookup finds them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from recbole.utils import ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_mtl.errors import UnknownNameError, suggest

PLUGIN_MODEL_PACKAGE = "recbole_mtl.model"
RECBOLE_MODEL_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)
#: Where a plugin model is registered inside RecBole's zoo, by its ``type``.
ZOO_SUBMODULE = {
    ModelType.GENERAL: "general_recommender",
    ModelType.CONTEXT: "context_aware_recommender",
    ModelType.SEQUENTIAL: "sequential_recommender",
    ModelType.KNOWLEDGE: "knowledge_aware_recommender",
}


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
    """The trainer class for a model: ``recbole_mtl.trainer.<Name>Trainer``, else RecBole's.

    ``import recbole_mtl`` enters the plugin's trainers into ``recbole.trainer``, the module
    RecBole's ``get_trainer`` searches first.
    """
    return recbole_get_trainer(model_type, model_name)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ru_maxrss in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
