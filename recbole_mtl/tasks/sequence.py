"""Sequence task: the next item, scored against the whole item table.

The head maps the shared user representation to the item space; scores are dot products with the
item table's rows (the same table that embeds the input sequence). Loss: cross-entropy over all
items (``sequence_loss: ce``) or over the target and ``num_negatives`` uniformly sampled items
shared by the batch (``sequence_loss: sampled``, for big catalogues). Metrics: RecBole's
full-ranking evaluator (Recall, NDCG, MRR, Hit @K), run by the trainer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from recbole_mtl.errors import ConfigError


class SequenceHead(nn.Module):
    """User representation ``[B, D]`` -> query ``[B, D]`` in the item-embedding space."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, user: torch.Tensor) -> torch.Tensor:
        return self.proj(user)


class SequenceTask:
    """Loss of the sequence task; candidates are chosen by :meth:`candidates`."""

    name = "sequence"

    def __init__(self, config, n_items: int):
        self.loss_type = str(config["sequence_loss"] or "ce").lower()
        if self.loss_type not in ("ce", "sampled"):
            raise ConfigError(f"sequence_loss must be 'ce' or 'sampled', got '{self.loss_type}'.")
        self.num_negatives = int(config["num_negatives"] or 0)
        if self.loss_type == "sampled" and not 0 < self.num_negatives < n_items:
            raise ConfigError(f"num_negatives must be in [1, {n_items - 1}] with sequence_loss: sampled.")
        self.n_items = n_items

    def candidates(self, device: torch.device) -> torch.Tensor:
        """Item ids to score in training: all items, or a uniform sample (ids >= 1)."""
        if self.loss_type == "ce":
            return torch.arange(self.n_items, device=device)
        return torch.randint(1, self.n_items, (self.num_negatives,), device=device)

    def loss(self, query: torch.Tensor, target_emb: torch.Tensor, candidate_emb: torch.Tensor,
             targets: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target item.

        Args:
            query: ``[B, D]`` head output.
            target_emb: ``[B, D]`` embeddings of the target items.
            candidate_emb: ``[N, D]`` embeddings of :meth:`candidates`.
            targets: ``[B]`` target item ids.
            candidate_ids: ``[N]`` ids of the candidates (sampled negatives that hit the target
                are masked out).
        """
        logits = query @ candidate_emb.t()
        if self.loss_type == "ce":
            return F.cross_entropy(logits, targets)
        logits = logits.masked_fill(candidate_ids.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        pos = (query * target_emb).sum(-1, keepdim=True)
        return F.cross_entropy(torch.cat([pos, logits], dim=1), torch.zeros_like(targets))
