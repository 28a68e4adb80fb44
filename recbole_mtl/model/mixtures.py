"""How the user-side tasks share one representation. ``SharedBottom``: one MLP for all tasks."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from recbole_mtl.tasks.common import MLP


class SharedBottom(nn.Module):
    """``[B, in_dim], [B, out_dim] -> {task: [B, out_dim]}``, the same tensor for every task.

    The MLP output is added to ``base`` (the sequence encoder's state), so the user features
    refine the sequence state rather than replace it.

    Args:
        in_dim: width of the concatenated user inputs.
        hidden: hidden widths of the shared MLP.
        out_dim: width D of the shared representation.
        tasks: the user-side tasks that read it.
        dropout: dropout on hidden layers.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, tasks: Sequence[str], dropout: float):
        super().__init__()
        self.tasks = list(tasks)
        self.mlp = MLP(in_dim, hidden, out_dim, dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.norm(base + self.mlp(x))
        return {task: shared for task in self.tasks}
