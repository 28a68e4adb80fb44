"""``SparseArch``: the item-id table (unpooled) and the pooled feature tables, as in TorchRec's DLRM.

Shapes: B = batch, L = sequence length, D = ``embedding_size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagConfig, EmbeddingConfig, JaggedTensor, KeyedJaggedTensor, KeyedTensor
from torchrec.modules.embedding_configs import PoolingType

from recbole_mtl.embedding.features import CATEGORY_SUFFIX, FeatureSpec
from recbole_mtl.embedding.fused import fused_embedding_bag_collection, fused_embedding_collection, sparse_optimizer

if TYPE_CHECKING:
    from recbole_mtl.embedding.sharding import ShardingOptions

#: Features looked up through the item-id table (it is shared by inputs and output scores).
ITEM_FEATURES = ["item_id_list", "target_item", "candidate_item", "category_item"]


class SparseArch(nn.Module):
    """Looks up every sparse feature in one call per collection.

    Args:
        item_collection: unpooled collection with table ``item_id`` serving ``ITEM_FEATURES``.
        feature_collection: pooled collection of user/item attribute tables, or ``None``.
    """

    def __init__(self, item_collection: nn.Module, feature_collection: Optional[nn.Module]):
        super().__init__()
        self.item_collection = item_collection
        self.feature_collection = feature_collection

    def forward(self, item_kjt: KeyedJaggedTensor, feature_kjt: Optional[KeyedJaggedTensor]
                ) -> Tuple[Dict[str, JaggedTensor], Optional[KeyedTensor]]:
        items = self.item_collection(item_kjt)
        pooled = None
        if self.feature_collection is not None and feature_kjt is not None:
            pooled = self.feature_collection(feature_kjt)
        return items, pooled

    def sparse_optimizer_state(self) -> dict:
        """State of the fused optimizers (momenta), for checkpoints."""
        state = {"items": self.item_collection.fused_optimizer().state_dict()}
        if self.feature_collection is not None:
            state["features"] = self.feature_collection.fused_optimizer().state_dict()
        return state

    def load_sparse_optimizer_state(self, state: Optional[dict]) -> None:
        if not state:
            return
        self.item_collection.fused_optimizer().load_state_dict(state["items"])
        if self.feature_collection is not None and "features" in state:
            self.feature_collection.fused_optimizer().load_state_dict(state["features"])


def build_sparse_arch(spec: FeatureSpec, dim: int, optimizer: str, learning_rate: float,
                      device: torch.device, sharding: Optional["ShardingOptions"] = None) -> nn.Module:
    """Fused TorchRec collections for ``spec``; every table updates sparsely inside ``backward``.

    Args:
        spec: which fields become tables.
        dim: embedding dimension D of every table.
        optimizer: fused optimizer name (``adam``, ``adagrad``, ``rowwise_adagrad``, ``sgd``).
        learning_rate: its learning rate.
        device: where the tables live (FBGEMM's CPU or CUDA kernels).
        sharding: when training in several processes, the user's per-table constraints: the
            tables are then sharded over the default process group (same forward, same initial
            values as in one process).
    """
    optimizer_type = sparse_optimizer(optimizer, device)
    kwargs: dict = {"lr": learning_rate}
    if optimizer_type is not torch.optim.SGD:
        kwargs["eps"] = 1e-8
    item_table = EmbeddingConfig(name="item_id", embedding_dim=dim, num_embeddings=spec.n_items,
                                 feature_names=list(ITEM_FEATURES))
    items = fused_embedding_collection([item_table], optimizer_type, kwargs, device)
    tables = []
    for f in spec.user_fields + spec.item_fields:
        features = [f.field] + ([f.field + CATEGORY_SUFFIX] if f.side == "item" else [])
        tables.append(EmbeddingBagConfig(name=f.field, embedding_dim=dim, num_embeddings=f.num_embeddings,
                                         feature_names=features, pooling=PoolingType.MEAN))
    features = fused_embedding_bag_collection(tables, optimizer_type, kwargs, device) if tables else None
    arch = SparseArch(items, features)
    if sharding is None:
        return arch
    from recbole_mtl.distributed import local_world_size
    from recbole_mtl.embedding.sharding import shard_sparse_arch

    return shard_sparse_arch(arch, optimizer_type, kwargs, sharding, device, dist.group.WORLD, local_world_size())


def sharding_options(config) -> Optional["ShardingOptions"]:
    """The per-table sharding constraints when ``config`` describes a multi-process run, else None."""
    if config["single_spec"] is None or config["single_spec"]:
        return None
    from recbole_mtl.embedding.sharding import ShardingOptions

    return ShardingOptions.from_config(config)
