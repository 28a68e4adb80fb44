"""The task registry: one module per task, each a :class:`~recbole_mtl.tasks.base.Task`.

Adding a task is one module (its head, labels, loss and metrics) plus one line here and its YAML
keys; the model, the trainer and the benchmark loop over :data:`REGISTRY`.
"""

from __future__ import annotations

from logging import getLogger
from typing import Optional

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.base import Task, TaskBatch
from recbole_mtl.tasks.category import CategoryTask
from recbole_mtl.tasks.interest import InterestTask
from recbole_mtl.tasks.rating import RatingTask
from recbole_mtl.tasks.sequence import SequenceTask

#: Every task, in the order losses are logged and reported.
REGISTRY: dict[str, type[Task]] = {cls.name: cls for cls in (SequenceTask, InterestTask, CategoryTask, RatingTask)}
TASK_NAMES = tuple(REGISTRY)
#: The tasks trained when ``tasks`` is not set.
DEFAULT_TASKS = ("sequence", "interest", "category")


def task_class(name: str) -> type[Task]:
    if name not in REGISTRY:
        raise ConfigError(f"unknown task '{name}' in `tasks`; choose from {list(TASK_NAMES)}.")
    return REGISTRY[name]


def requested_tasks(config) -> list[str]:
    """The task names ``config`` asks for (``tasks``, or the defaults), each checked."""
    wanted = config["tasks"] or list(DEFAULT_TASKS)
    if isinstance(wanted, str):
        wanted = [wanted]
    for name in wanted:
        task_class(name)
    return [name for name in TASK_NAMES if name in wanted]


def resolve_tasks(config, dataset) -> list[str]:
    """The requested tasks that can run on ``dataset``; warns once, naming the fix, for each one off."""
    tasks = []
    for name in requested_tasks(config):
        reason: Optional[str] = REGISTRY[name].missing(config, dataset)
        if reason is None:
            tasks.append(name)
        else:
            getLogger().warning(f"task '{name}' switched off: {reason}")
    if not tasks:
        raise ConfigError(f"no task left to train: `tasks` is {requested_tasks(config)} and none can run on "
                          "this dataset (see the warnings above).")
    return tasks


def metric_direction(metric: str) -> Optional[bool]:
    """True if bigger is better for a task metric such as ``interest_auc``, None if not a task metric."""
    name = metric.lower()
    for cls in REGISTRY.values():
        if name in cls.metric_names and cls.evaluation != "ranking":
            return name not in cls.smaller_is_better
    return None


__all__ = ["DEFAULT_TASKS", "REGISTRY", "TASK_NAMES", "Task", "TaskBatch", "metric_direction", "requested_tasks",
           "resolve_tasks", "task_class"]
