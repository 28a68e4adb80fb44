"""Datasets with task labels, label sources, and the training windows of the sequence transducer."""

from recbole_mtl.data.dataset import MultiTaskDataset
from recbole_mtl.data.labels import LabelSource, label_source, label_sources, register_label_source

__all__ = ["LabelSource", "MultiTaskDataset", "label_source", "label_sources", "register_label_source"]
