"""Sequence task: the next item, scored against the whole item table.

The head maps the user representation at a position to the item space; an item's score is
``<q, e_i>``, the dot product of that query with the item-id embedding (the table that embeds the
input sequence), or, with ``sequence_score: cosine``, ``<q / |q|, e_i / |e_i|> / tau``: both L2-normalised,
over a temperature ``tau`` (``sequence_temperature``; learned, from that start, with
``learn_temperature: True``).

Loss at every counted position:

* ``sequence_loss: ce``: softmax cross-entropy over all items;
* ``sequence_loss: sampled``: softmax over the target and negatives shared by the batch, drawn by
  ``negative_sampling``: ``uniform`` (``num_negatives`` items), ``popularity`` (``num_negatives``
  items drawn with probability proportional to their training frequency) or ``in_batch`` (the
  batch's other targets). A negative equal to a row's target is masked (an accidental hit). With
  ``logq_correction`` (default on), every logit, the target's included, has ``log Q(i)`` subtracted,
  ``Q`` the sampling distribution (popularity; for ``in_batch`` the training frequency, as targets
  are drawn by it), so that the sampled softmax estimates the full one (Bengio & Senecal 2008;
  Yi et al., RecSys 2019). Under ``uniform`` ``log Q`` is a constant and changes nothing.

Metrics: RecBole's full-ranking evaluator (Recall, NDCG, MRR, Hit @K), run by the trainer.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.base import Task, TaskBatch

SCORES = ("dot", "cosine")
LOSSES = ("ce", "sampled")
SAMPLERS = ("uniform", "popularity", "in_batch")


def _choice(config, key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = str(config[key] if config[key] is not None else default).lower()
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got '{value}'.")
    return value


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
        self.score_type = _choice(config, "sequence_score", "dot", SCORES)
        self.loss_type = _choice(config, "sequence_loss", "ce", LOSSES)
        self.sampler = _choice(config, "negative_sampling", "uniform", SAMPLERS)
        self.logq = bool(config["logq_correction"] if config["logq_correction"] is not None else True)
        self.num_negatives = int(config["num_negatives"] or 0)
        if self.loss_type == "sampled" and self.sampler != "in_batch" and not 0 < self.num_negatives < self.n_items:
            raise ConfigError(f"num_negatives must be in [1, {self.n_items - 1}] with sequence_loss: sampled "
                              f"and negative_sampling: {self.sampler}; got {config['num_negatives']}.")
        tau = float(config["sequence_temperature"] if config["sequence_temperature"] is not None else 0.05)
        if not 0 < tau <= 10:
            raise ConfigError(f"sequence_temperature must be in (0, 10]; got {config['sequence_temperature']}.")
        # log(1 / tau), learned or fixed (a buffer travels with checkpoints either way)
        log_scale = torch.tensor(math.log(1.0 / tau))
        if config["learn_temperature"]:
            if self.score_type != "cosine":
                raise ConfigError("learn_temperature: True needs sequence_score: cosine (the temperature divides "
                                  "normalised scores; dot-product scores carry their own scale).")
            self.log_scale = nn.Parameter(log_scale)
        else:  # set by the config, so not part of the checkpoint's tensors
            self.register_buffer("log_scale", log_scale, persistent=False)
        # log Q(i) of the popularity distribution (training frequency of each item as a target)
        counts = torch.bincount(dataset.inter_feat[dataset.iid_field].long(), minlength=self.n_items).double()
        counts[0] = 0.0  # padding is never a candidate
        self.register_buffer("log_popularity", torch.log((counts + 1e-12) / counts.sum()).float(), persistent=False)
        self.register_buffer("popularity", (counts / counts.sum()).float(), persistent=False)
        self._candidates: Optional[torch.Tensor] = None

    # -- scores ----------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        """``1 / tau`` (at most 100: ``tau >= 0.01``, so a learned temperature cannot run away)."""
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def query(self, batch: TaskBatch) -> torch.Tensor:
        """``[N, D]`` query of each position: the head's output (normalised and scaled for cosine)."""
        q = self.head(batch.user(self.name))
        return F.normalize(q, dim=-1) * self.scale() if self.score_type == "cosine" else q

    def item_vectors(self, batch: TaskBatch, ids: torch.Tensor) -> torch.Tensor:
        emb = batch.item_embedding(ids)
        return F.normalize(emb, dim=-1) if self.score_type == "cosine" else emb

    # -- candidates ------------------------------------------------------------------------
    def items(self, batch: TaskBatch) -> torch.Tensor:
        device = batch.next_item.device
        if not batch.training or self.loss_type == "ce":
            self._candidates = torch.arange(self.n_items, device=device)
        elif self.sampler == "uniform":
            self._candidates = torch.randint(1, self.n_items, (self.num_negatives,), device=device)
        elif self.sampler == "popularity":
            self._candidates = torch.multinomial(self.popularity.to(device), self.num_negatives, replacement=True)
        else:  # in_batch: the batch's targets, each once
            self._candidates = torch.unique(batch.next_item)
        return torch.cat([self._candidates, batch.next_item])

    def loss(self, batch: TaskBatch) -> torch.Tensor:
        query = self.query(batch)  # [N, D]
        candidates, targets = self._candidates, batch.next_item
        logits = query @ self.item_vectors(batch, candidates).t()  # [N, n_candidates]
        if self.loss_type == "ce":
            return F.cross_entropy(logits, targets)
        pos = (query * self.item_vectors(batch, targets)).sum(-1, keepdim=True)
        if self.logq and self.sampler != "uniform":
            log_q = self.log_popularity.to(logits.device)
            logits = logits - log_q[candidates].unsqueeze(0)
            pos = pos - log_q[targets].unsqueeze(1)
        logits = logits.masked_fill(candidates.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
        return F.cross_entropy(torch.cat([pos, logits], dim=1), torch.zeros_like(targets))

    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Scores ``[B, n_items]`` of every item."""
        return self.query(batch) @ self.item_vectors(batch, self._candidates).t()

    def score(self, batch: TaskBatch) -> torch.Tensor:
        """Score ``[B]`` of each history's next item (RecBole's sampled evaluation)."""
        return (self.query(batch) * self.item_vectors(batch, batch.next_item)).sum(-1)
