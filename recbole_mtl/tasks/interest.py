"""Interest task: will the user like the target item (e.g. rating >= 4)?

Head input: the shared user representation ``u`` [B, D] and the item representation ``v`` [B, D];
the head sees ``[u, v, u * v]``. Loss: binary cross-entropy. Metrics: AUC and LogLoss computed
by RecBole's own metric classes (the numbers DeepFM reports), accuracy, precision, recall and F1
at probability 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from recbole.evaluator.metrics import AUC, LogLoss
from torch import nn
from torch.nn import functional as F

from recbole_mtl.tasks.common import MLP, binary_counts, prf


class InterestHead(nn.Module):
    """Scores user-item pairs: ``[B, D], [B, D] -> [B]`` logits."""

    def __init__(self, dim: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.mlp = MLP(3 * dim, hidden, 1, dropout)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([user, item, user * item], dim=-1)).squeeze(-1)


class InterestTask:
    """Loss and metrics of the interest task."""

    name = "interest"
    metric_names = ("auc", "logloss", "accuracy", "precision", "recall", "f1")

    def __init__(self, config):
        self._auc = AUC(config)
        self._logloss = LogLoss(config)
        self.decimals = int(config["metric_decimal_place"] or 4)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())

    def metrics(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """``interest_*`` metrics of probabilities ``[N]`` against 0/1 labels ``[N]``."""
        probs, labels = probs.detach().double().cpu(), labels.detach().cpu()
        if probs.numel() == 0:
            return {}
        preds, trues = probs.numpy(), labels.numpy().astype(np.float64)
        tp, fp, fn, tn = binary_counts(probs >= 0.5, labels > 0.5)
        precision, recall, f1 = prf(tp, fp, fn)
        values = {
            "auc": float(self._auc.metric_info(preds, trues)) if 0 < trues.sum() < len(trues) else float("nan"),
            "logloss": float(self._logloss.metric_info(preds, trues)),
            "accuracy": (tp + tn) / len(trues),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
        return {f"interest_{k}": round(v, self.decimals) for k, v in values.items()}
