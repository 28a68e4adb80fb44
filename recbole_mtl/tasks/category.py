"""Category task: which categories an item belongs to (multi-label), from its representation.

The representation comes from the item's ID embedding and attributes, never from the label field.
Loss: binary cross-entropy per label over training items. Metrics on held-out items, at
probability 0.5: exact-match accuracy, per-label accuracy, micro and macro precision, recall, F1.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from recbole_mtl.tasks.common import MLP, binary_counts, prf


class CategoryHead(nn.Module):
    """Item representation ``[N, D]`` -> category logits ``[N, C]``."""

    def __init__(self, dim: int, num_categories: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.mlp = MLP(dim, hidden, num_categories, dropout)

    def forward(self, item: torch.Tensor) -> torch.Tensor:
        return self.mlp(item)


class CategoryTask:
    """Loss and metrics of the category task."""

    name = "category"
    metric_names = ("accuracy", "label_accuracy", "micro_precision", "micro_recall", "micro_f1",
                    "macro_precision", "macro_recall", "macro_f1")

    def __init__(self, config):
        self.decimals = int(config["metric_decimal_place"] or 4)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    def metrics(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``category_*`` metrics of probabilities ``[N, C]`` against multi-hot labels ``[N, C]``.

        Macro averages run over the categories that occur in ``labels`` or in the predictions.
        """
        probs, labels = probs.detach().cpu(), labels.detach().cpu() > 0.5
        if probs.numel() == 0:
            return {}
        preds = probs >= 0.5
        tp, fp, fn, _ = binary_counts(preds, labels)
        micro = prf(tp, fp, fn)
        per_label = [prf(*binary_counts(preds[:, c], labels[:, c])[:3])
                     for c in range(labels.shape[1]) if labels[:, c].any() or preds[:, c].any()]
        macro = [sum(x[i] for x in per_label) / len(per_label) if per_label else 0.0 for i in range(3)]
        values = {
            "accuracy": (preds == labels).all(dim=1).float().mean().item(),
            "label_accuracy": (preds == labels).float().mean().item(),
            "micro_precision": micro[0], "micro_recall": micro[1], "micro_f1": micro[2],
            "macro_precision": macro[0], "macro_recall": macro[1], "macro_f1": macro[2],
        }
        return {f"category_{k}": round(v, self.decimals) for k, v in values.items()}
