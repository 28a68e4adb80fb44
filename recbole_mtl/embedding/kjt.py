"""Interaction columns -> ``KeyedJaggedTensor``: the one conversion every lookup goes through."""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torchrec import KeyedJaggedTensor


def build_kjt(
    columns: Mapping[str, torch.Tensor],
    stride: int,
    single_bags: Optional[Mapping[str, torch.Tensor]] = None,
) -> KeyedJaggedTensor:
    """Build one KJT of batch size ``stride`` from RecBole-style id columns.

    RecBole pads with id 0 (``[PAD]``), so id 0 is never looked up: a ``token`` column ``[N]``
    gives bags of one id (empty where the id is 0); a ``token_seq`` column or an item
    sequence ``[N, L]`` gives bags of its non-zero ids, in order. Rows ``N..stride-1`` are
    empty bags, so features of different batch sizes share one KJT (and one kernel call).

    Args:
        columns: feature name -> ``LongTensor`` ``[N]`` or ``[N, L]`` with ``N <= stride``.
        stride: the KJT batch size B.
        single_bags: feature name -> ``LongTensor`` ``[M]`` of ids put together in row 0 (used
            to look up a set of items, e.g. all candidates, through the same table).

    Returns:
        A KJT with keys in the order of ``columns`` then ``single_bags``.

    Example:
        >>> kjt = build_kjt({"item_id_list": torch.tensor([[3, 5, 0], [2, 0, 0]])}, stride=2)
        >>> kjt.lengths().tolist(), kjt.values().tolist()
        ([2, 1], [3, 5, 2])
    """
    keys, values, lengths = [], [], []
    for name, column in columns.items():
        column = column.long()
        if column.dim() == 1:
            column = column.unsqueeze(1)
        if column.shape[0] > stride:
            raise ValueError(f"feature '{name}' has {column.shape[0]} rows, more than stride {stride}")
        mask = column != 0
        row_lengths = mask.sum(1)
        if column.shape[0] < stride:
            row_lengths = torch.cat([row_lengths, row_lengths.new_zeros(stride - column.shape[0])])
        keys.append(name)
        values.append(column[mask])
        lengths.append(row_lengths)
    for name, ids in (single_bags or {}).items():
        ids = ids.long().flatten()
        row_lengths = torch.zeros(stride, dtype=torch.long, device=ids.device)
        row_lengths[0] = ids.numel()
        keys.append(name)
        values.append(ids)
        lengths.append(row_lengths)
    return KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))
