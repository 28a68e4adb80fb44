"""Each user's whole history, as the input of batch inference (``recommend``, ``score``).

Evaluation reads the history *before* a validation/test interaction; inference reads everything
the dataset holds for a user: every interaction of the training, validation and test parts,
time-ordered as RecBole orders them (by time, ties in file order). :class:`UserHistories` keeps
them as flat arrays plus per-user offsets (as :class:`~recbole_mtl.data.windows.UserWindows` does
for the training part), and :meth:`UserHistories.batch` builds the rows the models read, with the
names of RecBole's sequential rows:

* ``user_id`` ``[B]``; ``item_id_list`` ``[B, L]`` (the last ``L = MAX_ITEM_LIST_LENGTH`` items,
  left-aligned, padded with 0); ``item_length`` ``[B]``; ``<field>_list`` ``[B, L]`` for every other
  1-d interaction field (e.g. ``interest_label_list``, ``timestamp_list``);
* the interaction to score: ``item_id`` ``[B]`` (the candidate of a pair, else 0) and, for every
  other 1-d interaction field, the value of the user's last interaction (its time, for the time
  gap an encoder reads: the next interaction is taken to happen when the last one did).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from recbole.data.interaction import Interaction


class UserHistories:
    """Every user's time-ordered interactions (all parts of the split) as flat arrays.

    Attributes:
        items: ``[T]`` item ids, users one after another; ``fields``: field -> ``[T]`` values.
        offsets: ``[n_users + 1]``: user id ``u``'s interactions are ``items[offsets[u]:offsets[u + 1]]``
            (ids without interactions, padding 0 included, have none).
    """

    def __init__(self, dataset, max_len: int):
        feat = dataset.inter_feat
        self.uid_field, self.iid_field = dataset.uid_field, dataset.iid_field
        suffix = dataset.config["LIST_SUFFIX"]
        self.names = {"items": self.iid_field + suffix, "length": dataset.item_list_length_field, "suffix": suffix}
        self.max_len = int(max_len)
        uid = feat[self.uid_field].numpy()
        order = np.arange(len(uid))
        if dataset.time_field and dataset.time_field in feat:  # RecBole's order: by time, ties in file order
            order = np.argsort(feat[dataset.time_field].numpy(), kind="stable")
        order = order[np.argsort(uid[order], kind="stable")]
        counts = np.bincount(uid, minlength=dataset.user_num)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]))
        index = torch.from_numpy(order)
        self.items = feat[self.iid_field][index]
        self.fields = {field: feat[field][index] for field in feat.columns
                       if field not in (self.uid_field, self.iid_field) and feat[field].dim() == 1}

    def length(self, users: torch.Tensor) -> torch.Tensor:
        """``[B]`` number of interactions of each user."""
        return self.offsets[users + 1] - self.offsets[users]

    def seen(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, items)``: every item each user (``users[rows]``) interacted with, for masking."""
        start, count = self.offsets[users], self.length(users)
        rows = torch.repeat_interleave(torch.arange(len(users)), count)
        at = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        return rows, self.items[start[rows] + at]

    def batch(self, users: torch.Tensor, next_items: Optional[torch.Tensor] = None) -> Interaction:
        """Rows of ``users`` ``[B]`` ending with their whole history (names in the module docstring).

        Args:
            users: internal user ids, each with at least one interaction.
            next_items: ``[B]`` the item of the interaction to score (pair tasks), default 0.
        """
        users = torch.as_tensor(users, dtype=torch.long)
        end = self.offsets[users + 1]
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
