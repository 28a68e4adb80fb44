"""Sequence encoders: item-embedding sequences ``[B, L, D]`` -> user state ``[B, D]``.

``encoder: lstm | gru`` (the source article uses an LSTM) or ``transformer`` (causal
self-attention in SASRec's style, built from RecBole's own ``TransformerEncoder``).
"""

from __future__ import annotations

import torch
from recbole.model.layers import TransformerEncoder
from torch import nn

from recbole_mtl.errors import ConfigError


def last_position(output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``output[b, lengths[b] - 1]``: ``[B, L, D], [B] -> [B, D]``."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
    return output.gather(1, index).squeeze(1)


class RNNEncoder(nn.Module):
    """LSTM or GRU over the item sequence; the state after the last real item."""

    def __init__(self, kind: str, dim: int, num_layers: int, dropout: float):
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn(dim, dim, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.dropout(seq))
        return last_position(output, lengths)


class CausalTransformerEncoder(nn.Module):
    """SASRec-style encoder: learned positions, LayerNorm, dropout, causal self-attention."""

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, inner_size: int,
                 hidden_dropout: float, attn_dropout: float, hidden_act: str, layer_norm_eps: float):
        super().__init__()
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)
        self.layers = TransformerEncoder(n_layers=n_layers, n_heads=n_heads, hidden_size=dim,
                                         inner_size=inner_size, hidden_dropout_prob=hidden_dropout,
                                         attn_dropout_prob=attn_dropout, hidden_act=hidden_act,
                                         layer_norm_eps=layer_norm_eps)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, L, _ = seq.shape
        positions = torch.arange(L, device=seq.device)
        x = self.dropout(self.norm(seq + self.position(positions).unsqueeze(0)))
        valid = positions.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=seq.device))
        allowed = valid.unsqueeze(1).unsqueeze(2) & causal  # [B, 1, L, L]
        mask = torch.where(allowed, 0.0, -10000.0).to(x.dtype)
        output = self.layers(x, mask, output_all_encoded_layers=False)[-1]
        return last_position(output, lengths)


def build_encoder(config, dim: int, max_len: int) -> nn.Module:
    kind = str(config["encoder"] or "transformer").lower()
    if kind in ("lstm", "gru"):
        return RNNEncoder(kind, dim, int(config["rnn_layers"] or 1), float(config["dropout"] or 0.0))
    if kind == "transformer":
        return CausalTransformerEncoder(
            dim, max_len, int(config["n_layers"]), int(config["n_heads"]), int(config["inner_size"]),
            float(config["hidden_dropout_prob"]), float(config["attn_dropout_prob"]), str(config["hidden_act"]),
            float(config["layer_norm_eps"]),
        )
    raise ConfigError(f"encoder must be lstm, gru or transformer; got '{kind}'.")
