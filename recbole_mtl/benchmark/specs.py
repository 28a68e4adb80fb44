"""The benchmark's model specs (``--models``): ``Model[@task+task][:balance]`` parsed into a
:class:`ModelSpec`, the tasks each model competes on, and the per-task metric tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks import DEFAULT_TASKS, REGISTRY, TASK_NAMES

TASKS = TASK_NAMES
#: Metrics reported per task (keys of the run records), the first is the task's main metric.
TASK_METRICS = {name: list(cls.metric_names) for name, cls in REGISTRY.items()}
#: The metrics drawn in the chart, per task.
PLOTTED = {name: list(cls.plotted) for name, cls in REGISTRY.items()}
#: Metrics where smaller is better.
SMALLER = {m for cls in REGISTRY.values() for m in cls.smaller_is_better}
#: The validation metric that selects the learning rate, per task a model is run for.
VALID_METRIC = {name: cls.valid_metric for name, cls in REGISTRY.items()}
CATEGORY_MLP = "CategoryMLP"
#: ``--models`` presets: every model family the benchmark compares (``all``) and the quick default.
PRESETS = {
    "default": "MTLRec,SASRec,GRU4Rec,DeepFM,MTLRec@category,CategoryMLP",
    # cheapest first (seconds per epoch on ml-100k): a benchmark cut short leaves these finished
    # (the single-task ablations before the multi-task models: they give --tune_objective mtl_gain its references)
    "all": "CategoryMLP,CategoryMLP+text,DeepFM,MTLRec@category,MTLRec@interest,MTLRec@sequence,MTLRec,MMoE,PLE,"
           "DCNV2,GRU4Rec,DIN,SASRec,LightSANs,BERT4Rec",
}
#: ``--tune_objective``: what a multi-task model's trials maximise (and its runs stop early on).
OBJECTIVES = ("mtl_gain", "first_task")
#: ``--tune_objective mtl_gain``: the single-task models whose best validation values are the references.
GAIN_REFERENCE_MODEL = "MTLRec"
#: ``--protocol``: how the sequence task is scored (full ranking, or RecBole's sampled candidates).
PROTOCOLS = ("full", "uni100", "pop100")
CATEGORY_MLP_TEXT = CATEGORY_MLP + "+text"


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``--models``: a model, the tasks it competes on, and its balancing method."""

    text: str
    model: str
    tasks: tuple
    balance: Optional[str] = None
    plugin: bool = False

    @property
    def valid_metric(self) -> str:
        return VALID_METRIC[self.tasks[0]]

    @property
    def multi_task(self) -> bool:
        return self.plugin and len(self.tasks) > 1

    def gain_references(self) -> list[str]:
        """The single-task specs whose tuned validation values are this spec's ``mtl_gain`` references."""
        return [f"{GAIN_REFERENCE_MODEL}@{task}" for task in self.tasks]


def parse_spec(text: str) -> ModelSpec:
    """``Model[@task+task][:balance]`` -> :class:`ModelSpec`, with the model's competing tasks."""
    from recbole.utils import ModelType

    from recbole_mtl.utils import get_model, plugin_model_names

    rest, _, balance = text.partition(":")
    name, _, task_text = rest.partition("@")
    if name in (CATEGORY_MLP, CATEGORY_MLP_TEXT):
        return ModelSpec(text, name, ("category",))
    model_class = get_model(name)  # clear error with suggestions when unknown
    plugin = name in plugin_model_names()
    if plugin:
        from recbole_mtl.balancing import BALANCING_METHODS

        if balance and balance not in BALANCING_METHODS:
            raise ConfigError(f"--models entry '{text}': unknown balancing method '{balance}'; choose from "
                              f"{list(BALANCING_METHODS)}.")
        tasks = tuple(t for t in task_text.split("+") if t) or DEFAULT_TASKS
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"--models entry '{text}': unknown task(s) {bad}; choose from {list(TASKS)}.")
    else:
        if task_text or balance:
            raise ConfigError(f"--models entry '{text}': @tasks and :balance apply to the multi-task models only.")
        pointwise = getattr(model_class, "input_type", None) is not None and model_class.input_type.name == "POINTWISE"
        if model_class.type == ModelType.CONTEXT or (model_class.type == ModelType.SEQUENTIAL and pointwise):
            tasks = ("interest",)
        elif model_class.type in (ModelType.SEQUENTIAL, ModelType.GENERAL):
            tasks = ("sequence",)
        else:
            raise ConfigError(f"--models entry '{text}': {name} is a {model_class.type.name} model, which "
                              "competes on none of the tasks (sequence, interest, category).")
    return ModelSpec(text, name, tasks, balance or None, plugin)


def _item_tasks(spec: ModelSpec) -> list[str]:
    """The spec's tasks scored on held-out items (``--folds`` applies to them)."""
    return [t for t in spec.tasks if t in REGISTRY and REGISTRY[t].evaluation == "items"]
