"""Rating task: the value of the next interaction's rating (regression).

At each counted position the head sees the user representation and the item tower's
representation of the next item, as the interest task does, and predicts the raw rating (the
field named by ``rating_label_field``, read before RecBole normalises float fields). Loss: mean
squared error. Metrics: RMSE and MAE computed by RecBole's own metric classes.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.evaluator.metrics import MAE, RMSE
from torch.nn import functional as F

from recbole_mtl.data.labels import LabelSource, register_label_source
from recbole_mtl.tasks.base import PairTask, TaskBatch

RATING_LABEL = register_label_source(LabelSource(
    task="rating", config_key="rating_label_field", file="inter", column="rating_label",
    derive=lambda values, config: values, meaning="the rating value to predict",
))


class RatingTask(PairTask):
    name = "rating"
    label_source = RATING_LABEL
    valid_metric = "rating_rmse"
    metric_names = ("rating_rmse", "rating_mae")
    smaller_is_better = ("rating_rmse", "rating_mae")
    plotted = ("rating_rmse", "rating_mae")

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__(config, dataset, dim, dropout)
        self._rmse, self._mae = RMSE(config), MAE(config)

    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Predicted rating ``[B]`` of the next interaction."""
        return self.pair_scores(batch)

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        return F.mse_loss(self.predict(batch), batch.label(self.label_column).float())

    def metrics(self, predictions: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        if predictions.numel() == 0:
            return {}
        preds = predictions.detach().double().cpu().numpy()
        trues = labels.detach().double().cpu().numpy().astype(np.float64)
        return self._round({"rmse": float(self._rmse.metric_info(preds, trues)),
                            "mae": float(self._mae.metric_info(preds, trues))})
