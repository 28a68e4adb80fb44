"""Causal sequence encoders: item-embedding sequences ``[B, L, D]`` -> a state at every position ``[B, L, D]``.

The state at position ``t`` has seen the items at positions ``0..t`` only (causal), so one pass over
a window predicts every position's next interaction. Padding (positions ``>= lengths``) never
reaches a real position.

``encoder``:

* ``lstm`` / ``gru`` (the source article uses an LSTM);
* ``transformer``: causal self-attention in SASRec's style, built from RecBole's ``TransformerEncoder``;
* ``hstu``: the Hierarchical Sequential Transduction Unit of "Actions Speak Louder than Words"
  (Zhai et al., ICML 2024), see :class:`HSTUEncoder`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from recbole.model.layers import TransformerEncoder
from torch import nn
from torch.nn import functional as F

from recbole_mtl.errors import ConfigError

#: ``(query_times, key_times)``, each ``[B, L]``: see :class:`HSTUEncoder`.
Times = tuple[torch.Tensor, torch.Tensor]


def last_position(output: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``output[b, lengths[b] - 1]``: ``[B, L, D], [B] -> [B, D]``."""
    index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, output.shape[-1])
    return output.gather(1, index).squeeze(1)


def causal_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """``[B, 1, L, L]`` bool: query ``i`` may attend to key ``j`` (``j <= i`` and ``j`` is not padding)."""
    positions = torch.arange(L, device=lengths.device)
    valid = positions.unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool, device=lengths.device))
    return valid.unsqueeze(1).unsqueeze(2) & causal


class RNNEncoder(nn.Module):
    """LSTM or GRU over the item sequence (causal by construction)."""

    def __init__(self, kind: str, dim: int, num_layers: int, dropout: float):
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.dropout = nn.Dropout(dropout)
        self.rnn = rnn(dim, dim, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, times: Optional[Times] = None) -> torch.Tensor:
        output, _ = self.rnn(self.dropout(seq))
        return output


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

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, times: Optional[Times] = None) -> torch.Tensor:
        L = seq.shape[1]
        x = self.dropout(self.norm(seq + self.position(torch.arange(L, device=seq.device)).unsqueeze(0)))
        mask = torch.where(causal_mask(lengths, L), 0.0, -10000.0).to(x.dtype)
        return self.layers(x, mask, output_all_encoded_layers=False)[-1]


class RelativeBias(nn.Module):
    """HSTU's relative attention bias ``rab^{p,t}``: ``[B, L]`` -> ``[B, L, L]`` added to ``Q K^T``.

    A learned scalar per relative position ``i - j`` (``0..L-1``) and, when timestamps are given,
    a learned scalar per bucket of the time gap ``floor(log(max(1, |t_{i+1} - t_j|)) / 0.301)``, where
    ``t_{i+1}`` is the time of the interaction query ``i`` predicts (as in the paper's code), clipped
    to ``num_buckets``.
    """

    def __init__(self, max_len: int, num_buckets: int = 128):
        super().__init__()
        self.max_len, self.num_buckets = max_len, num_buckets
        self.position = nn.Parameter(torch.empty(max_len).normal_(0, 0.02))
        self.time = nn.Parameter(torch.empty(num_buckets + 1).normal_(0, 0.02))

    def forward(self, L: int, query_times: Optional[torch.Tensor], key_times: Optional[torch.Tensor]) -> torch.Tensor:
        i = torch.arange(L, device=self.position.device)
        distance = (i.unsqueeze(1) - i.unsqueeze(0)).clamp(0, self.max_len - 1)
        bias = self.position[distance].unsqueeze(0)  # [1, L, L]
        if query_times is not None and key_times is not None:
            gap = (query_times.unsqueeze(2) - key_times.unsqueeze(1)).abs().clamp(min=1).float()
            bucket = (torch.log(gap) / 0.301).long().clamp(0, self.num_buckets)
            bias = bias + self.time[bucket]  # [B, L, L]
        return bias


class HSTULayer(nn.Module):
    """One HSTU layer (Zhai et al., 2024, eq. 1-3), with a residual connection.

    ``U, V, Q, K = split(SiLU(f1(LayerNorm(X))))``;
    ``A = SiLU(Q K^T + rab) / n`` over the causal, non-padding keys (``n``: the window length ``L``);
    ``Y = f2(LayerNorm(A V) * U)``; output ``X + Dropout(Y)``. Attention is pointwise (no softmax),
    so a position's weights need not sum to one and the intensity of a user's engagement is kept.
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        if dim % n_heads:
            raise ConfigError(f"embedding_size ({dim}) must be divisible by n_heads ({n_heads}) for encoder: hstu.")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.input_norm = nn.LayerNorm(dim, eps=eps)
        self.f1 = nn.Linear(dim, 4 * dim)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.f2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = nn.Dropout(attn_dropout)

    def attention(self, x: torch.Tensor, allowed: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A V) [B, L, D]`` and ``U [B, L, D]`` of ``x`` ``[B, L, D]``; ``allowed`` ``[B, 1, L, L]``."""
        B, L, D = x.shape
        u, v, q, k = F.silu(self.f1(self.input_norm(x))).chunk(4, dim=-1)
        heads = lambda t: t.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)  # noqa: E731
        scores = heads(q) @ heads(k).transpose(-1, -2) + bias.unsqueeze(1)  # [B, H, L, L]
        weights = F.silu(scores) / L * allowed
        out = self.attn_dropout(weights) @ heads(v)  # [B, H, L, d]
        return out.transpose(1, 2).reshape(B, L, D), u

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        av, u = self.attention(x, allowed, bias)
        return x + self.dropout(self.f2(self.attn_norm(av) * u))


class HSTUEncoder(nn.Module):
    """A stack of :class:`HSTULayer` sharing one :class:`RelativeBias`; no absolute positions.

    ``times`` (optional): ``(query_times, key_times)``, each ``[B, L]`` in seconds: when the
    interaction each position predicts happens, and when each input happened; with them the bias
    also depends on time gaps.
    """

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float,
                 attn_dropout: float, eps: float):
        super().__init__()
        self.bias = RelativeBias(max_len)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(HSTULayer(dim, n_heads, dropout, attn_dropout, eps) for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor, times: Optional[Times] = None) -> torch.Tensor:
        L = seq.shape[1]
        allowed = causal_mask(lengths, L)
        bias = self.bias(L, *(times if times is not None else (None, None)))
        x = self.input_dropout(seq * math.sqrt(seq.shape[-1]))
        for layer in self.layers:
            x = layer(x, allowed, bias)
        return self.norm(x)


ENCODERS = ("lstm", "gru", "transformer", "hstu")


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
    if kind == "hstu":
        return HSTUEncoder(dim, max_len, int(config["n_layers"]), int(config["n_heads"]),
                           float(config["hidden_dropout_prob"]), float(config["attn_dropout_prob"]),
                           float(config["layer_norm_eps"]))
    raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}; got '{kind}'.")
