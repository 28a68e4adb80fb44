"""``SparseArch``: the item-id table (unpooled) and the pooled feature tables, as in TorchRec's DLRM.

Shapes: B = batch, L = sequence length, D = ``embedding_size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagConfig, EmbeddingConfig, JaggedTensor, KeyedJaggedTensor, KeyedTensor
from torchrec.distributed.types import LazyAwaitable
from torchrec.modules.embedding_configs import PoolingType

from recbole_mtl.embedding import plain
from recbole_mtl.embedding.features import FeatureSpec
from recbole_mtl.embedding.init import fill_rows
from recbole_mtl.errors import ConfigError
from recbole_mtl.embedding.fused import fused_embedding_bag_collection, fused_embedding_collection, sparse_optimizer

if TYPE_CHECKING:
    from recbole_mtl.embedding.sharding import ShardingOptions

#: The feature looked up through the item-id table: the distinct items of a step (inputs, targets,
#: candidates), in one bag, so each row is looked up once and serves inputs and output scores alike.
ITEM_FEATURES = ["item"]


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
            pooled = mean_pool(self.feature_collection(feature_kjt), feature_kjt)
        return items, pooled

    def sparse_optimizer_state(self) -> dict:
        """State of the tables' optimizers (momenta), for checkpoints."""
        state = {"items": _optimizer_state(self.item_collection)}
        if self.feature_collection is not None:
            state["features"] = _optimizer_state(self.feature_collection)
        return state

    def load_sparse_optimizer_state(self, state: Optional[dict]) -> None:
        if not state:
            return
        _load_optimizer_state(self.item_collection, state["items"])
        if self.feature_collection is not None and "features" in state:
            _load_optimizer_state(self.feature_collection, state["features"])


def mean_pool(summed: KeyedTensor, kjt: KeyedJaggedTensor) -> KeyedTensor:
    """Bag sums ``[B, sum of D]`` -> bag means (empty bags stay 0).

    The tables pool with SUM and the mean is taken here, for every sharding alike: TorchRec
    1.8's sharded pooled collection divides MEAN bags of its table-wise tables a second time
    when row-wise tables share the collection.
    """
    if isinstance(summed, LazyAwaitable):
        summed = summed.wait()
    keys = summed.keys()
    index = {k: i for i, k in enumerate(kjt.keys())}
    lengths = kjt.lengths().view(len(index), -1)[[index[k] for k in keys]]  # [F, B]
    dims = torch.tensor(summed.length_per_key(), device=lengths.device)
    divisor = lengths.clamp(min=1).t().to(summed.values().dtype).repeat_interleave(dims, dim=1)  # [B, sum D]
    return KeyedTensor(keys=keys, length_per_key=summed.length_per_key(), values=summed.values() / divisor)


def _optimizer_state(collection: nn.Module) -> dict:
    if hasattr(collection, "fused_optimizer"):
        return collection.fused_optimizer().state_dict()
    return plain.optimizer_state(collection)


def _load_optimizer_state(collection: nn.Module, state: dict) -> None:
    if hasattr(collection, "fused_optimizer"):
        collection.fused_optimizer().load_state_dict(state)
    else:
        plain.load_optimizer_state(collection, state)


#: ``embedding_backend`` values.
BACKENDS = ("fused", "nn")


def build_sparse_arch(spec: FeatureSpec, dim: int, optimizer: str, learning_rate: float,
                      device: torch.device, sharding: Optional["ShardingOptions"] = None,
                      backend: str = "fused", seed: int = 2020) -> nn.Module:
    """Fused TorchRec collections for ``spec``; every table updates sparsely inside ``backward``.

    Args:
        spec: which fields become tables.
        dim: embedding dimension D of every table.
        optimizer: fused optimizer name (``adam``, ``adagrad``, ``rowwise_adagrad``, ``sgd``).
        learning_rate: its learning rate.
        device: where the tables live (FBGEMM's CPU or CUDA kernels).
        sharding: when training in several processes, the user's per-table constraints: the
            tables are then born sharded over the default process group (each rank allocates and
            initialises only its shards; same forward, same initial values as in one process).
        backend: ``fused`` (TorchRec/FBGEMM) or ``nn`` (plain PyTorch tables, one process).
        seed: the run's seed; a row's initial value depends only on (seed, table, row)
            (:mod:`recbole_mtl.embedding.init`).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"embedding_backend must be one of {list(BACKENDS)}, got '{backend}'.")
    if backend == "nn" and sharding is not None:
        raise ConfigError("embedding_backend 'nn' runs in one process; several processes shard TorchRec's "
                          "fused tables (embedding_backend: fused).")
    item_table = EmbeddingConfig(name="item_id", embedding_dim=dim, num_embeddings=spec.n_items,
                                 feature_names=list(ITEM_FEATURES))
    tables = []
    for f in spec.user_fields + spec.item_fields:
        tables.append(EmbeddingBagConfig(name=f.field, embedding_dim=dim, num_embeddings=f.num_embeddings,
                                         feature_names=[f.field], pooling=PoolingType.SUM))  # mean: mean_pool
    if backend == "nn":
        with torch.random.fork_rng(devices=[]):  # tables draw from their own row-keyed streams
            arch = SparseArch(*plain.plain_collections([item_table], tables, optimizer,
                                                       {"lr": learning_rate, "eps": 1e-8}, device))
        init_tables(arch, seed)
        return arch
    optimizer_type = sparse_optimizer(optimizer, device)
    kwargs: dict = {"lr": learning_rate}
    if optimizer_type is not torch.optim.SGD:
        kwargs["eps"] = 1e-8
    if sharding is not None:
        from recbole_mtl.distributed import local_world_size
        from recbole_mtl.embedding.sharding import shard_sparse_arch

        return shard_sparse_arch(SparseArch, [item_table], tables, optimizer_type, kwargs, sharding, device, dist.group.WORLD,
                                 local_world_size(), seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        items = fused_embedding_collection([item_table], optimizer_type, kwargs, device)
        features = fused_embedding_bag_collection(tables, optimizer_type, kwargs, device) if tables else None
    arch = SparseArch(items, features)
    init_tables(arch, seed)
    return arch


def init_tables(arch: nn.Module, seed: int) -> None:
    """Give every table of a single-process ``arch`` its row-keyed initial values."""
    for key, weight in arch.state_dict().items():
        if key.endswith(".weight") and weight.dim() == 2:
            fill_rows(weight, table_name(key), weight.shape[0], seed)


def table_name(key: str) -> str:
    """``item_collection.embeddings.item_id.weight`` -> ``item_id``."""
    return key.split(".")[-2]


def sharding_options(config) -> Optional["ShardingOptions"]:
    """The per-table sharding constraints when this process is one rank of several, else None."""
    from recbole_mtl.distributed import context

    if not context().is_distributed:
        return None
    from recbole_mtl.embedding.sharding import ShardingOptions

    return ShardingOptions.from_config(config)
