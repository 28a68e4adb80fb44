"""Task balancing (``loss_balance``): how the per-task losses become one training signal.

The model's ``calculate_loss`` returns each task's loss already multiplied by its
``task_weights`` entry; a balancer multiplies those by its own per-task weights (or, for PCGrad,
changes the gradients they produce). The effective weight of task ``i`` is
``task_weights[i] * multiplier[i]``.

* ``fixed``: multipliers 1, the total is the ``task_weights``-weighted sum (the default).
* ``uncertainty``: Kendall et al., CVPR 2018. Learned log-variances ``s_i``; task ``i`` contributes
  ``exp(-s_i) * L_i + s_i``. ``s`` starts at 0 and trains with the dense optimizer (no weight decay).
* ``gradnorm``: Chen et al., ICML 2018. Weights ``w_i`` (sum = number of tasks) move so that each
  task's gradient norm ``G_i = ||d(w_i L_i)/dW||`` on the last shared dense layers ``W`` approaches
  ``mean(G) * r_i ** alpha``, where ``r_i`` is task ``i``'s loss ratio ``L_i(t) / L_i(0)`` relative
  to the mean ratio: each step, one gradient step of ``sum_i |G_i - target_i| / mean_i(g_i)``
  (targets held constant; ``g_i`` the unweighted norm, so the step does not depend on the
  gradients' scale) with learning rate ``gradnorm_lr``, then renormalised to sum to T.
* ``dwa``: Liu et al., CVPR 2019. After two epochs, ``w_i = T * softmax_i(r_i / temperature)`` with
  ``r_i = L_i(t-1) / L_i(t-2)`` the ratio of task ``i``'s mean training loss over the last two epochs.
* ``pcgrad``: Yu et al., NeurIPS 2020. Each task's gradient on the shared dense parameters is
  projected off the normal plane of every other task's gradient it conflicts with (negative dot
  product), in random order, and the projections are summed.

The embedding tables update inside ``backward`` through TorchRec's fused FBGEMM optimizers, which
never expose their gradients, so the gradient-based methods (``gradnorm``, ``pcgrad``) act on the
dense shared layers only; the tables receive the gradient of the (weighted) sum of the task losses,
applied exactly once per step.

Shapes: T = number of tasks, P = number of shared dense parameter values.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from recbole_mtl.errors import ConfigError

#: Every value ``loss_balance`` accepts (the benchmark iterates these).
BALANCING_METHODS = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad")


class LossBalancer(nn.Module):
    """Base balancer: per-task multipliers of the task-weighted losses, and per-epoch statistics.

    Args:
        tasks: task names, in the order of the losses.
        task_weights: the fixed ``task_weights`` already applied to the losses (for logging the
            effective weight).
    """

    name = "fixed"
    #: Whether the trainer must compute per-task gradients of the shared dense layers each step.
    needs_task_gradients = False

    def __init__(self, tasks: Sequence[str], task_weights: Optional[Sequence[float]] = None):
        super().__init__()
        self.tasks = list(tasks)
        self.task_weights = [float(w) for w in (task_weights or [1.0] * len(self.tasks))]
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def multipliers(self) -> torch.Tensor:
        """The current multiplier of each task ``[T]`` (no gradient)."""
        return torch.ones(self.num_tasks)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """``[T]`` task-weighted losses -> ``[T]`` terms whose sum is the total loss."""
        return self.multipliers().to(losses) * losses

    # -- statistics of one epoch -----------------------------------------------------------
    def record(self, name: str, values: torch.Tensor) -> None:
        """Add a ``[T]`` (or scalar) observation to this epoch's running mean of ``name``."""
        values = values.detach().float().cpu()
        self._sums[name] = self._sums[name] + values if name in self._sums else values.clone()
        self._counts[name] = self._counts.get(name, 0) + 1

    def end_epoch(self) -> dict[str, float]:
        """Close an epoch: update epoch-level state, return what to log, reset the running means.

        Returns:
            ``weight/<task>`` (effective weight: task weight x multiplier) and the epoch means of
            what was recorded (``loss/<task>``, ``grad_norm/<task>``, ...).
        """
        means = {name: self._sums[name] / self._counts[name] for name in self._sums}
        if "loss" in means:
            self.update_epoch(means["loss"])
        self._sums, self._counts = {}, {}
        logged = {f"weight/{t}": w * float(m) for t, w, m in zip(self.tasks, self.task_weights, self.multipliers())}
        for name, value in means.items():
            if name == "loss":
                continue
            if value.dim() == 0:
                logged[name] = float(value)
            else:
                logged.update({f"{name}/{t}": float(v) for t, v in zip(self.tasks, value)})
        return logged

    def update_epoch(self, mean_losses: torch.Tensor) -> None:
        """Epoch-level update from the epoch's mean task-weighted losses ``[T]`` (DWA)."""


class UncertaintyWeighting(LossBalancer):
    """Kendall et al.: ``exp(-s_i) * L_i + s_i`` with learned log-variances ``s`` ``[T]``."""

    name = "uncertainty"

    def __init__(self, tasks: Sequence[str], task_weights: Optional[Sequence[float]] = None):
        super().__init__(tasks, task_weights)
        self.log_vars = nn.Parameter(torch.zeros(self.num_tasks))

    def multipliers(self) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach()).cpu()

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.log_vars) * losses + self.log_vars


class GradNorm(LossBalancer):
    """Chen et al.: weights ``[T]`` that equalise gradient norms at the pace of each task's training.

    Args:
        tasks, task_weights: as :class:`LossBalancer`.
        alpha: strength of the pull towards tasks that train slower (0: equal norms).
        lr: step size of the weight update.
    """

    name = "gradnorm"
    needs_task_gradients = True

    def __init__(self, tasks: Sequence[str], task_weights: Optional[Sequence[float]] = None,
                 alpha: float = 1.5, lr: float = 0.025):
        super().__init__(tasks, task_weights)
        self.alpha, self.lr = float(alpha), float(lr)
        self.register_buffer("weights", torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.zeros(self.num_tasks))  # L(0); zeros until the first step

    def multipliers(self) -> torch.Tensor:
        return self.weights.detach().cpu().clone()

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.weights.clone() * losses  # a copy: :meth:`step` changes the weights in place

    def step(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> torch.Tensor:
        """One GradNorm update of the weights.

        Args:
            losses: ``[T]`` this step's task losses (before the GradNorm weights).
            grad_norms: ``[T]`` ``||dL_i/dW||`` on the last shared layers (before the weights).

        Returns:
            The new weights ``[T]`` (summing to T).
        """
        losses = losses.detach().to(self.weights)
        grad_norms = grad_norms.detach().to(self.weights)
        if not bool((self.initial_losses > 0).all()):
            self.initial_losses.copy_(losses.clamp_min(1e-12))
        norms = self.weights * grad_norms  # G_i
        ratio = losses / self.initial_losses
        target = norms.mean() * (ratio / ratio.mean()) ** self.alpha
        # d/dw_i of sum_j |G_j - target_j| / mean(g), targets held constant: dividing by the mean
        # unweighted norm makes the step size independent of the gradients' scale
        step = torch.sign(norms - target) * grad_norms / grad_norms.mean().clamp_min(1e-12)
        new = (self.weights - self.lr * step).clamp_min(1e-4)
        self.weights.copy_(new * self.num_tasks / new.sum())
        self.record("grad_norm", norms)
        return self.weights.clone()


class DynamicWeightAverage(LossBalancer):
    """Liu et al.: weights from the rate each task's loss fell over the last two epochs.

    Args:
        tasks, task_weights: as :class:`LossBalancer`.
        temperature: softness of the softmax (large: weights near 1).
    """

    name = "dwa"

    def __init__(self, tasks: Sequence[str], task_weights: Optional[Sequence[float]] = None,
                 temperature: float = 2.0):
        super().__init__(tasks, task_weights)
        self.temperature = float(temperature)
        self.register_buffer("weights", torch.ones(self.num_tasks))
        self.register_buffer("history", torch.zeros(2, self.num_tasks))  # mean losses of epochs t-2, t-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def multipliers(self) -> torch.Tensor:
        return self.weights.detach().cpu().clone()

    def update_epoch(self, mean_losses: torch.Tensor) -> None:
        self.history.copy_(torch.stack([self.history[1], mean_losses.to(self.history)]))
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            rate = self.history[1] / self.history[0].clamp_min(1e-12)
            self.weights.copy_(self.num_tasks * torch.softmax(rate / self.temperature, dim=0))


class PCGrad(LossBalancer):
    """Yu et al.: gradient surgery on the shared dense parameters (multipliers stay 1)."""

    name = "pcgrad"
    needs_task_gradients = True

    @staticmethod
    def project(grads: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, float]:
        """Project conflicting task gradients and sum them.

        Args:
            grads: ``[T, P]`` each task's gradient of the shared parameters.
            generator: random order of the other tasks (None: torch's global generator).

        Returns:
            The combined gradient ``[P]`` and the fraction of task pairs whose gradients conflict.
        """
        T = grads.shape[0]
        projected = grads.clone()
        sq_norms = (grads * grads).sum(dim=1)
        for i in range(T):
            for j in torch.randperm(T, generator=generator).tolist():
                if j == i or sq_norms[j] == 0:
                    continue
                dot = projected[i] @ grads[j]
                if dot < 0:
                    projected[i] -= dot / sq_norms[j] * grads[j]
        pairs = [(i, j) for i in range(T) for j in range(i + 1, T)]
        conflicts = sum(bool(grads[i] @ grads[j] < 0) for i, j in pairs)
        return projected.sum(dim=0), conflicts / len(pairs) if pairs else 0.0


def _positive(config, key: str, default: float, allow_zero: bool = False) -> float:
    value = config[key] if config[key] is not None else default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be a number {'>=' if allow_zero else '>'} 0; got {value!r}. "
                          f"Set --{key}=... (default {default}).")
    return float(value)


def build_balancer(config, tasks: Sequence[str], task_weights: Sequence[float]) -> LossBalancer:
    """The balancer named by ``config['loss_balance']`` (default ``fixed``)."""
    name = str(config["loss_balance"] or "fixed").lower()
    if name == "fixed":
        return LossBalancer(tasks, task_weights)
    if name == "uncertainty":
        return UncertaintyWeighting(tasks, task_weights)
    if name == "gradnorm":
        return GradNorm(tasks, task_weights, alpha=_positive(config, "gradnorm_alpha", 1.5, allow_zero=True),
                        lr=_positive(config, "gradnorm_lr", 0.025))
    if name == "dwa":
        return DynamicWeightAverage(tasks, task_weights, temperature=_positive(config, "dwa_temperature", 2.0))
    if name == "pcgrad":
        return PCGrad(tasks, task_weights)
    from recbole_mtl.errors import suggest

    raise ConfigError(f"loss_balance must be one of {', '.join(BALANCING_METHODS)}; got '{name}'."
                      + suggest(name, BALANCING_METHODS))
