"""Trainers for the plugin's models (``<Model>Trainer``), extending RecBole's ``Trainer``.

``MultiTaskTrainer`` changes RecBole's loop through small overrides only:

* the dense optimizer covers dense parameters; embedding tables update themselves inside
  ``backward()`` (TorchRec's fused FBGEMM optimizers);
* per-task losses are logged by name, to the log and TensorBoard;
* one evaluation reports every enabled task: RecBole's full-ranking metrics for ``sequence``
  (``ndcg@10``, ...), ``interest_*`` on the same validation/test interactions, and ``category_*``
  on the held-out items of that phase; ``valid_metric`` may be any of them;
* an optional learning-rate schedule (``lr_scheduler: none | plateau | cosine``);
* several processes (torchrun): dense gradients averaged by DDP, sharded tables updated by
  TorchRec, training losses logged as the mean over ranks, every rank evaluating every user,
  one checkpoint file per rank (see :mod:`recbole_mtl.distributed`).
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

from recbole_mtl import distributed
from recbole_mtl.compat import _checkpoint_state, atomic_torch_save, load_checkpoint, restore_model
from recbole_mtl.errors import ConfigError


class _LossForward(torch.nn.Module):
    """``forward`` = the model's ``calculate_loss``, so that DDP sees the training step."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, interaction):
        return self.model.calculate_loss(interaction)


class MultiTaskTrainer(Trainer):
    """One trainer for every multi-task model of the plugin."""

    def __init__(self, config, model):
        self.is_distributed = distributed.is_distributed(config)
        if self.is_distributed:  # RecBole's own DDP set-up is CUDA-only; ours follows
            config["single_spec"] = True
            os.makedirs(config["checkpoint_dir"], exist_ok=True)  # RecBole's check-then-create races across ranks
        super().__init__(config, model)
        self._valid_loader = None
        self._interest_buffer: list = []
        self.lr_scheduler = self._build_lr_scheduler()
        if self.is_distributed:
            config["single_spec"] = False
            self.distributed_model = torch.nn.parallel.DistributedDataParallel(
                _LossForward(model), device_ids=None if self.device.type == "cpu" else [self.device],
                broadcast_buffers=False, find_unused_parameters=True,
            )
            # each rank names the checkpoint by its own clock: use rank 0's name everywhere
            self.saved_model_file = distributed.broadcast_object(self.saved_model_file)

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
        path = distributed.shard_path(kwargs.pop("saved_model_file", self.saved_model_file),
                                      distributed.rank(), distributed.world_size())
        atomic_torch_save(_checkpoint_state(self, epoch), path)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path} (one file per rank)")

    def _checkpoint_file(self, path: str) -> str:
        """This rank's file of a sharded checkpoint, or ``path`` itself (a single-process one)."""
        if not self.is_distributed:
            return path
        if distributed.is_shard_file(path):
            path = path.rsplit(".rank", 1)[0] + ".pth"
        mine = distributed.shard_path(path, distributed.rank(), distributed.world_size())
        if os.path.isfile(mine):
            return mine
        if not os.path.isfile(path):
            others = [f for f in (distributed.shard_path(path, 0, w) for w in range(1, 65)) if os.path.isfile(f)]
            if others:
                raise ConfigError(f"{others[0]} was written by a different number of processes than this run's "
                                  f"{distributed.world_size()}; resume with the same --nproc, or export it "
                                  f"(run_recbole_mtl.py export --checkpoint={path}) and resume from the export.")
        return path

    def _load_model_state(self, checkpoint: dict) -> None:
        """Dense weights and tables from a checkpoint of this world size, or from a single-process one."""
        state = dict(checkpoint["state_dict"])
        full_tables = {k[len("sparse."):]: state.pop(k) for k in list(state) if k.startswith("sparse.")}
        if full_tables and self.is_distributed:  # a single-process checkpoint: shard its tables
            self.model.load_state_dict(state)
            self.model.sparse.load_full_tables(full_tables)
            return
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))

    def resume_checkpoint(self, resume_file):
        if not self.is_distributed:
            return super().resume_checkpoint(resume_file)
        resume_file = str(resume_file)
        checkpoint = load_checkpoint(self._checkpoint_file(resume_file), map_location=self.device)
        self.saved_model_file = resume_file
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self._load_model_state(checkpoint)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _restore(self, model_file=None) -> None:
        if not self.is_distributed:
            return restore_model(self, model_file)
        path = self._checkpoint_file(str(model_file or self.saved_model_file))
        self._load_model_state(load_checkpoint(path, map_location=self.device))
        self.logger.info(f"Loading model structure and parameters from {path}")

    # -- optimisation ----------------------------------------------------------------------
    def _build_optimizer(self, **kwargs):
        if "params" not in kwargs and hasattr(self.model, "dense_parameters"):
            kwargs["params"] = list(self.model.dense_parameters())
        return super()._build_optimizer(**kwargs)

    def _build_lr_scheduler(self):
        kind = str(self.config["lr_scheduler"] or "none").lower()
        if kind == "none":
            return None
        if kind == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, self.epochs))
        if kind == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max" if self.valid_metric_bigger else "min",
                factor=float(self.config["lr_decay_factor"] or 0.5),
                patience=int(self.config["lr_patience"] if self.config["lr_patience"] is not None else 2),
            )
        raise ConfigError(f"lr_scheduler must be none, plateau or cosine; got '{kind}'.")

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.is_distributed and loss_func is None:
            loss_func = self.distributed_model
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self.is_distributed and loss is not None:  # log what one process on the whole batch would
            mean = distributed.mean_over_ranks(loss if isinstance(loss, tuple) else [loss])
            loss = tuple(mean) if isinstance(loss, tuple) else mean[0]
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.lr_scheduler.step()
        self.tensorboard.add_scalar("LearningRate", self.optimizer.param_groups[0]["lr"], epoch_idx)
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.lr_scheduler.step(valid_score)
        step = len(self.train_loss_dict) - 1
        for name, value in valid_result.items():
            if isinstance(value, float) and math.isfinite(value):
                self.tensorboard.add_scalar(f"Valid/{name}", value, step)
        return valid_score, valid_result

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._valid_loader = valid_data
        return super().fit(train_data, valid_data, verbose=verbose, saved=saved,
                           show_progress=show_progress, callback_fn=callback_fn)

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
    def _full_sort_batch_eval(self, batched_data):
        interaction, history_index, positive_u, positive_i = batched_data
        outputs = self.model.predict_tasks(interaction.to(self.device))
        self._collect_interest(interaction, outputs)
        scores = outputs["sequence"].view(-1, self.tot_item_num)
        scores[:, 0] = -np.inf
        if history_index is not None:
            scores[history_index] = -np.inf
        return interaction, scores, positive_u, positive_i

    def _collect_interest(self, interaction, outputs) -> None:
        if "interest" in outputs:
            self._interest_buffer.append(
                (outputs["interest"].detach().cpu(), interaction[self.model.interest_label_field].cpu())
            )

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        """Evaluate every enabled task on ``eval_data`` (validation or test) in one result dict."""
        if not eval_data:
            return None
        self._interest_buffer = []
        tasks = list(getattr(self.model, "tasks", ["sequence"]))
        if load_best_model:
            self._restore(model_file)
        if "sequence" in tasks:
            result = super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
        else:
            result = OrderedDict()
            if "interest" in tasks:
                self._evaluate_without_ranking(eval_data, show_progress)
        self.model.eval()
        if "interest" in tasks and self._interest_buffer:
            probs = torch.cat([p for p, _ in self._interest_buffer])
            labels = torch.cat([y for _, y in self._interest_buffer])
            result.update(self.model.interest_task.metrics(probs, labels))
        if "category" in tasks:
            phase = "valid" if eval_data is self._valid_loader else "test"
            with torch.no_grad():
                probs, labels = self.model.category_predict(phase)
            result.update(self.model.category_task.metrics(probs, labels))
        self._interest_buffer = []
        return result

    @torch.no_grad()
    def _evaluate_without_ranking(self, eval_data, show_progress):
        self.model.eval()
        iter_data = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink")) \
            if show_progress else eval_data
        for batched_data in iter_data:
            interaction = batched_data[0].to(self.device)
            self._collect_interest(interaction, self.model.predict_tasks(interaction))


MTLRecTrainer = MultiTaskTrainer
