"""Small pieces the task heads share (an MLP)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> ReLU -> Dropout blocks, then a final Linear (no activation).

    Args:
        in_dim: input width.
        hidden: widths of the hidden layers (may be empty).
        out_dim: output width.
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        super().__init__(*layers)


def binary_counts(pred: torch.Tensor, true: torch.Tensor) -> tuple[float, float, float, float]:
    """True positives, false positives, false negatives, true negatives of 0/1 tensors."""
    pred, true = pred.bool(), true.bool()
    tp = (pred & true).sum().item()
    fp = (pred & ~true).sum().item()
    fn = (~pred & true).sum().item()
    tn = (~pred & ~true).sum().item()
    return float(tp), float(fp), float(fn), float(tn)


def prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1
