"""Each user's whole history, as the input of batch inference (``recommend``, ``score``).

Evaluation reads the history *before* a validation/test interaction; inference reads everything
the dataset holds for a user: every interaction of the training, validation and test parts,
in the order of RecBole's sequential rows (by time), so that the history before a user's test
interaction is exactly the one evaluation reads. :class:`UserHistories` keeps them as flat arrays
plus per-user ``[start, end)`` segments, read from the dataset's rows as
:class:`~recbole_mtl.data.windows.UserWindows` rebuilds the training part, and
:meth:`UserHistories.batch` builds the rows the models read, with the names of RecBole's
sequential rows:

* ``user_id`` ``[B]``; ``item_id_list`` ``[B, L]`` (the last ``L = MAX_ITEM_LIST_LENGTH`` items,
  left-aligned, padded with 0); ``item_length`` ``[B]``; ``<field>_list`` ``[B, L]`` for every other
  1-d interaction field (e.g. ``interest_label_list``, ``timestamp_list``);
* the interaction to score: ``item_id`` ``[B]`` (the candidate of a pair, else 0) and, for every
  other 1-d interaction field, the value of the user's last interaction (its time, for the time
  gap an encoder reads: the next interaction is taken to happen when the last one did).
"""

from __future__ import annotations

from typing import Optional

import torch
from recbole.data.interaction import Interaction

from recbole_mtl.data.windows import UserWindows, row_names, within_group


class UserHistories:
    """Every user's time-ordered interactions (all parts of the split) as flat arrays.

    Attributes:
        items: ``[T]`` item ids, users one after another; ``fields``: field -> ``[T]`` values.
        starts / ends: ``[n_users]``: user id ``u``'s interactions are ``items[starts[u]:ends[u]]``
            (ids without interactions, padding 0 included, have none).
    """

    def __init__(self, dataset, max_len: int):
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        self.names = row_names(dataset)
        self.max_len = int(max_len)
        self.starts = torch.zeros(dataset.user_num, dtype=torch.long)
        self.ends = torch.zeros(dataset.user_num, dtype=torch.long)
        if getattr(dataset, "flat", None) is not None:  # lean: every interaction, users with one included
            self.items = dataset.flat[self.iid_field]
            self.fields = {f: v for f, v in dataset.flat.items() if f != self.iid_field and v.dim() == 1}
            self.starts[dataset.flat_users], self.ends[dataset.flat_users] = dataset.flat_starts, dataset.flat_ends
            return
        # RecBole's per-target rows (its sequential augmentation, over all the parts): the
        # windows' reconstruction turns them back into each user's sequence
        whole = UserWindows.from_dataset(dataset, max_len)
        self.items, self.fields = whole.items, whole.fields
        self.starts[whole.users], self.ends[whole.users] = whole.starts, whole.ends

    def length(self, users: torch.Tensor) -> torch.Tensor:
        """``[B]`` number of interactions of each user."""
        return self.ends[users] - self.starts[users]

    def seen(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)``: every item each user (``users[rows]``) interacted with, for masking."""
        start, count = self.starts[users], self.length(users)
        rows = torch.repeat_interleave(torch.arange(len(users)), count)
        at = torch.from_numpy(within_group(count.numpy()))
        return rows, self.items[start[rows] + at]

    def batch(self, users: torch.Tensor, next_items: Optional[torch.Tensor] = None) -> Interaction:
        """Rows of ``users`` ``[B]`` ending with their whole history (names in the module docstring).

        Args:
            users: internal user ids, each with at least one interaction.
            next_items: ``[B]`` the item of the interaction to score (pair tasks), default 0.
        """
        users = torch.as_tensor(users, dtype=torch.long)
        end = self.ends[users]
        length = torch.minimum(self.length(users), torch.tensor(self.max_len))
        start = end - length
        at = start.unsqueeze(1) + torch.arange(self.max_len)  # [B, L]
        inputs = at < end.unsqueeze(1)
        safe = torch.where(inputs, at, torch.zeros_like(at)).clamp(max=max(len(self.items) - 1, 0))
        last = (end - 1).clamp(min=0)
        out = {
            self.uid_field: users,
            self.iid_field: torch.zeros_like(users) if next_items is None else torch.as_tensor(next_items),
            self.names["items"]: self.items[safe] * inputs,
            self.names["length"]: length,
        }
        for field, values in self.fields.items():
            out[field + self.names["suffix"]] = values[safe] * inputs
            out[field] = values[last]
        return Interaction(out)
