"""Category task: which categories an item belongs to (multi-label), from its representation.

The representation is the item tower's (item-id embedding with text, attributes), never the label
field. The labelled items are split once (``category_holdout_ratio`` or ``category_folds``): the
held-out items' labels are never read in training. Loss (binary cross-entropy per label): in
training windows, every counted position whose item is a training item, each weighted by the inverse
of how often its item occurs in the training interactions (so every training item weighs the same
over an epoch, as every held-out item does in the metrics, and popular items do not drown the
rest); the loss is the weighted mean over the batch. With ``train_positions: last``,
``category_batch_size`` training items drawn uniformly per step (plain mean).

Head (``category_head``): ``neighbours`` (default) scores an item by attention over the labelled
training items: ``P_i = sum_j softmax_j(t * cos(e_i, e_j)) y_j``, where ``e`` is the item-id embedding
(with text) that the sequence task scores against, ``y_j`` the label vector of training item ``j``
and ``t`` a learned temperature; an item is never its own neighbour. A label can then only be
learned as "items like this one have it", which carries over to held-out items, whose embeddings
the other tasks train; an item cannot store its own labels in its embedding, and the loss pulls
items with shared categories together in the space the other tasks use. Keys: every training item
at evaluation, ``category_keys`` of them drawn per step in training (all when fewer). ``mlp``: an
MLP on the item tower's representation with a sigmoid per label (it can memorise training items;
kept for comparison). Measured on ml-100k in ``results/transducer/report.md``.

Decoding: an item has at least one category, so the top-scoring label is always predicted, plus
every label whose probability reaches ``threshold``. The threshold is chosen on the validation
items (the value of 0.05..0.95 with the best micro-F1) at each validation, kept in the model (and
its checkpoints), and applied unchanged to the test items. Metrics on held-out items: exact-match
accuracy, per-label accuracy, micro and macro precision, recall, F1.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from recbole_mtl.data.labels import LabelSource, register_label_source
from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.base import Task, TaskBatch, masked_mean
from recbole_mtl.tasks.common import MLP, binary_counts, prf

CATEGORY_LABEL = register_label_source(LabelSource(
    task="category", config_key="category_field", file="item", meaning="the item categories"))

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
HEADS = ("neighbours", "mlp")
_EPS = 1e-6


class NeighbourHead(nn.Module):
    """Label attention over labelled items by cosine similarity of their embeddings:
    ``P[i] = sum_j softmax_j(t * cos(e_i, e_j)) y_j``, with a learned temperature ``t``."""

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(2.0))

    def forward(self, query_emb: torch.Tensor, key_emb: torch.Tensor, key_labels: torch.Tensor,
                exclude: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Probabilities ``[N, C]`` of queries ``[N, D]`` from keys ``[K, D]`` with labels ``[K, C]``;
        ``exclude`` ``[N, K]`` (bool) masks keys out (an item's own row)."""
        scores = F.normalize(query_emb, dim=1) @ F.normalize(key_emb, dim=1).t() * self.log_temperature.exp()
        if exclude is not None:
            scores = scores.masked_fill(exclude, float("-inf"))
        # a query with no key left (its own the only one) reads nothing
        return torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0) @ key_labels


class CategoryTask(Task):
    name = "category"
    side = "item"
    evaluation = "items"
    inference = "categorize"
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
        self.head_type = str(config["category_head"] or "neighbours").lower()
        if self.head_type not in HEADS:
            raise ConfigError(f"category_head must be one of {list(HEADS)}; got '{self.head_type}'.")
        self.reads_item_representation = self.head_type == "mlp"
        self.head = NeighbourHead() if self.head_type == "neighbours" else \
            MLP(dim, list(config["tower_hidden"] or []), labels.shape[1], dropout)
        self.batch_size = int(config["category_batch_size"] or 256)
        self.n_keys = int(config["category_keys"] or 4096)
        self.label_features = bool(config["item_label_features"])
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
        self._keys: Optional[torch.Tensor] = None

    def items(self, batch: TaskBatch) -> Optional[torch.Tensor]:
        self._keys = None
        if not batch.training:
            if self.head_type == "neighbours" and self.label_features:  # known_labels of held-out items
                self._keys = self.train_items
                return self._keys
            return None
        if batch.all_positions:
            seen = batch.item
            self._items = seen[self.is_train_item[seen]]
        else:
            train = self.train_items
            self._items = train[torch.randint(len(train), (min(self.batch_size, len(train)),), device=train.device)]
        if self.head_type == "mlp":
            return self._items
        self._keys = self.train_items
        if len(self._keys) > self.n_keys:  # a uniform draw, the batch's own items among them
            drawn = self._keys[torch.randperm(len(self._keys), device=self._keys.device)[:self.n_keys]]
            self._keys = torch.unique(torch.cat([drawn, self._items]))
        return torch.cat([self._items, self._keys])

    def probabilities(self, query_ids: torch.Tensor, query_rep: torch.Tensor, key_ids: torch.Tensor,
                      key_rep: torch.Tensor) -> torch.Tensor:
        """Label probabilities ``[N, C]`` of items ``query_ids`` (representations ``query_rep``); with the
        neighbours head, from the training items ``key_ids`` (``key_rep``), an item never its own key."""
        if self.head_type == "mlp":
            return torch.sigmoid(self.head(query_rep))
        exclude = query_ids.unsqueeze(1) == key_ids.unsqueeze(0)
        return self.head(query_rep, key_rep, self.labels[key_ids], exclude).clamp(_EPS, 1 - _EPS)

    def describe(self, batch: TaskBatch, ids: torch.Tensor) -> torch.Tensor:
        """What the head reads of items ``ids``: the item tower's representation (``mlp``) or the
        item-id embedding with text (``neighbours``)."""
        return batch.item_representation(ids) if self.head_type == "mlp" else batch.item_embedding(ids)

    def _probabilities(self, batch: TaskBatch, ids: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        keys = self._keys
        return self.probabilities(ids, representation, keys, None if keys is None else self.describe(batch, keys))

    def _weights(self, batch: TaskBatch) -> torch.Tensor:
        ids = self._items
        return self.item_weight[ids] if batch.all_positions else torch.ones(len(ids), device=ids.device)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        # each distinct item once, weighted by the sum of its positions' weights (the same mean)
        ids, inverse = torch.unique(self._items, return_inverse=True)
        weights = torch.zeros(len(ids), device=ids.device).index_add_(0, inverse, self._weights(batch))
        if self.head_type == "mlp":
            per_item = F.binary_cross_entropy_with_logits(self.head(batch.item_representation(ids)), self.labels[ids],
                                                          reduction="none")
        else:
            per_item = F.binary_cross_entropy(self._probabilities(batch, ids, self.describe(batch, ids)),
                                              self.labels[ids], reduction="none")
        if not len(ids):
            return masked_mean(per_item, per_item)
        return (per_item.mean(-1) * weights).sum() / weights.sum()

    @property
    def label_width(self) -> int:
        return self.labels.shape[1]

    def known_labels(self, batch: TaskBatch, ids: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        """True categories of training items; the head's probabilities (detached) for every other item."""
        described = self.describe(batch, ids)
        predicted = self._probabilities(batch, ids, described).detach()
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

    def per_item(self, phase: str, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"items", "pred", "label"}``: the held-out item ids of ``phase``, their decoded
        predictions and their labels (bool ``[N, C]``), for per-item significance tests."""
        return {"items": self.held_out(phase).detach().cpu(), "pred": self.decode(probs.detach().cpu()),
                "label": labels.detach().cpu() > 0.5}

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
