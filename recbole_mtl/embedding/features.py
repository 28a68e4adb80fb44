"""Which fields of a RecBole dataset become which embedding tables (read from its metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from recbole.utils import FeatureSource, FeatureType

@dataclass(frozen=True)
class PooledField:
    """A token / token_seq field pooled into one vector per row (its own table)."""

    field: str
    num_embeddings: int
    side: str  # "user" or "item"
    is_seq: bool


@dataclass
class FeatureSpec:
    """The sparse and float inputs a model reads, derived from ``dataset`` field types.

    Attributes:
        user_fields: pooled user-side fields (the user id first).
        item_fields: pooled item attributes (never the item id nor excluded fields).
        user_floats / item_floats: float fields fed to the dense layers.
        n_items: rows of the item-id table.
    """

    n_items: int
    user_fields: list[PooledField] = field(default_factory=list)
    item_fields: list[PooledField] = field(default_factory=list)
    user_floats: list[str] = field(default_factory=list)
    item_floats: list[str] = field(default_factory=list)

    @classmethod
    def from_dataset(cls, dataset, exclude: Iterable[str] = ()) -> "FeatureSpec":
        """Read the dataset's user and item fields.

        Args:
            dataset: a RecBole dataset.
            exclude: fields never used as inputs (e.g. the category label field).
        """
        exclude = set(exclude)
        uid, iid = dataset.uid_field, dataset.iid_field
        spec = cls(n_items=dataset.item_num)
        spec.user_fields.append(PooledField(uid, dataset.user_num, "user", False))
        for name, source, side in ((dataset.user_feat, FeatureSource.USER, "user"),
                                   (dataset.item_feat, FeatureSource.ITEM, "item")):
            if name is None:
                continue
            for f in name.columns:
                if f in (uid, iid) or f in exclude or dataset.field2source.get(f) != source:
                    continue
                ftype = dataset.field2type[f]
                if ftype in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
                    pooled = PooledField(f, dataset.num(f), side, ftype == FeatureType.TOKEN_SEQ)
                    (spec.user_fields if side == "user" else spec.item_fields).append(pooled)
                elif ftype == FeatureType.FLOAT:
                    (spec.user_floats if side == "user" else spec.item_floats).append(f)
        return spec
