"""How the user-side tasks share one representation: the mixture between encoder and heads.

Every mixture maps ``[B, in_dim]`` user inputs (sequence state, user features) and the sequence
encoder's state ``base`` ``[B, D]`` to one representation ``[B, D]`` per task, added to ``base``
and layer-normalised, so the user features refine the sequence state rather than replace it.

* ``SharedBottom``: one MLP for all tasks (MTLRec);
* ``MultiGateMixture``: ``num_experts`` shared expert MLPs and one softmax gate per task
  (MMoE, Ma et al., KDD 2018);
* ``ProgressiveLayeredExtraction``: ``num_levels`` CGC layers, each with shared and task-specific
  experts, a gate per task over its own and the shared experts, and (below the top level) a
  gate over every expert that feeds the next level's shared experts (PLE, Tang et al., RecSys 2020).

Each mixture names, in :meth:`last_shared_parameters`, its last dense layer that more than one task
reads (GradNorm measures the per-task gradient norms there).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.common import MLP


class SharedBottom(nn.Module):
    """``[B, in_dim], [B, out_dim] -> {task: [B, out_dim]}``, the same tensor for every task.

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

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.mlp[-1].weight]


def _count(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}; got {value!r}. Set --{key}=... "
                          f"(defaults in properties/model/MMoE.yaml and PLE.yaml).")
    return value


def _mix(gate: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """``[B, K] gate weights, [B, K, D] expert outputs -> [B, D]``."""
    return torch.bmm(gate.unsqueeze(1), experts).squeeze(1)


class MultiGateMixture(nn.Module):
    """MMoE: ``num_experts`` shared experts, one softmax gate per task.

    ``rep_t = LayerNorm_t(base + sum_k gate_t(x)_k * expert_k(x))``, ``gate_t(x) = softmax(W_t x)``.

    Args:
        in_dim: width of the concatenated user inputs.
        hidden: hidden widths of each expert MLP.
        out_dim: width D of each expert's output and of every task representation.
        tasks: the user-side tasks, one gate each.
        num_experts: K, the number of experts.
        dropout: dropout on the experts' hidden layers.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, tasks: Sequence[str],
                 num_experts: int, dropout: float):
        super().__init__()
        self.tasks = list(tasks)
        num_experts = _count(num_experts, "num_experts", 1)
        self.experts = nn.ModuleList(MLP(in_dim, hidden, out_dim, dropout) for _ in range(num_experts))
        self.gate = nn.ModuleDict({t: nn.Linear(in_dim, num_experts) for t in self.tasks})
        self.norm = nn.ModuleDict({t: nn.LayerNorm(out_dim) for t in self.tasks})

    def gates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each task's gate weights ``[B, K]`` (rows sum to 1)."""
        return {t: torch.softmax(self.gate[t](x), dim=-1) for t in self.tasks}

    def forward(self, x: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, K, D]
        return {t: self.norm[t](base + _mix(g, experts)) for t, g in self.gates(x).items()}

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [e[-1].weight for e in self.experts]


class ExtractionLayer(nn.Module):
    """One CGC layer of PLE: shared and task-specific experts with per-task gates.

    Args:
        in_dim: width of each branch's input.
        hidden: hidden widths of each expert MLP.
        out_dim: width D of each expert's output.
        tasks: the tasks, one branch each.
        num_shared: shared experts.
        num_specific: experts of each task.
        shared_gate: also gate every expert into the shared branch's output (every level but the top).
        dropout: dropout on the experts' hidden layers.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, tasks: Sequence[str],
                 num_shared: int, num_specific: int, shared_gate: bool, dropout: float):
        super().__init__()
        self.tasks = list(tasks)
        self.shared = nn.ModuleList(MLP(in_dim, hidden, out_dim, dropout) for _ in range(num_shared))
        self.specific = nn.ModuleDict({
            t: nn.ModuleList(MLP(in_dim, hidden, out_dim, dropout) for _ in range(num_specific)) for t in self.tasks
        })
        self.gate = nn.ModuleDict({t: nn.Linear(in_dim, num_specific + num_shared) for t in self.tasks})
        self.shared_gate = (nn.Linear(in_dim, len(self.tasks) * num_specific + num_shared)
                            if shared_gate else None)

    def forward(self, inputs: dict[str, torch.Tensor], shared_input: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor]]:
        """Per-task outputs ``[B, D]``, the shared branch's output (or ``None``) and the gates.

        Args:
            inputs: each task's input ``[B, in_dim]``.
            shared_input: the shared branch's input ``[B, in_dim]``.
        """
        shared = [e(shared_input) for e in self.shared]
        specific = {t: [e(inputs[t]) for e in self.specific[t]] for t in self.tasks}
        gates = {t: torch.softmax(self.gate[t](inputs[t]), dim=-1) for t in self.tasks}
        outputs = {t: _mix(gates[t], torch.stack(specific[t] + shared, dim=1)) for t in self.tasks}
        shared_out = None
        if self.shared_gate is not None:
            gates["shared"] = torch.softmax(self.shared_gate(shared_input), dim=-1)
            every = [o for t in self.tasks for o in specific[t]] + shared
            shared_out = _mix(gates["shared"], torch.stack(every, dim=1))
        return outputs, shared_out, gates


class ProgressiveLayeredExtraction(nn.Module):
    """PLE: ``num_levels`` stacked CGC layers (:class:`ExtractionLayer`).

    Level 1 reads ``x`` in every branch; level ``l > 1`` reads each task's and the shared branch's
    level ``l - 1`` output. ``rep_t = LayerNorm_t(base + top-level output_t)``.

    Args:
        in_dim: width of the concatenated user inputs.
        hidden: hidden widths of each expert MLP.
        out_dim: width D of every expert's output and of every task representation.
        tasks: the user-side tasks.
        num_levels: CGC layers.
        num_shared: shared experts per level.
        num_specific: experts per task per level.
        dropout: dropout on the experts' hidden layers.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, tasks: Sequence[str],
                 num_levels: int, num_shared: int, num_specific: int, dropout: float):
        super().__init__()
        self.tasks = list(tasks)
        num_levels = _count(num_levels, "num_levels", 1)
        num_shared = _count(num_shared, "num_shared_experts", 1)
        num_specific = _count(num_specific, "num_specific_experts", 1)
        self.levels = nn.ModuleList(
            ExtractionLayer(in_dim if level == 0 else out_dim, hidden, out_dim, self.tasks, num_shared,
                            num_specific, shared_gate=level < num_levels - 1, dropout=dropout)
            for level in range(num_levels)
        )
        self.norm = nn.ModuleDict({t: nn.LayerNorm(out_dim) for t in self.tasks})

    def _run(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        inputs, shared, all_gates = {t: x for t in self.tasks}, x, []
        for layer in self.levels:
            inputs, shared, gates = layer(inputs, shared)
            all_gates.append(gates)
        return inputs, all_gates

    def gates(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Gate weights of every level: ``{task: [B, specific + shared], 'shared': [B, all experts]}``."""
        return self._run(x)[1]

    def forward(self, x: torch.Tensor, base: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs, _ = self._run(x)
        return {t: self.norm[t](base + outputs[t]) for t in self.tasks}

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [e[-1].weight for e in self.levels[-1].shared]
