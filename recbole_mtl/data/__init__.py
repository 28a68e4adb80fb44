"""Datasets with task labels: the interest label and the category hold-out split."""

from recbole_mtl.data.dataset import INTEREST_LABEL_FIELD, MultiTaskDataset, TaskFields

__all__ = ["INTEREST_LABEL_FIELD", "MultiTaskDataset", "TaskFields"]
