"""Interest task: will the user like the next item (e.g. rating >= 4)?

At each counted position the head sees the user representation ``u`` [N, D] and the item tower's
representation ``v`` [N, D] of the item the next interaction is with (target-aware), as
``[u, v, u * v]``. Loss: binary cross-entropy. Metrics: AUC and LogLoss computed by RecBole's own
metric classes (the numbers DeepFM reports), accuracy, precision, recall and F1 at probability 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.evaluator.metrics import AUC, LogLoss
from torch.nn import functional as F

from recbole_mtl.data.labels import LabelSource, register_label_source
from recbole_mtl.tasks.base import PairTask, TaskBatch
from recbole_mtl.tasks.common import binary_counts, prf

INTEREST_LABEL = register_label_source(LabelSource(
    task="interest", config_key="interest_label_field", file="inter", column="interest_label",
    derive=lambda values, config: values >= float(
        config["interest_threshold"] if config["interest_threshold"] is not None else 4.0),
    meaning="the interest label (a value >= interest_threshold means the user liked the item)",
))


class InterestTask(PairTask):
    name = "interest"
    inference = "score"
    label_source = INTEREST_LABEL
    valid_metric = "interest_auc"
    metric_names = ("interest_auc", "interest_logloss", "interest_accuracy", "interest_precision",
                    "interest_recall", "interest_f1")
    smaller_is_better = ("interest_logloss",)
    plotted = ("interest_auc", "interest_f1")

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__(config, dataset, dim, dropout)
        self._auc, self._logloss = AUC(config), LogLoss(config)

    def logits(self, batch: TaskBatch) -> torch.Tensor:
        return self.pair_scores(batch)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits(batch), batch.label(self.label_column).float())

    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Probability ``[B]`` that the user likes the next item."""
        return torch.sigmoid(self.logits(batch))

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return interest_metrics(predictions, labels, self._auc, self._logloss, self.decimals)


def interest_metrics(predictions: torch.Tensor, labels: torch.Tensor, auc: AUC, logloss: LogLoss,
                     decimals: int = 4) -> dict[str, float]:
    """``interest_*`` metrics of probabilities ``[N]`` against 0/1 labels ``[N]`` (also for baselines)."""
    probs, labels = predictions.detach().double().cpu(), labels.detach().cpu()
    if probs.numel() == 0:
        return {}
    preds, trues = probs.numpy(), labels.numpy().astype(np.float64)
    tp, fp, fn, tn = binary_counts(probs >= 0.5, labels > 0.5)
    precision, recall, f1 = prf(tp, fp, fn)
    values = {
        "auc": float(auc.metric_info(preds, trues)) if 0 < trues.sum() < len(trues) else float("nan"),
        "logloss": float(logloss.metric_info(preds, trues)),
        "accuracy": (tp + tn) / len(trues), "precision": precision, "recall": recall, "f1": f1,
    }
    return {f"interest_{k}": round(float(v), decimals) for k, v in values.items()}
