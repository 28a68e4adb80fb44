"""Frozen PLM item vectors -> learned adapter -> fused with the item-id embedding.

``text_adapter``: ``linear`` (one Linear layer) or ``whiten_mlp`` (the vectors are centred and
whitened once with their own mean and covariance, then a two-layer MLP). ``text_fusion``:
``add`` (``e + t``), ``concat`` (``Linear([e, t])``) or ``gate`` (``g * e + (1 - g) * t`` with
``g = sigmoid(Linear([e, t]))``). Items never seen in training keep an untrained id embedding,
so their representation, and so their scores and categories, come from their text.
:meth:`TextFusion.fuse_vectors` does the same for PLM vectors of items outside the table (new
items), through the same whitening and adapter.
"""

from __future__ import annotations

import torch
from torch import nn

from recbole_mtl.errors import ConfigError


class TextFusion(nn.Module):
    """``ids [*], id_emb [*, D] -> [*, D]``.

    Args:
        vectors: frozen PLM vectors ``[n_items, P]`` (row 0, padding, zero).
        dim: embedding dimension D.
        adapter: ``linear`` or ``whiten_mlp``.
        fusion: ``add``, ``concat`` or ``gate``.
    """

    def __init__(self, vectors: torch.Tensor, dim: int, adapter: str = "linear", fusion: str = "add"):
        super().__init__()
        if adapter not in ("linear", "whiten_mlp"):
            raise ConfigError(f"text_adapter must be linear or whiten_mlp; got '{adapter}'.")
        if fusion not in ("add", "concat", "gate"):
            raise ConfigError(f"text_fusion must be add, concat or gate; got '{fusion}'.")
        self.whiten = adapter == "whiten_mlp"
        if self.whiten:
            mean, transform = self._whitening(vectors)
            # kept (not saved: recomputed from the same vectors) to whiten vectors of new items alike
            self.register_buffer("whiten_mean", mean, persistent=False)
            self.register_buffer("whiten_transform", transform, persistent=False)
            vectors = self._apply_whitening(vectors, mean, transform)
            self.adapter = nn.Sequential(nn.Linear(vectors.shape[1], dim), nn.GELU(), nn.Linear(dim, dim))
        else:
            self.adapter = nn.Linear(vectors.shape[1], dim)
        self.register_buffer("vectors", vectors, persistent=False)
        self.fusion = fusion
        if fusion in ("concat", "gate"):
            self.mix = nn.Linear(2 * dim, dim)

    @staticmethod
    def _whitening(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[1, P]`` and whitening transform ``[P, P]`` (float64) of the items' vectors (row 0 aside)."""
        body = vectors[1:].double()
        mean = body.mean(0, keepdim=True)
        cov = torch.cov((body - mean).t())
        eigval, eigvec = torch.linalg.eigh(cov)
        return mean, eigvec / torch.sqrt(eigval.clamp(min=1e-6)).unsqueeze(0)

    @staticmethod
    def _apply_whitening(vectors: torch.Tensor, mean: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(vectors)
        out[1:] = ((vectors[1:].double() - mean) @ transform).float()
        return out

    def fuse_vectors(self, vectors: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        """``[N, P] raw PLM vectors, [N, D] id embeddings -> [N, D]``: what :meth:`forward` gives an
        item of the table, for items outside it (``vectors`` as the feature file would hold them)."""
        if self.whiten:
            vectors = ((vectors.double() - self.whiten_mean) @ self.whiten_transform).float()
        return self._fuse(id_emb, self.adapter(vectors.to(id_emb.dtype)))

    def forward(self, ids: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        if ids.numel() >= self.vectors.shape[0]:  # adapt every item once, then gather (same result, fewer FLOPs)
            text = self.adapter(self.vectors)[ids]
        else:
            text = self.adapter(self.vectors[ids])
        return self._fuse(id_emb, text)

    def _fuse(self, id_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.fusion == "add":
            return id_emb + text
        both = torch.cat([id_emb, text], dim=-1)
        if self.fusion == "concat":
            return self.mix(both)
        gate = torch.sigmoid(self.mix(both))
        return gate * id_emb + (1 - gate) * text
