"""Training windows of each user's time-ordered history: the sequence transducer's training data.

RecBole's sequential training data holds one row per target interaction, each with its own padded
copy of the history before it. :class:`UserWindows` rebuilds each user's training sequence once,
as flat arrays (item ids and every 1-d interaction field, plus per-user offsets), from those rows:
the first row's history, then every row's target, in RecBole's order (time-ordered per user). A
training split holds no validation or test interaction, so neither do the windows.

A user's sequence ``x_0 .. x_{m-1}`` (``m`` items) has targets ``x_1 .. x_{m-1}``. It is cut, from
its end backwards, into windows of at most ``L + 1`` items (``L = MAX_ITEM_LIST_LENGTH``): ``L`` inputs
and the ``L`` next items they predict. Window ``k`` ends at target ``e_k = m - 1 - k * S``
(``S = window_stride``) and starts at ``max(0, e_k - L)``; the first window to reach the start of
the sequence is the last one. Each window counts (``position_mask``) only the targets after
``e_k - S``, and the earliest window every target it holds, so every target is counted exactly once
an epoch: with ``S = L`` windows do not overlap; with ``S < L`` later windows re-read ``L - S`` items
of context (and cost ``L / S`` times the compute). Inputs are left-aligned and padded with 0, like
RecBole's ``item_id_list``, so position ``i`` of a window is position ``i`` of an evaluation history.

A batch (:meth:`UserWindows.batch`) is an ``Interaction`` of ``B`` windows (the batch size counts
windows, ``window_batch_size``) with the names RecBole's sequential rows use:

* ``user_id`` ``[B]``; ``item_id_list`` ``[B, L]``; ``item_length`` ``[B]``; ``<field>_list`` ``[B, L]``
  for every other 1-d interaction field (e.g. ``timestamp_list``);
* ``next_item_id`` ``[B, L]`` and ``next_<field>`` ``[B, L]``: the interaction each position predicts;
* ``position_mask`` ``[B, L]`` (bool): the positions whose targets count in this window.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from recbole.data.dataloader.abstract_dataloader import AbstractDataLoader
from recbole.data.interaction import Interaction

from recbole_mtl.errors import ConfigError

NEXT_PREFIX = "next_"
POSITION_MASK = "position_mask"


class UserWindows:
    """Each user's training sequence as flat arrays, cut into windows.

    Attributes:
        items: ``[T]`` item ids of every user's sequence, users one after another.
        fields: field name -> ``[T]`` values of that interaction field.
        users: ``[U]`` user ids; ``offsets``: ``[U + 1]`` where each user's sequence starts.
        window_user / window_start / window_end / window_count_from: ``[W]`` per window: its user's
            index, its first and last flat item index (inclusive), the first flat index of a
            counted target.
    """

    def __init__(self, items: torch.Tensor, fields: dict[str, torch.Tensor], users: torch.Tensor,
                 offsets: torch.Tensor, max_len: int, stride: int, names: dict[str, str]):
        if not 1 <= stride <= max_len:
            raise ConfigError(f"window_stride must be between 1 and MAX_ITEM_LIST_LENGTH ({max_len}); got {stride}.")
        self.items, self.fields, self.users, self.offsets = items, fields, users, offsets
        self.max_len, self.stride, self.names = max_len, stride, names
        self._cut()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset, max_len: int, stride: Optional[int] = None) -> "UserWindows":
        """Rebuild the sequences of a RecBole sequential (training) dataset's per-target rows."""
        feat = dataset.inter_feat
        uid_field, iid_field = dataset.uid_field, dataset.iid_field
        suffix = dataset.config["LIST_SUFFIX"]
        seq_field, len_field = iid_field + suffix, dataset.item_list_length_field
        uid = feat[uid_field].numpy()
        order = np.argsort(uid, kind="stable")  # RecBole's rows are time-ordered within each user
        users, first, counts = np.unique(uid[order], return_index=True, return_counts=True)
        first_rows = order[first]
        prefix = feat[len_field].numpy()[first_rows].astype(np.int64)  # history of each user's first row
        sizes = prefix + counts
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        user_of_row = np.repeat(np.arange(len(users)), counts)
        rank = np.arange(len(order)) - np.repeat(first, counts)
        target_at = offsets[user_of_row] + prefix[user_of_row] + rank  # flat index of each row's target
        prefix_user = np.repeat(np.arange(len(users)), prefix)
        prefix_col = np.arange(prefix.sum()) - np.repeat(np.cumsum(prefix) - prefix, prefix)
        prefix_at = offsets[prefix_user] + prefix_col

        def assemble(target_values: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(int(offsets[-1]), dtype=target_values.dtype)
            out[torch.from_numpy(target_at)] = target_values[torch.from_numpy(order)]
            out[torch.from_numpy(prefix_at)] = history[torch.from_numpy(first_rows[prefix_user]),
                                                       torch.from_numpy(prefix_col)]
            return out

        items = assemble(feat[iid_field], feat[seq_field])
        fields = {}
        for field in feat.columns:
            list_field = field + suffix
            if field in (uid_field, iid_field) or list_field not in feat.columns or feat[field].dim() != 1:
                continue
            if feat[list_field].dim() != 2:
                continue
            fields[field] = assemble(feat[field], feat[list_field])
        time_field = dataset.time_field
        if time_field in fields:
            times = fields[time_field]
            same_user = torch.ones(len(times) - 1, dtype=torch.bool) if len(times) else torch.ones(0, dtype=torch.bool)
            same_user[torch.from_numpy(offsets[1:-1] - 1)] = False
            if len(times) > 1 and bool(((times[1:] < times[:-1]) & same_user).any()):
                raise ValueError("training rows are not time-ordered within a user: RecBole's sequential "
                                 "datasets sort by (user, time); was the dataset re-ordered?")
        names = {"user": uid_field, "items": seq_field, "length": len_field, "next_item": NEXT_PREFIX + iid_field,
                 "suffix": suffix}
        return cls(items, fields, torch.from_numpy(users), torch.from_numpy(offsets),
                   int(max_len), int(stride or max_len), names)

    def _cut(self) -> None:
        """Windows from each sequence's end backwards (see the module docstring)."""
        L, S = self.max_len, self.stride
        size = (self.offsets[1:] - self.offsets[:-1]).numpy()
        last = size - 1  # index of the last target in each sequence (-1 or 0: no target)
        n = np.where(last >= 1, 1 + np.ceil(np.maximum(last - L, 0) / S).astype(np.int64), 0)
        user = np.repeat(np.arange(len(size)), n)
        k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        end = last[user] - k * S  # relative index of the window's last target
        start = np.maximum(0, end - L)
        count_from = np.where(start == 0, 1, end - S + 1)
        base = self.offsets.numpy()[user]
        self.window_user = torch.from_numpy(user)
        self.window_start = torch.from_numpy(base + start)
        self.window_end = torch.from_numpy(base + end)
        self.window_count_from = torch.from_numpy(base + count_from)

    def __len__(self) -> int:
        return len(self.window_user)

    @property
    def num_targets(self) -> int:
        """Targets counted once an epoch (each sequence's length minus one)."""
        return int((self.window_end - self.window_count_from + 1).sum())

    # -- batches -----------------------------------------------------------------------------
    def batch(self, index) -> Interaction:
        """The windows ``index`` as one ``Interaction`` (names in the module docstring)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        start, end = self.window_start[index], self.window_end[index]
        count_from = self.window_count_from[index]
        L = self.max_len
        cols = torch.arange(L)
        at = start.unsqueeze(1) + cols  # [B, L] flat index of each input
        inputs = at < end.unsqueeze(1)  # an input exists where its next item is in the window
        safe = at.clamp(max=max(len(self.items) - 2, 0))
        mask = inputs & (at + 1 >= count_from.unsqueeze(1))
        out = {
            self.names["user"]: self.users[self.window_user[index]],
            self.names["items"]: self.items[safe] * inputs,
            self.names["length"]: (end - start),
            self.names["next_item"]: self.items[safe + 1] * inputs,
            POSITION_MASK: mask,
        }
        for field, values in self.fields.items():
            out[field + self.names["suffix"]] = values[safe] * inputs
            out[NEXT_PREFIX + field] = values[safe + 1] * inputs
        return Interaction(out)


class WindowDataLoader(AbstractDataLoader):
    """RecBole training loader over :class:`UserWindows` (shuffled, split over ranks like RecBole's).

    The batch size counts windows (``window_batch_size``); the shuffling generator is RecBole's,
    so checkpoints that keep the train loader's generator state resume the same order.
    """

    def __init__(self, config, dataset, shuffle: bool = True):
        self.windows = UserWindows.from_dataset(dataset, config["MAX_ITEM_LIST_LENGTH"], config["window_stride"])
        self.sample_size = len(self.windows)
        if self.sample_size == 0:
            raise ConfigError("no training window: every user has fewer than 2 training interactions. "
                              "Check the dataset's filters (user_inter_num_interval) and its split.")
        super().__init__(config, dataset, None, shuffle=shuffle)

    def _init_batch_size_and_step(self):
        size = int(self.config["window_batch_size"] or 128)
        if size < 1:
            raise ConfigError(f"window_batch_size must be >= 1; got {size}.")
        self.step = size
        self.set_batch_size(size)

    def collate_fn(self, index):
        return self._dataset.join(self.windows.batch(index))
