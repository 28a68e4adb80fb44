"""The task protocol: what every task of the multi-task models knows about itself.

A task is an ``nn.Module`` holding its head. It knows its name, where its labels come from
(:class:`~recbole_mtl.data.labels.LabelSource`), whether it can run on a dataset
(:meth:`Task.missing`), its loss at every counted position of a batch (the mean over them), its
predictions for evaluation, and its metrics with their direction. The model and the trainer loop
over the registry (:mod:`recbole_mtl.tasks`); no other module names a task.

A task reads the batch through a :class:`TaskBatch` the model builds once per step:

* user-side tasks (``side = "user"``) read ``batch.user(name)`` ``[N, D]``: the model's
  representation of the history at each of the ``N`` counted positions (after the mixture);
* ``batch.next_item`` ``[N]``: the item of the interaction each position predicts, and
  ``batch.label(column)`` ``[N]``: a field of that interaction (e.g. ``interest_label``);
* ``batch.item`` ``[N]``: the item at each position (training windows only);
* ``batch.item_embedding(ids)`` / ``batch.item_representation(ids)``: ``[*, D]`` item-id embedding
  (with text) / item tower output (id, attributes), for ids the task asked for in :meth:`Task.items`;
  ``batch.target_representation(ids)``: the item representation user-side tasks read for the item
  an interaction is with (with ``item_label_features``, plus what item-side tasks know of its labels).

``evaluation`` says how the trainer scores it: ``ranking`` (RecBole's full-ranking evaluator),
``pointwise`` (a prediction per validation/test interaction against ``label_column``) or ``items``
(predictions for the task's held-out items, :meth:`Task.item_predictions`).
"""

from __future__ import annotations

from typing import ClassVar, Optional, Protocol

import torch
from torch import nn

from recbole_mtl.data.labels import LabelSource
from recbole_mtl.tasks.common import MLP


class TaskBatch(Protocol):
    """What a task may read of a batch (built by the model; shapes in the module docstring)."""

    training: bool
    all_positions: bool
    next_item: torch.Tensor
    item: Optional[torch.Tensor]

    def user(self, task: str) -> torch.Tensor: ...

    def label(self, column: str) -> torch.Tensor: ...

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor: ...

    def item_representation(self, ids: torch.Tensor) -> torch.Tensor: ...

    def target_representation(self, ids: torch.Tensor) -> torch.Tensor: ...


class Task(nn.Module):
    """Base of every task (see the module docstring)."""

    name: ClassVar[str]
    side: ClassVar[str] = "user"
    evaluation: ClassVar[str] = "pointwise"
    label_source: ClassVar[Optional[LabelSource]] = None
    #: Reported metric names (as in the result dict) and the ones where smaller is better.
    metric_names: ClassVar[tuple[str, ...]] = ()
    smaller_is_better: ClassVar[tuple[str, ...]] = ()
    #: The metric that selects a configuration of this task (early stopping, tuning, benchmark).
    valid_metric: ClassVar[str] = ""
    #: Metrics the benchmark plots for this task.
    plotted: ClassVar[tuple[str, ...]] = ()
    #: Whether the ids of :meth:`items` need the item tower (attributes), not only id embeddings.
    reads_item_representation: ClassVar[bool] = True
    #: The batch-inference command that serves this task's predictions (``recommend``: full ranking of
    #: the next item; ``score``: a probability per user-item pair; ``categorize``: labels of items), or None.
    inference: ClassVar[Optional[str]] = None

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__()
        self.decimals = int(config["metric_decimal_place"] or 4)

    @property
    def label_column(self) -> Optional[str]:
        return self.label_source.column if self.label_source else None

    @classmethod
    def missing(cls, config, dataset) -> Optional[str]:
        """Why this task cannot run on ``dataset`` (a fix for the user), or None."""
        source = cls.label_source
        if source is None:
            return None
        return dataset.field_missing(config[source.config_key], source.file, source.config_key)

    def items(self, batch: TaskBatch) -> Optional[torch.Tensor]:
        """Item ids whose embedding or representation :meth:`loss` / :meth:`predict` reads."""
        return None

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        """The mean loss over the batch's counted positions (a scalar)."""
        raise NotImplementedError

    def count(self, batch: TaskBatch) -> float:
        """The total weight of the terms :meth:`loss` averaged (the number of counted positions, unless
        the task weighs them): several processes average their losses in proportion to it."""
        return float(batch.next_item.numel())

    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Evaluation scores at the last position of each history (user-side tasks)."""
        raise NotImplementedError

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Metrics of ``predictions`` against ``labels``, named as in the result dict."""
        return {}

    #: Width of :meth:`known_labels` (item-side tasks whose labels can describe an item), else 0.
    label_width: int = 0

    def known_labels(self, batch: TaskBatch, ids: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        """``[R, label_width]``: what is known of the labels of items ``ids`` without reading a held-out
        label (e.g. true labels of training items, the head's predictions, detached, for the others)."""
        raise NotImplementedError

    def _round(self, values: dict[str, float]) -> dict[str, float]:
        return {f"{self.name}_{k}": round(float(v), self.decimals) for k, v in values.items()}


class PairHead(MLP):
    """Scores user-item pairs: ``[N, D], [N, D] -> [N]`` from ``[u, v, u * v]``."""

    def __init__(self, dim: int, hidden, dropout: float):
        super().__init__(3 * dim, hidden, 1, dropout)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([user, item, user * item], dim=-1)).squeeze(-1)


class PairTask(Task):
    """A user-side task scored on (history, next item) pairs: a :class:`PairHead` over the user
    representation at each position and the representation of the item its interaction is with."""

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__(config, dataset, dim, dropout)
        self.head = PairHead(dim, list(config["tower_hidden"] or []), dropout)

    def items(self, batch: TaskBatch) -> torch.Tensor:
        return batch.next_item

    def pair_scores(self, batch: TaskBatch) -> torch.Tensor:
        """``[N]`` head outputs at the batch's positions."""
        return self.head(batch.user(self.name), batch.target_representation(batch.next_item))


def masked_mean(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values.mean()``, or a zero that keeps ``like``'s graph when there are no values."""
    return values.mean() if values.numel() else like.sum() * 0.0
