"""``MultiTaskDataset``: RecBole's ``SequentialDataset`` plus the labels the tasks read.

* Derived interaction labels: every registered ``inter`` :class:`~recbole_mtl.data.labels.LabelSource`
  whose field is loaded becomes a float column computed from the field's raw value, before RecBole
  normalises float fields (ml-100k: ``interest_label = rating >= 4``, ``rating_label = rating``).
* Item labels (e.g. categories): :meth:`multi_hot` of a token/token_seq field of ``.item``, and
  :meth:`item_split`: the labelled items, fixed by ``seed``, split into training items and
  ``category_holdout_ratio`` held-out items (half for validation, half for test) whose labels the
  model never trains on; or, with ``category_folds: K``, into K folds where fold ``category_fold``
  is the test part and the next fold validation.

* Lean sequences: RecBole's sequential augmentation gives
  every interaction a padded ``[MAX_ITEM_LIST_LENGTH]`` copy of the history before it, for every
  interaction field (``item_id_list``, ``timestamp_list``, ...): ``L`` times the data, built by a
  Python loop over every interaction. Here the time-ordered interactions are kept once, as flat
  arrays (:attr:`MultiTaskDataset.flat`), and each row (one per target, as RecBole's) carries
  only ``item_length`` and :data:`FLAT_POSITION`, its target's index in those arrays (its history
  is the ``item_length`` entries before it). The training split stays that way: the models train
  on user windows read straight from the flat arrays (:mod:`recbole_mtl.data.windows`), and a
  batch of its rows read through RecBole's loaders gets its list fields gathered then. The
  validation and test splits (one row per user) get RecBole's list fields, gathered from the flat
  arrays, so evaluation sees exactly RecBole's rows.

Which tasks can run on a dataset is decided by the tasks themselves (``recbole_mtl.tasks``).
"""

from __future__ import annotations

import copy
import os
from typing import Optional

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from recbole_mtl.data.labels import label_sources
from recbole_mtl.data.checked import ids_checked_unique
from recbole_mtl.errors import ConfigError


class TokenIds(dict):
    """RecBole's ``field2token_id[field]`` (token -> internal id), built on first use.

    RecBole builds this dict for every id field while loading, one Python entry per token (10M
    items: ~5 s and ~1 GB), though training never looks a token up; here it is filled from
    ``field2id_token[field]`` (``tokens``) the first time anything reads it, with the same content.
    """

    def __init__(self, tokens: np.ndarray):
        super().__init__()
        self._tokens: Optional[np.ndarray] = tokens

    def _fill(self) -> "TokenIds":
        if self._tokens is not None:
            tokens, self._tokens = self._tokens, None
            dict.update(self, ((t, i) for i, t in enumerate(tokens)))
        return self

    def __getitem__(self, key):
        return dict.__getitem__(self._fill(), key)

    def __contains__(self, key):
        return dict.__contains__(self._fill(), key)

    def __iter__(self):
        return dict.__iter__(self._fill())

    def __len__(self):
        return dict.__len__(self._fill())

    def __eq__(self, other):
        return dict.__eq__(self._fill(), other)

    __hash__ = None

    def __repr__(self):
        return dict.__repr__(self._fill())

    def get(self, key, default=None):
        return dict.get(self._fill(), key, default)

    def keys(self):
        return dict.keys(self._fill())

    def values(self):
        return dict.values(self._fill())

    def items(self):
        return dict.items(self._fill())

    def copy(self):
        return dict(self._fill())

    def __reduce__(self):
        return dict, (dict(self._fill()),)


#: Column of a lean dataset's rows: the index of the row's target in :attr:`MultiTaskDataset.flat`.
FLAT_POSITION = "flat_position"


class MultiTaskDataset(SequentialDataset):
    """Sequential dataset (leave-one-out by time) with derived task labels and an item-label split.

    Attributes:
        flat: lean datasets only: field -> values of every interaction, ordered by (user, time),
            shared by the dataset and its splits; ``None`` when the rows hold RecBole's list fields.
    """

    flat: Optional[dict] = None

    #: Keep the ``user_review_field`` column when loading (only ``embed --users`` reads it; the
    #: models read the user vectors made from it, and a text column would be copied into every
    #: history row of RecBole's sequential augmentation).
    keeps_review_text = False

    def __init__(self, config):
        self._config_checks(config)
        super().__init__(config)

    def _config_checks(self, config) -> None:
        """The attributes read from the config alone (also run on a saved dataset's load)."""
        ratio = config["category_holdout_ratio"]
        self.holdout_ratio = float(ratio if ratio is not None else 0.2)
        if not 0.0 < self.holdout_ratio < 1.0:
            raise ConfigError(
                f"category_holdout_ratio must be between 0 and 1 (exclusive), got {self.holdout_ratio}. "
                "Set e.g. --category_holdout_ratio=0.2."
            )

    #: Keep the interactions once, as flat arrays (see the module docstring); RecBole's own
    #: per-prefix augmentation when False.
    lean_sequences = True

    @property
    def lean(self) -> bool:
        """Whether the rows keep no per-prefix list fields (see the module docstring)."""
        return self.lean_sequences and self.config["benchmark_filename"] is None

    def __getitem__(self, index, join=True):
        """RecBole's rows ``index``, with their list fields gathered when the rows are lean (so
        RecBole's own loaders over the training split, e.g. ``train_positions: last``, see
        exactly RecBole's per-prefix rows)."""
        rows = self.inter_feat[index]
        if self._lean_rows(rows):
            rows.update(self.history_lists(rows))
        return self.join(rows) if join else rows

    def _remap(self, remap_list):
        """RecBole's ``Dataset._remap`` (same ids, same ``field2id_token``), with a :class:`TokenIds`
        map instead of the eagerly built token -> id dict."""
        if len(remap_list) == 0:
            return
        tokens, split_point = self._concat_remaped_tokens(remap_list)
        new_ids_list, mp = pd.factorize(tokens)
        new_ids_list = np.split(new_ids_list + 1, split_point)
        mp = np.array(["[PAD]"] + list(mp))
        token_id = TokenIds(mp)
        for (feat, field, ftype), new_ids in zip(remap_list, new_ids_list):
            if field not in self.field2id_token:
                self.field2id_token[field] = mp
                self.field2token_id[field] = token_id
            if ftype == FeatureType.TOKEN:
                feat[field] = new_ids
            elif ftype == FeatureType.TOKEN_SEQ:
                split_point = np.cumsum(feat[field].agg(len))[:-1]
                feat[field] = np.split(new_ids, split_point)

    def _load_user_or_item_feat(self, token, dataset_path, source, field_name):
        """RecBole's, without its drop of repeated ids when this process's check of the file found
        none (RecBole hashes every id again; the check refuses a repeated id, naming both lines)."""
        feat_path = os.path.join(dataset_path, f"{token}.{source.value}")
        field = getattr(self, field_name, None)
        if field is None or not os.path.isfile(feat_path) or not ids_checked_unique(feat_path, field):
            return super()._load_user_or_item_feat(token, dataset_path, source, field_name)
        feat = self._load_feat(feat_path, source)
        if feat is None or field not in feat:  # RecBole's own handling (and errors)
            return super()._load_user_or_item_feat(token, dataset_path, source, field_name)
        if field in self.field2source:
            self.field2source[field] = FeatureSource(source.value + "_id")
        return feat

    def _filter_by_inter_num(self):
        """RecBole's k-core filter, skipped when its intervals admit every count (the default
        ``[0,inf)``: nothing can be removed, and RecBole would still count every id)."""
        intervals = [self._parse_intervals_str(self.config[key])
                     for key in ("user_inter_num_interval", "item_inter_num_interval")]
        if all(i is None or (len(i) == 1 and i[0][1] <= 0 and i[0][2] == float("inf")) for i in intervals):
            return
        super()._filter_by_inter_num()

    def _grouped_index(self, group_by_list):
        """RecBole's grouping of row indexes by key (groups in order of first appearance, rows
        ascending within a group), as arrays, without a Python loop over every row."""
        keys = np.asarray(group_by_list)
        if len(keys) == 0:
            return []
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        return [groups[g] for g in np.argsort(first, kind="stable")]

    @property
    def avg_actions_of_users(self):
        """RecBole's (mean rows per user), by counting ids instead of a Python ``Counter``."""
        return self._mean_count(self.uid_field)

    @property
    def avg_actions_of_items(self):
        """RecBole's (mean rows per item), by counting ids instead of a Python ``Counter``."""
        return self._mean_count(self.iid_field)

    def _mean_count(self, field: str):
        if isinstance(self.inter_feat, pd.DataFrame):
            return np.mean(self.inter_feat.groupby(field).size())
        counts = np.bincount(self.inter_feat[field].numpy())
        return np.mean(counts[counts > 0])

    # -- lean sequences ------------------------------------------------------------------------
    def data_augmentation(self):
        """RecBole's rows (one per interaction that has a history), without the list fields."""
        if not self.lean:
            return super().data_augmentation()
        self._aug_presets()
        self._check_field("uid_field", "time_field")
        if FLAT_POSITION in self.inter_feat:
            raise ConfigError(f"the .inter file has a field named '{FLAT_POSITION}', a name the plugin uses; "
                              "rename that column.")
        max_len = int(self.config["MAX_ITEM_LIST_LENGTH"])
        self.sort(by=[self.uid_field, self.time_field], ascending=True)
        uid = self.inter_feat[self.uid_field].numpy()
        n = len(uid)
        new_user = np.ones(n, dtype=bool)
        new_user[1:] = uid[1:] != uid[:-1]
        first = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        target = np.flatnonzero(~new_user)
        length = target - np.maximum(first[target], target - max_len)  # RecBole's sliding start
        self.flat = {f: self.inter_feat[f] for f in self.inter_feat.columns if f != self.uid_field}
        begins = np.flatnonzero(new_user)
        #: every user's interactions (all parts of the split): flat[...][flat_starts[k]:flat_ends[k]]
        #: belong to user id flat_users[k]
        self.flat_users = torch.from_numpy(uid[begins])
        self.flat_starts = torch.from_numpy(begins)
        self.flat_ends = torch.from_numpy(np.append(begins[1:], n).astype(np.int64))
        rows = self.inter_feat[torch.from_numpy(target)]
        rows.update(Interaction({self.item_list_length_field: torch.from_numpy(length),
                                 FLAT_POSITION: torch.from_numpy(target)}))
        self.set_field_property(FLAT_POSITION, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        self.inter_feat = rows

    def build(self):
        """RecBole's split; a dataset loaded from a saved one (:mod:`recbole_mtl.data.saved`) or
        split already to be saved returns its saved parts."""
        built = self.__dict__.get("_saved_built")
        if built is not None:
            return list(built)
        parts = self.__dict__.get("_saved_parts")
        if parts is not None:
            datasets = []
            for state in parts:
                part = copy.copy(self)
                for key in [k for k in part.__dict__ if k.startswith("_saved")]:
                    del part.__dict__[key]
                part.__dict__.update(state)
                datasets.append(part)
            segments = self.__dict__.get("_saved_segments")
            if segments is not None and datasets:  # valid for these very rows only (not for a copy's)
                datasets[0].window_segments = (datasets[0].inter_feat, segments)
            self._saved_built = datasets
            return list(datasets)
        datasets = super().build()
        if self.flat is not None:
            for part in datasets[1:]:  # evaluation rows: RecBole's list fields
                part.materialize_lists()
        return datasets

    def materialize_lists(self) -> None:
        """Give this (lean) dataset's rows RecBole's ``<field>_list`` columns from the flat arrays."""
        feat = self.inter_feat
        if len(feat) and self._lean_rows(feat):
            feat.update(self.history_lists(feat))

    def _lean_rows(self, rows: Interaction) -> bool:
        """Whether ``rows`` lack RecBole's list fields, which the flat arrays can give them."""
        return self.flat is not None and self.iid_field + self.config["LIST_SUFFIX"] not in rows

    def history_lists(self, rows: Interaction) -> Interaction:
        """RecBole's ``<field>_list`` columns (``[R, MAX_ITEM_LIST_LENGTH, ...]``, zero-padded) of lean
        ``rows`` (they carry ``item_length`` and :data:`FLAT_POSITION`), gathered from the flat arrays."""
        max_len = int(self.config["MAX_ITEM_LIST_LENGTH"])
        length = rows[self.item_list_length_field]
        cols = torch.arange(max_len)
        present = cols < length.unsqueeze(1)  # [R, L]
        at = torch.where(present, (rows[FLAT_POSITION] - length).unsqueeze(1) + cols, 0)
        lists = {}
        for field, values in self.flat.items():
            gathered = values[at]
            mask = present.view(*present.shape, *([1] * (gathered.dim() - 2)))
            lists[getattr(self, f"{field}_list_field")] = gathered * mask.to(gathered.dtype)
        return Interaction(lists)

    def inter_matrix(self, form="coo", value_field=None):
        """RecBole's: every row's target, plus the first item of each history of length 1."""
        if not self._lean_rows(self.inter_feat):
            return super().inter_matrix(form, value_field)
        first = self.inter_feat[self.item_list_length_field] == 1
        starts = self.inter_feat[FLAT_POSITION][first] - 1
        rows = {}
        for field in self.inter_feat.columns:
            if field in (self.item_list_length_field, FLAT_POSITION):
                continue
            extra = self.flat[field][starts] if field in self.flat else self.inter_feat[field][first]
            rows[field] = torch.cat([self.inter_feat[field], extra])
        return self._create_sparse_matrix(Interaction(rows), self.uid_field, self.iid_field, form, value_field)

    def _load_data(self, token, dataset_path):
        super()._load_data(token, dataset_path)
        review = self.config["user_review_field"]
        if review and not self.keeps_review_text and self.inter_feat is not None and review in self.inter_feat:
            self._del_col(self.inter_feat, review)

    # -- derived interaction labels --------------------------------------------------------
    def _normalize(self):
        derived = {}
        for source in label_sources():
            field = self.config[source.config_key]
            if source.file != "inter" or source.derive is None or not field or field not in self.inter_feat:
                continue
            if self.field2type[field] != FeatureType.FLOAT:
                raise ConfigError(
                    f"{source.config_key} '{field}' must be a float field of {self.dataset_name}.inter "
                    f"(header '{field}:float'), but it is {self.field2type[field].value}. "
                    f"Set {source.config_key} to a numeric field such as rating."
                )
            values = self.inter_feat[field].to_numpy(dtype=np.float64)
            derived[source.column] = np.asarray(source.derive(values, self.config), dtype=np.float32)
        time_field = self.time_field if self.time_field in getattr(self, "inter_feat", {}) else None
        raw_time = self.inter_feat[time_field].to_numpy(dtype=np.float64) if time_field else None
        super()._normalize()
        #: seconds per unit of the (possibly min-max normalised) time field, for time-gap features
        self.time_scale = 1.0
        if raw_time is not None and len(raw_time):
            now = self.inter_feat[time_field].to_numpy(dtype=np.float64)
            if not np.allclose(now, raw_time):
                self.time_scale = float(raw_time.max() - raw_time.min()) or 1.0
        for column, values in derived.items():
            self.inter_feat[column] = values
            self.set_field_property(column, FeatureType.FLOAT, FeatureSource.INTERACTION, 1)

    # -- item labels and their split ---------------------------------------------------------
    def multi_hot(self, field: str) -> torch.Tensor:
        """Multi-hot labels ``[item_num, num_labels]`` of an ``.item`` token field (padding dropped)."""
        values = self.item_feat[field]
        if values.dim() == 1:
            values = values.unsqueeze(1)
        labels = torch.zeros(values.shape[0], self.num(field), dtype=torch.float32)
        labels.scatter_(1, values.long(), 1.0)
        return labels[:, 1:]

    def label_names(self, field: str) -> list[str]:
        return list(self.field2id_token[field][1:])

    def item_split(self, labels: torch.Tensor, field: str) -> dict[str, torch.Tensor]:
        """Item ids of ``train``/``valid``/``test`` among the items with a label, fixed by ``seed``."""
        labelled = torch.nonzero(labels.sum(1) > 0).flatten().numpy()
        labelled = labelled[labelled > 0]  # id 0 is padding
        order = np.random.default_rng(int(self.config["seed"])).permutation(labelled)
        folds = int(self.config["category_folds"] or 1)
        if folds > 1:
            train, valid, test = self._fold(order, folds, int(self.config["category_fold"] or 0))
        else:
            n_holdout = max(2, int(round(len(order) * self.holdout_ratio)))
            if len(order) - n_holdout < 1:
                raise ConfigError(
                    f"only {len(order)} items have a '{field}' label, too few to hold some out; "
                    "lower category_holdout_ratio or switch the task off."
                )
            holdout, train = order[:n_holdout], order[n_holdout:]
            half = n_holdout // 2
            valid, test = holdout[:half], holdout[half:]
        return {name: torch.as_tensor(np.sort(ids), dtype=torch.long)
                for name, ids in (("train", train), ("valid", valid), ("test", test))}

    def _fold(self, order: np.ndarray, folds: int, fold: int):
        """K-fold over items: fold ``fold`` is the test part, the next one validation, the rest training."""
        if folds < 3 or not 0 <= fold < folds:
            raise ConfigError(
                f"category_folds={folds}, category_fold={fold}: K-fold needs category_folds >= 3 (test, "
                "validation and training folds) and 0 <= category_fold < category_folds."
            )
        if len(order) < folds:
            raise ConfigError(f"{len(order)} labelled items cannot make {folds} folds.")
        parts = np.array_split(order, folds)
        train = np.concatenate([p for i, p in enumerate(parts) if i not in (fold, (fold + 1) % folds)])
        return train, parts[(fold + 1) % folds], parts[fold]

    def field_missing(self, field: Optional[str], file: str, config_key: str) -> Optional[str]:
        """Why ``field`` (named by ``config_key``) cannot serve as a label of ``file``, or None."""
        if not field:
            kind = "a float field of the .inter file (e.g. rating)" if file == "inter" else \
                "a token/token_seq field of the .item file"
            return f"no {config_key} is set; set it to {kind}."
        if file == "inter":
            if field not in self.field2type or field not in self.inter_feat:
                return (f"field '{field}' is not loaded from {self.dataset_name}.inter; "
                        f"add it to load_col or set {config_key} to a field that exists.")
            return None
        if self.item_feat is None or field not in self.item_feat:
            return (f"field '{field}' is not in {self.dataset_name}.item (or not loaded); "
                    f"set {config_key} to a token/token_seq field of the .item file.")
        if self.field2type[field] not in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            return f"{config_key} '{field}' must be a token or token_seq field."
        return None
