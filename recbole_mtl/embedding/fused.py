"""Fused (optimizer-in-backward) TorchRec collections on FBGEMM kernels, on CPU and GPU.

TorchRec's ``FusedEmbeddingBagCollection`` runs on both devices. Its unpooled sibling
``FusedEmbeddingCollection`` asserts ``device in [cuda, meta]`` in torchrec 1.8.0 although the
FBGEMM CPU kernel serves unpooled lookups; :class:`CPUFusedEmbeddingCollection` is that class
built on CPU (same lookup module, forward, state_dict and fused optimizer). This is the one
TorchRec compatibility shim of the package.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any, Dict, List, Type

import torch
from torch import nn
from torchrec import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import get_embedding_names_by_table
from torchrec.modules.fused_embedding_modules import (
    FusedEmbeddingBagCollection,
    FusedEmbeddingCollection,
    _BatchedFusedEmbeddingLookups,
    convert_optimizer_type_and_kwargs,
)
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.keyed import CombinedOptimizer
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation

from recbole_mtl.errors import ConfigError

#: ``embedding_optimizer`` names -> optimizers FBGEMM fuses into its kernels. FBGEMM's CPU kernels
#: offer SGD and (row-wise) Adagrad only; Adam needs the CUDA kernels.
SPARSE_OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {
    "rowwise_adagrad": RowWiseAdagrad,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}


def sparse_optimizer(name: str, device: torch.device) -> Type[torch.optim.Optimizer]:
    """The fused optimizer class for ``embedding_optimizer`` on ``device`` (clear error if none)."""
    key = str(name).lower()
    if key not in SPARSE_OPTIMIZERS or (key == "adam" and device.type != "cuda"):
        choices = sorted(k for k in SPARSE_OPTIMIZERS if k != "adam" or device.type == "cuda")
        raise ConfigError(
            f"embedding_optimizer '{name}' cannot be fused into FBGEMM's {device.type.upper()} kernels; "
            f"choose one of {choices}."
        )
    return SPARSE_OPTIMIZERS[key]


#: RecBole ``learner`` -> the fused optimizer used when ``embedding_optimizer`` is ``~``.
LEARNER_TO_SPARSE = {"adagrad": "adagrad", "sgd": "sgd", "adam": "adam", "sparse_adam": "adam"}


def embedding_optimizer_name(config, device: torch.device) -> str:
    """``embedding_optimizer``, or when it is ``~`` the fused counterpart of RecBole's ``learner``.

    ``adam`` (and ``sparse_adam``) map to FBGEMM's Adam on CUDA and to row-wise Adagrad on CPU,
    whose kernels have no Adam; learners FBGEMM cannot fuse (``rmsprop``) map to row-wise Adagrad.
    """
    if config["embedding_optimizer"]:
        return str(config["embedding_optimizer"])
    name = LEARNER_TO_SPARSE.get(str(config["learner"] or "adam").lower(), "rowwise_adagrad")
    return "rowwise_adagrad" if name == "adam" and device.type != "cuda" else name


class CPUFusedEmbeddingCollection(FusedEmbeddingCollection):
    """``FusedEmbeddingCollection`` on CPU (FBGEMM TBE, ``PoolingMode.NONE``).

    Args:
        tables: one ``EmbeddingConfig`` per table (equal ``embedding_dim``).
        optimizer_type: a torch/torchrec optimizer class FBGEMM can fuse.
        optimizer_kwargs: e.g. ``{"lr": 1e-3}``.
    """

    def __init__(self, tables: List[EmbeddingConfig], optimizer_type: Type[torch.optim.Optimizer],
                 optimizer_kwargs: Dict[str, Any]) -> None:
        nn.Module.__init__(self)
        converted = convert_optimizer_type_and_kwargs(optimizer_type, optimizer_kwargs)
        if converted is None:
            raise ValueError(f"cannot fuse optimizer {optimizer_type} with {optimizer_kwargs}")
        emb_optim_type, emb_opt_kwargs = converted
        self._optimizer_type, self._optimizer_kwargs = optimizer_type, optimizer_kwargs
        self._embedding_configs = tables
        self._need_indices = False
        self._embedding_dim = tables[0].embedding_dim
        if any(t.embedding_dim != self._embedding_dim for t in tables):
            raise ValueError("all tables of an EmbeddingCollection need the same embedding_dim")
        self._key_to_tables: Dict[Any, List[EmbeddingConfig]] = defaultdict(list)
        seen, self._shared_features = set(), set()
        for table in tables:
            self._key_to_tables[table.data_type].append(table)
            for feature in table.feature_names:
                (self._shared_features if feature in seen else seen).add(feature)
        self._emb_modules: List[nn.Module] = []
        optims = []
        for data_type, group in self._key_to_tables.items():
            module = _BatchedFusedEmbeddingLookups(
                list(group), data_type=data_type, pooling=PoolingType.NONE, optimizer_type=emb_optim_type,
                optimizer_kwargs=emb_opt_kwargs, device=torch.device("cpu"),
                embedding_location=EmbeddingLocation.HOST,
            )
            self._emb_modules.append(module)
            optims.append(("", module.fused_optimizer()))
        self._optim = CombinedOptimizer(optims)
        self._embedding_names = list(itertools.chain(*get_embedding_names_by_table(self._embedding_configs)))
        self._embedding_names_by_table = get_embedding_names_by_table(self._embedding_configs)
        self.embeddings = nn.ModuleDict()
        for (_, group), module in zip(self._key_to_tables.items(), self._emb_modules):
            for config, weight in zip(group, module.split_embedding_weights()):
                self.embeddings[config.name] = nn.Module()
                self.embeddings[config.name].register_parameter("weight", nn.Parameter(weight))


def fused_embedding_collection(tables: List[EmbeddingConfig], optimizer_type, optimizer_kwargs,
                               device: torch.device) -> FusedEmbeddingCollection:
    """TorchRec's fused unpooled collection on ``device`` (CPU through the shim above)."""
    if device.type == "cpu":
        return CPUFusedEmbeddingCollection(tables, optimizer_type, optimizer_kwargs)
    return FusedEmbeddingCollection(tables, optimizer_type, optimizer_kwargs, device=device)


def fused_embedding_bag_collection(tables: List[EmbeddingBagConfig], optimizer_type, optimizer_kwargs,
                                   device: torch.device) -> FusedEmbeddingBagCollection:
    """TorchRec's ``FusedEmbeddingBagCollection`` (pooled) on ``device``."""
    return FusedEmbeddingBagCollection(tables, optimizer_type=optimizer_type,
                                       optimizer_kwargs=optimizer_kwargs, device=device)

