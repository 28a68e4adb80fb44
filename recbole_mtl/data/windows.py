"""Training windows of each user's time-ordered history: the sequence transducer's training data.

RecBole's sequential training data holds one row per target interaction, each with its own padded
copy of the history before it. :class:`UserWindows` holds each user's training sequence once, as
flat arrays (item ids and every 1-d interaction field) and per-user ``[start, end)`` segments of
them: the first row's history, then every row's target, in RecBole's order (time-ordered per
user). From a lean dataset (:mod:`recbole_mtl.data.dataset`) the segments point into the
dataset's own flat arrays, without a copy; from RecBole's per-prefix rows they are rebuilt. A
training split holds no validation or test interaction, so neither do the segments.

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

from recbole_mtl.data.dataset import FLAT_POSITION
from recbole_mtl.errors import ConfigError

NEXT_PREFIX = "next_"
POSITION_MASK = "position_mask"


def within_group(counts) -> np.ndarray:
    """``0, 1, ..., c - 1`` for each count ``c`` of ``counts``, one group after another."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def row_names(dataset) -> dict[str, str]:
    """The names of RecBole's sequential rows for ``dataset``: user, item list, length, next item, suffix."""
    suffix = dataset.config["LIST_SUFFIX"]
    return {"user": dataset.uid_field, "items": dataset.iid_field + suffix, "length": dataset.item_list_length_field,
            "next_item": NEXT_PREFIX + dataset.iid_field, "suffix": suffix}


class UserWindows:
    """Each user's training sequence as flat arrays, cut into windows.

    Attributes:
        items: ``[T]`` item ids of every user's sequence, users one after another.
        fields: field name -> ``[T]`` values of that interaction field.
        users: ``[U]`` user ids; ``starts`` / ``ends``: ``[U]`` each user's sequence is
            ``items[starts[k]:ends[k]]``.
        window_user / window_start / window_end / window_count_from: ``[W]`` per window: its user's
            index, its first and last flat item index (inclusive), the first flat index of a
            counted target.
    """

    def __init__(self, items: torch.Tensor, fields: dict[str, torch.Tensor], users: torch.Tensor,
                 starts: torch.Tensor, ends: torch.Tensor, max_len: int, stride: int, names: dict[str, str]):
        if not 1 <= stride <= max_len:
            raise ConfigError(f"window_stride must be between 1 and MAX_ITEM_LIST_LENGTH ({max_len}); got {stride}.")
        self.items, self.fields, self.users, self.starts, self.ends = items, fields, users, starts, ends
        self.max_len, self.stride, self.names = max_len, stride, names
        self._cut()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset, max_len: int, stride: Optional[int] = None) -> "UserWindows":
        """The sequences of a RecBole sequential (training) dataset's per-target rows."""
        feat = dataset.inter_feat
        uid_field, iid_field = dataset.uid_field, dataset.iid_field
        suffix = dataset.config["LIST_SUFFIX"]
        seq_field, len_field = iid_field + suffix, dataset.item_list_length_field
        names = row_names(dataset)
        if getattr(dataset, "flat", None) is not None and FLAT_POSITION in feat and seq_field not in feat:
            return cls._from_flat(dataset, int(max_len), int(stride or max_len), names)
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
        prefix_col = within_group(prefix)
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
        windows = cls(items, fields, torch.from_numpy(users), torch.from_numpy(offsets[:-1]),
                      torch.from_numpy(offsets[1:]), int(max_len), int(stride or max_len), names)
        windows._check_time_order(dataset.time_field)
        return windows

    @classmethod
    def _from_flat(cls, dataset, max_len: int, stride: int, names: dict) -> "UserWindows":
        """Segments of a lean dataset's flat arrays (a copy only where a user's rows are not contiguous)."""
        flat = dataset.flat
        rows, saved = dataset.__dict__.get("window_segments") or (None, None)
        if saved is not None and rows is dataset.inter_feat:  # saved with these rows (time order checked then)
            fields = {f: v for f, v in flat.items() if f != dataset.iid_field and v.dim() == 1}
            return cls(flat[dataset.iid_field], fields, saved["users"], saved["starts"], saved["ends"],
                       max_len, stride, names)
        windows = cls._segments_of(dataset, max_len, stride, names)
        windows._check_time_order(dataset.time_field)
        return windows

    @staticmethod
    def segments(dataset) -> Optional[dict]:
        """``{"users", "starts", "ends"}``: a lean training dataset's per-user segments of its flat
        arrays, when each user's rows are contiguous there (None otherwise), time order checked."""
        if getattr(dataset, "flat", None) is None or FLAT_POSITION not in dataset.inter_feat:
            return None
        windows = UserWindows._segments_of(dataset, 1, 1, row_names(dataset))
        if windows.items is not dataset.flat[dataset.iid_field]:
            return None
        windows._check_time_order(dataset.time_field)
        return {"users": windows.users, "starts": windows.starts, "ends": windows.ends}

    @classmethod
    def _segments_of(cls, dataset, max_len: int, stride: int, names: dict) -> "UserWindows":
        feat, flat = dataset.inter_feat, dataset.flat
        uid = feat[dataset.uid_field].numpy()
        pos = feat[FLAT_POSITION].numpy()
        length = feat[dataset.item_list_length_field].numpy()
        order = np.argsort(uid, kind="stable")
        users, first, counts = np.unique(uid[order], return_index=True, return_counts=True)
        first_rows, last_rows = order[first], order[first + counts - 1]
        starts = pos[first_rows] - length[first_rows]  # the first row's history, then every target
        ends = pos[last_rows] + 1
        fields = {f: v for f, v in flat.items() if f != dataset.iid_field and v.dim() == 1}
        items = flat[dataset.iid_field]
        step = np.diff(pos[order])
        same_user = np.diff(uid[order]) == 0
        if not (step[same_user] == 1).all():  # rows left out within a user: gather each sequence
            prefix = pos[first_rows] - starts
            index = np.concatenate([np.repeat(starts, prefix) + within_group(prefix), pos[order]])
            key = np.concatenate([np.repeat(np.arange(len(users)), prefix), np.repeat(np.arange(len(users)), counts)])
            index = torch.from_numpy(index[np.argsort(key, kind="stable")])
            items, fields = items[index], {f: v[index] for f, v in fields.items()}
            sizes = prefix + counts
            ends = np.cumsum(sizes)
            starts = ends - sizes
        return cls(items, fields, torch.from_numpy(users), torch.from_numpy(starts), torch.from_numpy(ends),
                   max_len, stride, names)

    def _check_time_order(self, time_field: str) -> None:
        if time_field not in self.fields or len(self.users) == 0:
            return
        times = self.fields[time_field]
        pairs = np.maximum((self.ends - self.starts).numpy() - 1, 0)  # consecutive pairs per sequence
        within = torch.from_numpy(np.repeat(self.starts.numpy(), pairs) + within_group(pairs))
        if len(within) and bool((times[within + 1] < times[within]).any()):
            raise ValueError("training rows are not time-ordered within a user: RecBole's sequential "
                             "datasets sort by (user, time); was the dataset re-ordered?")

    def _cut(self) -> None:
        """Windows from each sequence's end backwards (see the module docstring)."""
        L, S = self.max_len, self.stride
        size = (self.ends - self.starts).numpy()
        last = size - 1  # index of the last target in each sequence (-1 or 0: no target)
        n = np.where(last >= 1, 1 + np.ceil(np.maximum(last - L, 0) / S).astype(np.int64), 0)
        user = np.repeat(np.arange(len(size)), n)
        k = within_group(n)
        end = last[user] - k * S  # relative index of the window's last target
        start = np.maximum(0, end - L)
        count_from = np.where(start == 0, 1, end - S + 1)
        base = self.starts.numpy()[user]
        self.window_user = torch.from_numpy(user)
        self.window_start = torch.from_numpy(base + start)
        self.window_end = torch.from_numpy(base + end)
        self.window_count_from = torch.from_numpy(base + count_from)

    def __len__(self) -> int:
        return len(self.window_user)

    def part(self, rank: int, world_size: int) -> "UserWindows":
        """The windows rank ``rank`` of ``world_size`` trains on: a contiguous block of them (users
        one after another), so a rank reads only its users' part of the flat arrays (mapped from a
        saved dataset, the other parts are never touched). The count is padded to a multiple of
        ``world_size`` by wrapping around, as RecBole's ``DistributedSampler`` pads, so every rank
        has as many windows and takes as many steps, and the ranks together hold the windows that
        sampler would deal; the flat arrays are shared, not copied."""
        total = -(-len(self) // world_size) * world_size
        per = total // world_size
        mine = torch.arange(rank * per, (rank + 1) * per) % len(self)
        part = object.__new__(UserWindows)
        part.__dict__.update(self.__dict__)
        for name in ("window_user", "window_start", "window_end", "window_count_from"):
            setattr(part, name, getattr(self, name)[mine])
        return part

    @property
    def num_targets(self) -> int:
        """Targets counted once an epoch (each sequence's length minus one)."""
        return int((self.window_end - self.window_count_from + 1).sum())

    # -- batches -----------------------------------------------------------------------------
    def lengths(self) -> torch.Tensor:
        """``[W]`` inputs of each window (1 .. ``max_len``)."""
        return self.window_end - self.window_start

    def batch(self, index, trim: bool = False) -> Interaction:
        """The windows ``index`` as one ``Interaction`` (names in the module docstring); with
        ``trim``, ``L`` is the batch's longest window instead of ``max_len`` (the columns dropped
        are padding in every row: a causal encoder gives the other positions the same states)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        start, end = self.window_start[index], self.window_end[index]
        count_from = self.window_count_from[index]
        L = max(1, int((end - start).max())) if trim and len(index) else self.max_len
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
    """RecBole training loader over :class:`UserWindows` (shuffled by RecBole's generator).

    The batch size counts windows (``window_batch_size``); the shuffling generator is RecBole's,
    so checkpoints that keep the train loader's generator state resume the same order.

    Args:
        part: ``(rank, world_size)`` in a multi-process run: this loader keeps only the windows of
            that rank (:meth:`UserWindows.part`) and shuffles them itself; build it then under a
            single-process view of RecBole's ``single_spec`` (``distributed.recbole_view``), or
            RecBole would split them over the ranks a second time.
    """

    def __init__(self, config, dataset, shuffle: bool = True, part: Optional[tuple[int, int]] = None):
        chunk = config["window_sort_chunk"]
        chunk = 0 if chunk is None else chunk
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise ConfigError(f"window_sort_chunk must be an integer >= 0 (0: off; k: sort each run of k batches "
                              f"by window length); got {config['window_sort_chunk']!r}.")
        #: batches per length-sorted chunk (0: RecBole's shuffled batches, each ``max_len`` wide)
        self.sort_chunk = chunk
        # HSTU scales attention by the window length: its windows keep max_len columns, as evaluation does
        self.trim = bool(chunk) and str(config["encoder"] or "transformer").lower() != "hstu"
        windows = UserWindows.from_dataset(dataset, config["MAX_ITEM_LIST_LENGTH"], config["window_stride"])
        if len(windows) == 0:
            raise ConfigError("no training window: every user has fewer than 2 training interactions. "
                              "Check the dataset's filters (user_inter_num_interval) and its split.")
        #: windows of every rank (their count), before this rank's part is taken
        self.total_windows = len(windows)
        self.part = part
        self.windows = windows.part(*part) if part else windows
        self.sample_size = len(self.windows)
        super().__init__(config, dataset, None, shuffle=shuffle)

    def _init_batch_size_and_step(self):
        size = int(self.config["window_batch_size"] or 128)
        if size < 1:
            raise ConfigError(f"window_batch_size must be >= 1; got {size}.")
        if self.part:  # each rank takes its share of every batch, as under RecBole's DistributedSampler
            size = max(1, size // self.part[1])
        self.step = size
        self.set_batch_size(size)

    def collate_fn(self, index):
        return self._dataset.join(self.windows.batch(index, trim=self.trim))

    def __iter__(self):
        if not self.sort_chunk:
            return super().__iter__()
        return (self.collate_fn(index) for index in self.sorted_batches())

    def sorted_batches(self) -> list[torch.Tensor]:
        """One epoch's batches with ``window_sort_chunk: k``: the windows in a random order (drawn
        from the loader's generator, which checkpoints keep), each run of ``k`` batches' worth of
        them sorted by length and cut into batches, and the batches in a random order. A batch then
        holds windows of similar length and is trimmed to its longest, so short histories do not
        pay for the longest one's padding; every window is still in exactly one batch an epoch."""
        n, size = len(self.windows), self.step
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        lengths = self.windows.lengths()
        batches = []
        for chunk in order.split(size * self.sort_chunk):
            chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
            batches += list(chunk.split(size))
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
        return batches
