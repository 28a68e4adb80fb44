"""Trainers for the plugin's models (``<Model>Trainer``), extending RecBole's ``Trainer``.

``MultiTaskTrainer`` changes RecBole's loop through small overrides only:

* the dense optimizer covers dense parameters; embedding tables update themselves inside
  ``backward()`` (TorchRec's fused FBGEMM optimizers);
* per-task losses are logged by name, to the log and TensorBoard;
* task balancing (``loss_balance``, :mod:`recbole_mtl.balancing`): the model's balancer turns the
  per-task losses into the terms RecBole sums and back-propagates; for ``gradnorm`` and ``pcgrad``
  the per-task gradients of the shared dense layers come from ``torch.autograd.grad`` (which never
  runs the fused embedding backward), and PCGrad's combined gradient replaces the shared dense
  gradients in an optimizer pre-step hook, so RecBole's one ``backward()`` per step still updates
  the fused tables exactly once; per-task weights (and gradient norms) are logged every epoch;
* one evaluation reports every enabled task: RecBole's full-ranking metrics for ``sequence``
  (``ndcg@10``, ...), ``interest_*`` on the same validation/test interactions, and ``category_*``
  on the held-out items of that phase; ``valid_metric`` may be any of them, or ``mtl_gain``: the
  mean relative gain of the tasks' metrics over single-task references (``mtl_gain_reference``);
* an optional learning-rate schedule (``lr_scheduler: none | plateau | cosine``, after
  ``lr_warmup_steps`` of linear warm-up), set per optimizer step (:class:`StepSchedule`);
* several processes (torchrun): dense gradients averaged by DDP, sharded tables updated by
  TorchRec, training losses logged as the mean over ranks, every rank evaluating every user,
  one checkpoint file per rank (see :mod:`recbole_mtl.distributed`).
* a NaN or inf loss stops training before it updates anything, naming the task and the step;
  the checkpoints written so far are kept as they are.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import numpy as np
import torch
from recbole.trainer import Trainer
from recbole.utils import set_color
from tqdm import tqdm

from recbole_mtl import checkpoint, distributed
from recbole_mtl.balancing import GradNorm, PCGrad
from recbole_mtl.config import SMALLER_SUFFIXES
from recbole_mtl.data.windows import WindowDataLoader
from recbole_mtl.errors import ConfigError, NonFiniteLossError


class _LossForward(torch.nn.Module):
    """``forward`` = the model's ``calculate_loss``, so that DDP sees the training step.

    Each task's loss is the mean over its positions of this rank's part of the batch; the ranks'
    parts hold different numbers of positions (windows differ in length), so each loss is scaled
    by ``this rank's count * world size / all ranks' count``: DDP's (and TorchRec's) average of the
    ranks' gradients is then the gradient of the whole batch's mean, as in one process.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, interaction):
        losses = self.model.calculate_loss(interaction)
        counts = getattr(self.model, "last_counts", None)
        if not counts or not isinstance(losses, tuple) or len(counts) != len(losses):
            return losses
        mine = torch.tensor(counts, dtype=torch.float64)
        total = mine.clone()
        torch.distributed.all_reduce(total)
        scale = (mine * torch.distributed.get_world_size() / total.clamp(min=1)).tolist()
        return tuple(loss * s for loss, s in zip(losses, scale))


class MultiTaskTrainer(Trainer):
    """One trainer for every multi-task model of the plugin."""

    def __init__(self, config, model):
        self.is_distributed = distributed.context().is_distributed
        if self.is_distributed:
            os.makedirs(config["checkpoint_dir"], exist_ok=True)  # RecBole's check-then-create races across ranks
        with distributed.recbole_view(config, single_process=True):  # RecBole's own DDP set-up is CUDA-only
            super().__init__(config, model)
        self._valid_loader = None
        self._pointwise: dict = {}
        self.lr_scheduler = self._build_lr_scheduler()
        if self.is_distributed:  # ours follows
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(
                _LossForward(model), device_ids=None if self.device.type == "cpu" else [self.device],
                broadcast_buffers=False, find_unused_parameters=True,
            )
            # each rank names the checkpoint by its own clock: use rank 0's name everywhere
            self.saved_model_file = distributed.broadcast_object(self.saved_model_file)

        self.mtl_gain_reference = _gain_reference(config) if self.valid_metric == MTL_GAIN else None
        self.balancer = getattr(model, "balancer", None)
        self._surgery: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self._task_losses = None
        if self.balancer is not None and self.balancer.needs_task_gradients:
            if self.enable_scaler:
                raise ConfigError(f"loss_balance: {self.balancer.name} computes per-task gradients and cannot run "
                                  "with enable_scaler: True (scaled gradients); set enable_scaler: False.")
            self.optimizer.register_step_pre_hook(self._apply_surgery)
        if self.is_distributed and self.balancer is not None and self.balancer.name != "fixed":
            raise ConfigError(f"loss_balance: {self.balancer.name} is not available with several processes "
                              "(its weights would differ between ranks); use loss_balance: fixed with --nproc > 1.")

    # -- several processes -----------------------------------------------------------------
    def set_reduce_hook(self):
        """Not needed: the training step runs through DDP's ``forward`` (see ``_train_epoch``)."""

    def sync_grad_loss(self):
        return 0

    def _map_reduce(self, result, num_sample):
        return result  # every rank evaluated every user: the result is already whole

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        if not self.is_distributed:
            return super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        ctx = distributed.context()
        path = checkpoint.shard_path(kwargs.pop("saved_model_file", self.saved_model_file), ctx.rank, ctx.world_size)
        checkpoint.save(self, epoch, path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path} (one file per rank)")

    def _checkpoint_file(self, path: str) -> str:
        """This rank's file of a sharded checkpoint, or ``path`` itself (a single-process one)."""
        if not self.is_distributed:
            return path
        ctx = distributed.context()
        return checkpoint.rank_file(path, ctx.rank, ctx.world_size)

    def _load_model_state(self, state: dict, path: str) -> None:
        """Dense weights and tables from a checkpoint of this world size, or from a single-process one."""
        dense = dict(state["state_dict"])
        full_tables = {k[len("sparse."):]: dense.pop(k) for k in list(dense) if k.startswith("sparse.")}
        if full_tables and self.is_distributed:  # a single-process checkpoint: shard its tables
            self.model.load_state_dict(dense)
            self.model.sparse.load_full_tables(full_tables)
            return
        checkpoint.load_model_state(self.model, state, path)

    def resume_checkpoint(self, resume_file):
        if not self.is_distributed:
            return super().resume_checkpoint(resume_file)
        resume_file = str(resume_file)
        path = self._checkpoint_file(resume_file)
        state = checkpoint.load_checkpoint(path, map_location=self.device)
        self.saved_model_file = resume_file
        self.start_epoch = state["epoch"] + 1
        self.cur_step = state["cur_step"]
        self.best_valid_score = state["best_valid_score"]
        self._load_model_state(state, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _restore(self, model_file=None) -> None:
        path = self._checkpoint_file(str(model_file or self.saved_model_file))
        self._load_model_state(checkpoint.load_checkpoint(path, map_location=self.device), path)
        self.logger.info(f"Loading model structure and parameters from {path}")

    # -- optimisation ----------------------------------------------------------------------
    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "dense_parameters"):
            kwargs["params"] = list(self.model.dense_parameters())
            balancer = getattr(self.model, "balancer", None)
            learned = list(balancer.parameters()) if balancer is not None else []
            if learned:  # e.g. uncertainty log-variances: same learner, never weight-decayed
                kwargs["params"] = [{"params": kwargs["params"]}, {"params": learned, "weight_decay": 0.0}]
        return super()._build_optimizer(**kwargs)

    def _build_lr_scheduler(self):
        kind = str(self.config["lr_scheduler"] or "none").lower()
        warmup = self.config["lr_warmup_steps"]
        warmup = 0 if warmup is None else warmup
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"lr_warmup_steps must be an integer >= 0 (optimizer steps of linear warm-up); "
                              f"got {self.config['lr_warmup_steps']!r}.")
        if kind not in ("none", "cosine", "plateau"):
            raise ConfigError(f"lr_scheduler must be none, plateau or cosine; got '{kind}'.")
        if kind == "plateau":
            if warmup:
                raise ConfigError("lr_warmup_steps works with lr_scheduler: none or cosine, not plateau; set "
                                  "lr_warmup_steps: 0 or choose another schedule.")
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max" if self.valid_metric_bigger else "min",
                factor=float(self.config["lr_decay_factor"] or 0.5),
                patience=int(self.config["lr_patience"] if self.config["lr_patience"] is not None else 2),
            )
        if kind == "none" and not warmup:
            return None
        return StepSchedule(self.optimizer, kind, warmup, max(1, self.epochs))
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.is_distributed and loss_func is None:
            loss_func = self.distributed_model
        checked = self._finite_losses(loss_func or self.model.calculate_loss, epoch_idx, len(train_data))
        if loss_func is None and self.balancer is not None:
            self._task_losses = checked  # raw task losses are checked before the balancer sees them
            loss_func = self._balanced_loss
        else:
            loss_func = checked
        if getattr(train_data, "part", None):  # this rank's own windows: no DistributedSampler to step
            with distributed.recbole_view(self.config, single_process=True):
                loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        else:
            loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self.is_distributed and loss is not None:  # log what one process on the whole batch would
            mean = distributed.mean_over_ranks(loss if isinstance(loss, tuple) else [loss])
            loss = tuple(mean) if isinstance(loss, tuple) else mean[0]
        if self.balancer is not None:
            self._log_balance(epoch_idx, self.balancer.end_epoch())
        self.tensorboard.add_scalar("LearningRate", self.optimizer.param_groups[0]["lr"], epoch_idx)
        return loss

    def _finite_losses(self, loss_func, epoch_idx: int, batches: int):
        """Wrap ``loss_func`` so a NaN/inf task loss raises before ``backward()`` updates anything."""
        state = {"batch": 0}

        def checked(interaction):
            losses = loss_func(interaction)
            parts = losses if isinstance(losses, tuple) else (losses,)
            tasks = list(getattr(self.model, "tasks", []))
            names = tasks if len(tasks) == len(parts) else [f"loss {i + 1}" for i in range(len(parts))]
            for name, loss in zip(names, parts):
                if not torch.isfinite(loss).all():
                    raise NonFiniteLossError(self._non_finite_message(name, loss, epoch_idx, state["batch"], batches))
            state["batch"] += 1
            return losses

        return checked

    def _non_finite_message(self, task: str, loss: torch.Tensor, epoch_idx: int, batch: int, batches: int) -> str:
        value = "NaN" if torch.isnan(loss).any() else "inf"
        step = epoch_idx * batches + batch
        kept = [f for f in (getattr(self, "last_checkpoint_file", None), self.saved_model_file)
                if f and os.path.isfile(f)]
        return (
            f"the '{task}' loss is {value} at epoch {epoch_idx}, batch {batch + 1} of {batches} "
            f"(training step {step}); training stopped before this step updated the model. "
            + (f"Checkpoints kept as they were: {', '.join(kept)}. " if kept else "No checkpoint was written yet. ")
            + "Try a lower learning_rate (or embedding_learning_rate), clip_grad_norm, or check the data."
        )

    # -- task balancing --------------------------------------------------------------------
    def _balanced_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        """The model's task-weighted losses through the balancer: the terms RecBole sums."""
        parts = (self._task_losses or self.model.calculate_loss)(interaction)
        losses = torch.stack(parts)  # [T]
        self.balancer.record("loss", losses)
        terms = self.balancer(losses)
        # per-task gradients start from each task's own loss tensor: one taken from the stacked
        # vector would walk every task's graph (with zero gradients) on each call
        if isinstance(self.balancer, GradNorm):
            params = self.model.last_shared_parameters()
            self.balancer.step(losses, torch.stack([_grad_norm(part, params) for part in parts]))
        elif isinstance(self.balancer, PCGrad):  # multipliers 1: the terms are the parts
            self._surgery = self._pcgrad(parts)
        return tuple(terms.unbind())

    def _pcgrad(self, parts: tuple[torch.Tensor, ...]) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        """PCGrad's gradient of every dense parameter that more than one task reaches."""
        params = [p for p in self.model.dense_parameters() if p.requires_grad]
        per_task = [torch.autograd.grad(t, params, retain_graph=True, allow_unused=True) for t in parts]
        shared = [k for k in range(len(params)) if sum(g[k] is not None for g in per_task) >= 2]
        if not shared:
            return []
        flat = torch.stack([torch.cat([(g[k] if g[k] is not None else torch.zeros_like(params[k])).reshape(-1)
                                       for k in shared]) for g in per_task])  # [T, P]
        combined, conflicts = PCGrad.project(flat)
        self.balancer.record("grad_norm", flat.norm(dim=1))
        self.balancer.record("conflict_rate", torch.tensor(conflicts))
        chunks = combined.split([params[k].numel() for k in shared])
        return [(params[k], c.view_as(params[k])) for k, c in zip(shared, chunks)]

    def _apply_surgery(self, optimizer, args, kwargs) -> None:
        """Optimizer pre-step hook: put PCGrad's gradient on the shared dense parameters."""
        if not self._surgery:
            return
        for param, grad in self._surgery:
            param.grad = grad.to(param.dtype)
        self._surgery = []
        if self.clip_grad_norm:  # RecBole clipped the plain sum; clip what is actually applied
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)

    def _log_balance(self, epoch_idx: int, values: dict[str, float]) -> None:
        parts = ", ".join(f"{name}: {value:.4f}" for name, value in values.items())
        self.logger.info(set_color(f"epoch {epoch_idx} balance ({self.balancer.name})", "green") + f" [{parts}]")
        for name, value in values.items():
            self.tensorboard.add_scalar(f"Balance/{name}", value, epoch_idx)

    def _valid_epoch(self, valid_data, show_progress=False):
        from recbole.utils import calculate_valid_score

        valid_result = self.evaluate(valid_data, load_best_model=False, show_progress=show_progress)
        if self.mtl_gain_reference is not None:
            valid_result[MTL_GAIN] = mtl_gain(valid_result, self.mtl_gain_reference)
        valid_score = calculate_valid_score(valid_result, self.valid_metric)
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.lr_scheduler.step(valid_score)
        step = len(self.train_loss_dict) - 1
        for name, value in valid_result.items():
            if isinstance(value, float) and math.isfinite(value):
                self.tensorboard.add_scalar(f"Valid/{name}", value, step)
        return valid_score, valid_result

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._valid_loader = valid_data
        train_data = self.training_loader(train_data)
        if isinstance(self.lr_scheduler, StepSchedule):  # steps taken so far, when resuming
            self.lr_scheduler.start(len(train_data), self.start_epoch)
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)

    def training_loader(self, train_data):
        """User windows of ``train_data``'s dataset when the model trains every position
        (``train_positions: all``); RecBole's per-prefix loader otherwise."""
        if getattr(self.model, "train_positions", "last") != "all" or isinstance(train_data, WindowDataLoader):
            return train_data
        if self.is_distributed:  # each rank keeps the windows it trains on, and shuffles them itself
            ctx = distributed.context()
            with distributed.recbole_view(self.config, single_process=True):
                windows = WindowDataLoader(self.config, train_data.dataset, shuffle=train_data.shuffle,
                                           part=(ctx.rank, ctx.world_size))
        else:
            windows = WindowDataLoader(self.config, train_data.dataset, shuffle=train_data.shuffle)
        self.logger.info(f"training on {len(windows.windows)} windows of {windows.windows.num_targets} targets "
                         f"(MAX_ITEM_LIST_LENGTH {windows.windows.max_len}, window_stride {windows.windows.stride}, "
                         f"{windows.step} windows a batch)")
        return windows

    # -- loss logging by task name ---------------------------------------------------------
    def _loss_names(self, n: int) -> list[str]:
        names = [f"{t}_loss" for t in getattr(self.model, "tasks", [])]
        return names if len(names) == n else [f"train_loss{i + 1}" for i in range(n)]

    def _generate_train_loss_output(self, epoch_idx, s_time, e_time, losses):
        if not isinstance(losses, tuple):
            return super()._generate_train_loss_output(epoch_idx, s_time, e_time, losses)
        des = self.config["loss_decimal_place"] or 4
        parts = ", ".join(
            set_color(name, "blue") + f": {loss:.{des}f}" for name, loss in zip(self._loss_names(len(losses)), losses)
        )
        return (set_color("epoch %d training", "green") + " [" + set_color("time", "blue")
                + ": %.2fs, %s]") % (epoch_idx, e_time - s_time, parts)

    def _add_train_loss_to_tensorboard(self, epoch_idx, losses, tag="Loss/Train"):
        if not isinstance(losses, tuple):
            return super()._add_train_loss_to_tensorboard(epoch_idx, losses, tag)
        for name, loss in zip(self._loss_names(len(losses)), losses):
            self.tensorboard.add_scalar(f"{tag}/{name}", loss, epoch_idx)
        self.tensorboard.add_scalar(f"{tag}/total", sum(losses), epoch_idx)

    # -- evaluation of every task ----------------------------------------------------------
    def _tasks_by(self, evaluation: str) -> list[str]:
        model = self.model
        return [t for t in getattr(model, "tasks", []) if model.task(t).evaluation == evaluation]

    def _full_sort_batch_eval(self, batched_data):
        interaction, history_index, positive_u, positive_i = batched_data
        outputs = self.model.predict_tasks(interaction.to(self.device))
        self._collect_pointwise(interaction, outputs)
        scores = outputs[self._tasks_by("ranking")[0]].view(-1, self.tot_item_num)
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        return interaction, scores, positive_u, positive_i

    def _collect_pointwise(self, interaction, outputs) -> None:
        uid = self.config["USER_ID_FIELD"]
        for name in self._tasks_by("pointwise"):
            column = self.model.task(name).label_column
            users = interaction[uid].cpu() if uid in interaction else torch.zeros(0, dtype=torch.long)
            scores = outputs[name].detach().cpu()
            self._pointwise.setdefault(name, []).append((scores, interaction[column].cpu(), users))

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """Evaluate every enabled task on ``eval_data`` (validation or test) in one result dict.

        Ranking tasks through RecBole's full-ranking evaluator; pointwise tasks on the same
        interactions; item tasks on their held-out items of the phase (on validation, an item
        task also fits its decoding, e.g. the category threshold, which the test then uses).
        """
        if not eval_data:
            return None
        self._pointwise = {}
        if load_best_model:
            self._restore(model_file)
        if self._tasks_by("ranking"):
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        else:
            result = OrderedDict()
            if self._tasks_by("pointwise"):
                self._evaluate_without_ranking(eval_data, show_progress)
        self.model.eval()
        #: per pointwise task, the last evaluation's scores, labels and users (per interaction)
        self.last_pointwise = {}
        for name in self._tasks_by("pointwise"):
            pairs = self._pointwise.get(name, [])
            if pairs:
                probs, labels = torch.cat([p for p, _, _ in pairs]), torch.cat([y for _, y, _ in pairs])
                users = torch.cat([u for _, _, u in pairs])
                self.last_pointwise[name] = {"prob": probs, "label": labels, "users": users}
                result.update(self.model.task(name).metrics(probs, labels))
        phase = "valid" if eval_data is self._valid_loader else "test"
        #: per item task, the last evaluation's held-out item ids, decoded predictions and labels
        self.last_items = {}
        for name in self._tasks_by("items"):
            task = self.model.task(name)
            with torch.no_grad():
                probs, labels = self.model.item_predictions(name, phase)
            if phase == "valid":
                task.fit_threshold(probs, labels)
            result.update(task.metrics(probs, labels))
            self.last_items[name] = task.per_item(phase, probs, labels)
        self._pointwise = {}
        return result

    @torch.no_grad()
    def _evaluate_without_ranking(self, eval_data, show_progress):
        self.model.eval()
        iter_data = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink")) \
            if show_progress else eval_data
        for batched_data in iter_data:
            interaction = batched_data[0].to(self.device)
            self._collect_pointwise(interaction, self.model.predict_tasks(interaction))


#: ``valid_metric: mtl_gain``: the tasks' validation metrics as one number (for early stopping, the
#: best checkpoint and tuning a multi-task model on all its tasks at once).
MTL_GAIN = "mtl_gain"


def _gain_reference(config) -> dict[str, float]:
    """``mtl_gain_reference`` checked: ``{metric: value > 0}``, metric names lowercased."""
    reference = config["mtl_gain_reference"]
    fix = ("set mtl_gain_reference to each task's single-task validation value, e.g. "
           "{NDCG@10: 0.07, interest_auc: 0.81, category_micro_f1: 0.40}")
    if not isinstance(reference, dict) or not reference:
        raise ConfigError(f"valid_metric: {MTL_GAIN} needs mtl_gain_reference (got {reference!r}): {fix}.")
    out = {}
    for name, value in reference.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"mtl_gain_reference: '{name}' must be a positive number (got {reference[name]!r}): "
                              f"{fix}.")
        out[str(name).lower()] = value
    return out


def mtl_gain(result: dict, reference: dict[str, float]) -> float:
    """The mean over the reference's metrics of the relative gain ``(value - ref) / ref`` (the sign
    turned for a metric where smaller is better): 0 is on par with the references on average, 0.05
    is 5% better. Raises :class:`ConfigError` when a reference names a metric the evaluation lacks."""
    gains = []
    for name, ref in reference.items():
        if name not in result:
            raise ConfigError(f"mtl_gain_reference names '{name}', which this model does not report; its "
                              f"validation metrics are {sorted(k for k in result if k != MTL_GAIN)}.")
        sign = -1.0 if name.split("@")[0].endswith(SMALLER_SUFFIXES) else 1.0
        gains.append(sign * (float(result[name]) - ref) / ref)
    return round(sum(gains) / len(gains), 6)


class StepSchedule:
    """The dense learning rate per optimizer step: ``learning_rate * warm(t) * decay(t)``.

    ``warm(t) = min(1, (t + 1) / lr_warmup_steps)`` (1 without warm-up); ``decay`` is 1
    (``lr_scheduler: none``, constant) or, for ``cosine``, ``(1 + cos(pi * p)) / 2`` with ``p`` the
    share of the steps after warm-up that are done (``epochs`` epochs in all). The rate is set after
    every step from the step count, so a resumed run continues the schedule where it stopped.
    """

    def __init__(self, optimizer, kind: str, warmup_steps: int, epochs: int):
        self.optimizer, self.kind, self.warmup, self.epochs = optimizer, kind, warmup_steps, epochs
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.steps_per_epoch, self.step_count = 1, 0
        optimizer.register_step_post_hook(lambda *_: self.step())
        self._apply()

    def start(self, steps_per_epoch: int, epoch: int) -> None:
        """Set the epoch length (known once the training loader is) and the epoch training starts at."""
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.step_count = int(epoch) * self.steps_per_epoch
        self._apply()

    def factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        if self.kind != "cosine":
            return warm
        total = self.epochs * self.steps_per_epoch - self.warmup
        done = min(1.0, max(0.0, (step - self.warmup) / max(1, total)))
        return warm * 0.5 * (1.0 + math.cos(math.pi * done))

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * f


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    """``||d loss / d params||`` over all ``params`` (0 where ``loss`` does not reach them)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [g.pow(2).sum() for g in grads if g is not None]
    return torch.stack(squares).sum().sqrt() if squares else loss.new_zeros(())


MTLRecTrainer = MultiTaskTrainer
MMoETrainer = MultiTaskTrainer
PLETrainer = MultiTaskTrainer
