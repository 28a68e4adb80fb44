"""``eval_mask_history: True``: full ranking scores each user's earlier items minus infinity.

RecBole masks the training items of a user in the full ranking of a *general* model (its
``FullSortEvalDataLoader`` gives the trainer a ``history_index``), but not for a *sequential* one:
there the loader gives ``history_index=None`` and every item is ranked, those the user already
interacted with included. The sequential-recommendation papers (SASRec, S3-Rec, CL4SRec, ICLRec,
HSTU) mask them; with this key the plugin does too, for every sequential model it runs (its own
``MTLRec``, ``MMoE``, ``PLE`` and RecBole's ``SASRec``, ``GRU4Rec``, ...), so that their figures are
comparable with the papers'.

The earlier items of a user are the items of the split parts before the evaluated one: at
validation, every item of the user's training interactions; at test, of the training and
validation interactions. That is the whole earlier history, not only the last
``MAX_ITEM_LIST_LENGTH`` items of the row's ``item_id_list`` (the first item of a history, never a
target of RecBole's sequential rows, included). A target item that is also among the user's
earlier items (a repeated interaction) is masked too, as in the papers: such a row counts as a miss.

:func:`apply` gives the valid and test full-sort loaders of a sequential model the
``(row, item)`` index each batch needs, the ``history_index`` RecBole's ``Trainer`` and the
plugin's ``MultiTaskTrainer`` already apply (``scores[history_index] = -inf``). Nothing else
changes: general models keep RecBole's own mask, and sampled evaluation (``uni100``, ``pop100``)
keeps RecBole's candidates. (For a sequential model RecBole's sampler, ``repeatable: True``, keeps
only the row's target out of the negatives, so earlier items of the user can be among them; see
``docs/configuration.md``.)
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataloader import FullSortEvalDataLoader

from recbole_mtl.data.windows import within_group

#: The config key (``properties/overall.yaml``).
KEY = "eval_mask_history"


def enabled(config) -> bool:
    """Whether ``config`` asks for the mask (``~`` reads as ``False``, RecBole's behaviour)."""
    return bool(config[KEY]) if KEY in config else False


def user_items(dataset) -> sp.csr_matrix:
    """``[user_num, item_num]`` 0/1 matrix of the items of ``dataset``'s interactions.

    Uses the dataset's ``inter_matrix`` (RecBole's for a sequential dataset: every row's target plus
    the first item of each history; the plugin's lean rows give the same).
    """
    matrix = dataset.inter_matrix(form="csr").astype(np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


class EarlierItems:
    """The loader's ``collate_fn`` plus the ``history_index`` of each batch's rows.

    Args:
        collate: the loader's own ``collate_fn`` (RecBole's: ``(interaction, None, positive_u, positive_i)``).
        dataset: the loader's dataset (its rows' users are read at each batch).
        matrix: ``[user_num, item_num]`` CSR of each user's earlier items.
    """

    def __init__(self, collate, dataset, matrix: sp.csr_matrix):
        self.collate, self.dataset = collate, dataset
        self.indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        self.indices = torch.from_numpy(matrix.indices.astype(np.int64))

    def index(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, item)``: row ``b`` of the batch (the dataset row ``rows[b]``) and each earlier item of its user."""
        users = self.dataset.inter_feat[self.dataset.uid_field][rows].long()
        start, count = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        batch_rows = torch.repeat_interleave(torch.arange(len(rows)), count)
        at = torch.from_numpy(within_group(count.numpy()))
        return batch_rows, self.indices[start[batch_rows] + at]

    def __call__(self, index):
        interaction, history_index, positive_u, positive_i = self.collate(index)
        if history_index is None:
            history_index = self.index(torch.as_tensor(np.asarray(index), dtype=torch.long))
        return interaction, history_index, positive_u, positive_i


def mask_loader(loader, matrix: sp.csr_matrix) -> bool:
    """Give a sequential full-sort ``loader`` the ``history_index`` of ``matrix``'s items; whether it did.

    Any other loader (a general model's, which RecBole masks itself; sampled or labelled
    evaluation; ``None``) is left as it is. Calling it again replaces the earlier mask.
    """
    if not isinstance(loader, FullSortEvalDataLoader) or not loader.is_sequential:
        return False
    collate = loader.collate_fn
    if isinstance(collate, EarlierItems):
        collate = collate.collate
    loader.collate_fn = EarlierItems(collate, loader._dataset, matrix)
    return True


def _dataset_of(loader) -> Optional[Any]:
    return getattr(loader, "_dataset", None) if loader is not None else None


def apply(config, train_data, valid_data, test_data) -> bool:
    """With ``eval_mask_history: True``, mask in full ranking each user's training items at
    validation and training and validation items at test; whether a loader was changed.

    Args:
        config: the run's config.
        train_data, valid_data, test_data: the loaders ``data_preparation`` built (any may be ``None``).
    """
    if not enabled(config):
        return False
    full = [isinstance(loader, FullSortEvalDataLoader) and loader.is_sequential for loader in (valid_data, test_data)]
    if not any(full):
        return False
    train = user_items(_dataset_of(train_data))
    if full[0]:
        mask_loader(valid_data, train)
    if full[1]:
        earlier = train
        valid_dataset = _dataset_of(valid_data)
        if valid_dataset is not None and len(valid_dataset.inter_feat):
            earlier = train + user_items(valid_dataset)
            earlier.data[:] = 1.0
        mask_loader(test_data, earlier)
    return True
