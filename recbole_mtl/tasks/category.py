"""Category task: which categories an item belongs to (multi-label), from its representation.

The representation is the item tower's (item-id embedding with text, attributes), never the label
field. The labelled items are split once (``category_holdout_ratio`` or ``category_folds``): the
held-out items' labels are never read in training. Loss (binary cross-entropy per label): in
training windows, every counted position whose item is a training item, each weighted by the inverse
of how often its item occurs in the training interactions (so every training item weighs the same
over an epoch, as every held-out item does in the metrics, and popular items do not drown the
rest); the loss is the weighted mean over the batch. With ``train_positions: last``,
``category_batch_size`` training items drawn uniformly per step (plain mean).

Decoding: an item has at least one category, so the top-scoring label is always predicted, plus
every label whose probability reaches ``threshold``. The threshold is chosen on the validation
items (the value of 0.05..0.95 with the best micro-F1) at each validation, kept in the model (and
its checkpoints), and applied unchanged to the test items. Metrics on held-out items: exact-match
accuracy, per-label accuracy, micro and macro precision, recall, F1.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

from recbole_mtl.data.labels import LabelSource, register_label_source
from recbole_mtl.tasks.base import Task, TaskBatch, masked_mean
from recbole_mtl.tasks.common import MLP, binary_counts, prf

CATEGORY_LABEL = register_label_source(LabelSource(
    task="category", config_key="category_field", file="item", meaning="the item categories"))

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


class CategoryTask(Task):
    name = "category"
    side = "item"
    evaluation = "items"
    label_source = CATEGORY_LABEL
    valid_metric = "category_micro_f1"
    metric_names = ("category_micro_f1", "category_macro_f1", "category_accuracy", "category_label_accuracy",
                    "category_micro_precision", "category_micro_recall", "category_macro_precision",
                    "category_macro_recall")
    plotted = ("category_micro_f1", "category_macro_f1")

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__(config, dataset, dim, dropout)
        field = config[CATEGORY_LABEL.config_key]
        labels = dataset.multi_hot(field)
        self.head = MLP(dim, list(config["tower_hidden"] or []), labels.shape[1], dropout)
        self.batch_size = int(config["category_batch_size"] or 256)
        self.register_buffer("labels", labels, persistent=False)
        split = dataset.item_split(labels, field)
        for phase, ids in split.items():
            self.register_buffer(f"{phase}_items", ids, persistent=False)
        is_train = torch.zeros(labels.shape[0], dtype=torch.bool)
        is_train[split["train"]] = True
        self.register_buffer("is_train_item", is_train, persistent=False)
        occurrences = torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=labels.shape[0]).float()
        self.register_buffer("item_weight", 1.0 / occurrences.clamp(min=1), persistent=False)
        self.register_buffer("threshold", torch.tensor(0.5))
        self.names = dataset.label_names(field)
        self._items: Optional[torch.Tensor] = None

    def items(self, batch: TaskBatch) -> Optional[torch.Tensor]:
        if not batch.training:
            return None
        if batch.all_positions:
            seen = batch.item
            self._items = seen[self.is_train_item[seen]]
        else:
            train = self.train_items
            self._items = train[torch.randint(len(train), (min(self.batch_size, len(train)),), device=train.device)]
        return self._items

    def logits(self, batch: TaskBatch, ids: torch.Tensor) -> torch.Tensor:
        return self.head(batch.item_representation(ids))

    def _weights(self, batch: TaskBatch) -> torch.Tensor:
        ids = self._items
        return self.item_weight[ids] if batch.all_positions else torch.ones(len(ids), device=ids.device)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        ids = self._items
        per_item = F.binary_cross_entropy_with_logits(self.logits(batch, ids), self.labels[ids], reduction="none")
        if not len(ids):
            return masked_mean(per_item, per_item)
        weights = self._weights(batch)
        return (per_item.mean(-1) * weights).sum() / weights.sum()

    @property
    def label_width(self) -> int:
        return self.labels.shape[1]

    def known_labels(self, ids: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        """True categories of training items; the head's probabilities (detached) for every other item."""
        predicted = torch.sigmoid(self.head(representation)).detach()
        return torch.where(self.is_train_item[ids].unsqueeze(1), self.labels[ids], predicted)

    def count(self, batch: TaskBatch) -> float:
        return float(self._weights(batch).sum())

    def held_out(self, phase: str) -> torch.Tensor:
        """Item ids of ``phase`` (``valid`` or ``test``)."""
        return getattr(self, f"{phase}_items")

    def decode(self, probs: torch.Tensor, threshold: Optional[float] = None) -> torch.Tensor:
        """Predicted labels ``[N, C]`` (bool): the top label and every label at or above the threshold."""
        threshold = float(self.threshold) if threshold is None else threshold
        preds = probs >= threshold
        if probs.shape[1]:
            preds[torch.arange(len(probs)), probs.argmax(1)] = True
        return preds

    def fit_threshold(self, probs: torch.Tensor, labels: torch.Tensor) -> float:
        """The threshold of :data:`THRESHOLDS` with the best micro-F1 on ``probs``; kept in the model."""
        truth = labels.detach().cpu() > 0.5
        probs = probs.detach().cpu()
        best = max(THRESHOLDS, key=lambda t: (prf(*binary_counts(self.decode(probs, t), truth)[:3])[2], -abs(t - 0.5)))
        self.threshold.fill_(best)
        return best

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``category_*`` metrics of probabilities ``[N, C]`` against multi-hot labels ``[N, C]``.

        Macro averages run over the categories that occur in ``labels`` or in the predictions.
        """
        probs, labels = predictions.detach().cpu(), labels.detach().cpu() > 0.5
        if probs.numel() == 0:
            return {}
        preds = self.decode(probs)
        tp, fp, fn, _ = binary_counts(preds, labels)
        micro = prf(tp, fp, fn)
        per_label = [prf(*binary_counts(preds[:, c], labels[:, c])[:3])
                     for c in range(labels.shape[1]) if labels[:, c].any() or preds[:, c].any()]
        macro = [sum(x[i] for x in per_label) / len(per_label) if per_label else 0.0 for i in range(3)]
        return self._round({
            "accuracy": (preds == labels).all(dim=1).float().mean().item(),
            "label_accuracy": (preds == labels).float().mean().item(),
            "micro_precision": micro[0], "micro_recall": micro[1], "micro_f1": micro[2],
            "macro_precision": macro[0], "macro_recall": macro[1], "macro_f1": macro[2],
            "threshold": float(self.threshold),
        })
