"""``MultiTaskDataset``: RecBole's ``SequentialDataset`` plus the labels of the other tasks.

* **interest**: ``interest_label = value(interest_label_field) >= interest_threshold``, taken from
  the raw value before RecBole normalises float fields (ml-100k: ``rating >= 4``).
* **category**: the items whose ``category_field`` is not empty are split, fixed by ``seed``, into
  training items and ``category_holdout_ratio`` held-out items (half for validation, half for
  test) whose labels the model never trains on; or, with ``category_folds: K``, into K folds where
  fold ``category_fold`` is the test part and the next fold validation.

A task whose field is missing is switched off with a warning that names the field and the
config key to set (:meth:`MultiTaskDataset.available_tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import getLogger
from typing import Optional

import numpy as np
import torch
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureSource, FeatureType

from recbole_mtl.errors import ConfigError

INTEREST_LABEL_FIELD = "interest_label"
TASK_NAMES = ("sequence", "interest", "category")


@dataclass(frozen=True)
class TaskFields:
    """Where each task finds its data, resolved from the config."""

    interest_label_field: Optional[str]
    interest_threshold: float
    category_field: Optional[str]
    category_holdout_ratio: float

    @classmethod
    def from_config(cls, config) -> "TaskFields":
        ratio = float(config["category_holdout_ratio"] if config["category_holdout_ratio"] is not None else 0.2)
        if not 0.0 < ratio < 1.0:
            raise ConfigError(
                f"category_holdout_ratio must be between 0 and 1 (exclusive), got {ratio}. "
                "Set e.g. --category_holdout_ratio=0.2."
            )
        return cls(
            interest_label_field=config["interest_label_field"],
            interest_threshold=float(config["interest_threshold"] if config["interest_threshold"] is not None else 4.0),
            category_field=config["category_field"],
            category_holdout_ratio=ratio,
        )


class MultiTaskDataset(SequentialDataset):
    """Sequential dataset (leave-one-out by time) with interest labels and a category split."""

    def __init__(self, config):
        self.task_fields = TaskFields.from_config(config)
        self._warned: set = set()
        super().__init__(config)

    # -- interest label --------------------------------------------------------------------
    def _normalize(self):
        labels = self._raw_interest_labels()
        super()._normalize()
        if labels is not None:
            self.inter_feat[INTEREST_LABEL_FIELD] = labels
            self.set_field_property(INTEREST_LABEL_FIELD, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)

    def _raw_interest_labels(self) -> Optional[np.ndarray]:
        field = self.task_fields.interest_label_field
        if not field or field not in self.inter_feat:
            return None
        if self.field2type[field] != FeatureType.FLOAT:
            raise ConfigError(
                f"interest_label_field '{field}' must be a float field of {self.dataset_name}.inter "
                f"(header '{field}:float'), but it is {self.field2type[field].value}. "
                "Set interest_label_field to a numeric field such as rating."
            )
        values = self.inter_feat[field].to_numpy(dtype=np.float64)
        return (values >= self.task_fields.interest_threshold).astype(np.float32)

    # -- task availability -----------------------------------------------------------------
    def available_tasks(self, wanted) -> list[str]:
        """The tasks in ``wanted`` this dataset can serve; warns once for each one switched off."""
        logger = getLogger()
        tasks = []
        for task in wanted:
            if task not in TASK_NAMES:
                raise ConfigError(f"unknown task '{task}' in `tasks`; choose from {list(TASK_NAMES)}.")
            reason = self._missing(task)
            if reason is None:
                tasks.append(task)
            elif task not in self._warned:
                self._warned.add(task)
                logger.warning(f"task '{task}' switched off: {reason}")
        return tasks

    def _missing(self, task: str) -> Optional[str]:
        tf = self.task_fields
        if task == "sequence":
            return None
        if task == "interest":
            if not tf.interest_label_field:
                return "no interest_label_field is set; set it to a float field of the .inter file (e.g. rating)."
            if INTEREST_LABEL_FIELD not in self.field2type:
                return (
                    f"field '{tf.interest_label_field}' is not loaded from {self.dataset_name}.inter; "
                    "add it to load_col or set interest_label_field to a field that exists."
                )
            return None
        if not tf.category_field:
            return "no category_field is set; set category_field to a token/token_seq field of the .item file."
        if self.item_feat is None or tf.category_field not in self.item_feat:
            return (
                f"field '{tf.category_field}' is not in {self.dataset_name}.item (or not loaded); "
                "set category_field to a token/token_seq field of the .item file."
            )
        if self.field2type[tf.category_field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            return f"category_field '{tf.category_field}' must be a token or token_seq field."
        return None

    # -- category labels and split -----------------------------------------------------------
    def category_labels(self) -> torch.Tensor:
        """Multi-hot labels ``[item_num, num_categories]`` (column 0, the padding token, dropped)."""
        field = self.task_fields.category_field
        values = self.item_feat[field]
        num = self.num(field)
        if values.dim() == 1:
            values = values.unsqueeze(1)
        labels = torch.zeros(values.shape[0], num, dtype=torch.float32)
        labels.scatter_(1, values.long(), 1.0)
        return labels[:, 1:]

    def category_names(self) -> list[str]:
        return list(self.field2id_token[self.task_fields.category_field][1:])

    def category_split(self) -> dict[str, torch.Tensor]:
        """Item ids for ``train``/``valid``/``test`` of the category task, fixed by ``seed``."""
        labels = self.category_labels()
        labelled = torch.nonzero(labels.sum(1) > 0).flatten().numpy()
        labelled = labelled[labelled > 0]  # id 0 is padding
        rng = np.random.default_rng(int(self.config["seed"]))
        order = rng.permutation(labelled)
        folds = int(self.config["category_folds"] or 1)
        if folds > 1:
            train, valid, test = self._fold(order, folds, int(self.config["category_fold"] or 0))
        else:
            n_holdout = max(2, int(round(len(order) * self.task_fields.category_holdout_ratio)))
            if len(order) - n_holdout < 1:
                raise ConfigError(
                    f"category task: only {len(order)} items have a '{self.task_fields.category_field}' "
                    "label, too few to hold some out; lower category_holdout_ratio or switch the task off."
                )
            holdout, train = order[:n_holdout], order[n_holdout:]
            half = n_holdout // 2
            valid, test = holdout[:half], holdout[half:]
        return {
            "train": torch.as_tensor(np.sort(train), dtype=torch.long),
            "valid": torch.as_tensor(np.sort(valid), dtype=torch.long),
            "test": torch.as_tensor(np.sort(test), dtype=torch.long),
        }

    def _fold(self, order: np.ndarray, folds: int, fold: int):
        """K-fold over items: fold ``fold`` is the test part, the next one validation, the rest training."""
        if folds < 3 or not 0 <= fold < folds:
            raise ConfigError(
                f"category_folds={folds}, category_fold={fold}: K-fold needs category_folds >= 3 (test, "
                "validation and training folds) and 0 <= category_fold < category_folds."
            )
        if len(order) < folds:
            raise ConfigError(f"category task: {len(order)} labelled items cannot make {folds} folds.")
        parts = np.array_split(order, folds)
        train = np.concatenate([p for i, p in enumerate(parts) if i not in (fold, (fold + 1) % folds)])
        return train, parts[(fold + 1) % folds], parts[fold]
