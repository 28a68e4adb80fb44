"""Sequence task: the next item, scored against the whole item table.

The head maps the user representation at a position to the item space; scores are dot products
with the item-id embeddings (the table that embeds the input sequence). Loss at every counted
position: cross-entropy over all items (``sequence_loss: ce``) or over the target and
``num_negatives`` uniformly sampled items shared by the batch (``sequence_loss: sampled``, for big
catalogues). Metrics: RecBole's full-ranking evaluator (Recall, NDCG, MRR, Hit @K), run by the trainer.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.base import Task, TaskBatch


class SequenceTask(Task):
    name = "sequence"
    evaluation = "ranking"
    inference = "recommend"
    valid_metric = "NDCG@10"
    metric_names = ("ndcg@10", "hit@10", "recall@10", "mrr@10", "precision@10")
    plotted = ("ndcg@10", "hit@10")
    reads_item_representation = False  # scores against id embeddings (with text) only

    def __init__(self, config, dataset, dim: int, dropout: float):
        super().__init__(config, dataset, dim, dropout)
        self.head = nn.Linear(dim, dim)
        self.n_items = dataset.item_num
        self.loss_type = str(config["sequence_loss"] or "ce").lower()
        if self.loss_type not in ("ce", "sampled"):
            raise ConfigError(f"sequence_loss must be 'ce' or 'sampled', got '{self.loss_type}'.")
        self.num_negatives = int(config["num_negatives"] or 0)
        if self.loss_type == "sampled" and not 0 < self.num_negatives < self.n_items:
            raise ConfigError(f"num_negatives must be in [1, {self.n_items - 1}] with sequence_loss: sampled.")
        self._candidates: Optional[torch.Tensor] = None

    def items(self, batch: TaskBatch) -> torch.Tensor:
        device = batch.next_item.device
        if not batch.training or self.loss_type == "ce":
            self._candidates = torch.arange(self.n_items, device=device)
        else:
            self._candidates = torch.randint(1, self.n_items, (self.num_negatives,), device=device)
        return torch.cat([self._candidates, batch.next_item])

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        query = self.head(batch.user(self.name))  # [N, D]
        candidates, targets = self._candidates, batch.next_item
        logits = query @ batch.item_embedding(candidates).t()  # [N, n_candidates]
        if self.loss_type == "ce":
            return F.cross_entropy(logits, targets)
        logits = logits.masked_fill(candidates.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        pos = (query * batch.item_embedding(targets)).sum(-1, keepdim=True)
        return F.cross_entropy(torch.cat([pos, logits], dim=1), torch.zeros_like(targets))

    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Scores ``[B, n_items]`` of every item."""
        return self.head(batch.user(self.name)) @ batch.item_embedding(self._candidates).t()

    def score(self, batch: TaskBatch) -> torch.Tensor:
        """Score ``[B]`` of each history's next item (RecBole's sampled evaluation)."""
        return (self.head(batch.user(self.name)) * batch.item_embedding(batch.next_item)).sum(-1)
