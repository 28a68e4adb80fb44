"""Plain PyTorch tables (``embedding_backend: nn``): the baseline the fused TorchRec tables are measured against.

``nn.Embedding`` / ``nn.EmbeddingBag`` with sparse gradients, each updated inside ``backward()`` by
a PyTorch optimizer that accepts sparse gradients (``torch.optim.SGD``, ``torch.optim.Adagrad``),
so the model code and the training loop are the same as with the fused tables. Same inputs and
outputs as the TorchRec collections (KJT in; ``Dict[str, JaggedTensor]`` / ``KeyedTensor`` out).
One process only.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Type

import torch
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec import EmbeddingBagConfig, EmbeddingConfig, JaggedTensor, KeyedJaggedTensor, KeyedTensor

from recbole_mtl.errors import ConfigError

#: ``embedding_optimizer`` names -> PyTorch optimizers that take sparse gradients.
PLAIN_OPTIMIZERS: Dict[str, Type[torch.optim.Optimizer]] = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}


def plain_optimizer(name: str) -> Type[torch.optim.Optimizer]:
    key = str(name).lower()
    if key not in PLAIN_OPTIMIZERS:
        raise ConfigError(f"embedding_backend 'nn' updates tables with PyTorch's sparse-gradient optimizers; "
                          f"embedding_optimizer '{name}' is not one: choose one of {sorted(PLAIN_OPTIMIZERS)} "
                          "(or embedding_backend: fused).")
    return PLAIN_OPTIMIZERS[key]


class PlainEmbeddingCollection(nn.Module):
    """Unpooled lookups (``EmbeddingCollection``'s contract) on ``nn.Embedding(sparse=True)``."""

    def __init__(self, tables: List[EmbeddingConfig], device: torch.device):
        super().__init__()
        self._configs = tables
        self.embeddings = nn.ModuleDict()
        self._feature_table: Dict[str, str] = {}
        for t in tables:
            self.embeddings[t.name] = nn.Embedding(t.num_embeddings, t.embedding_dim, sparse=True, device=device)
            self._feature_table.update({f: t.name for f in t.feature_names})

    def embedding_configs(self) -> List[EmbeddingConfig]:
        return self._configs

    def forward(self, kjt: KeyedJaggedTensor) -> Dict[str, JaggedTensor]:
        out = {}
        for name, jt in kjt.to_dict().items():
            table = self.embeddings[self._feature_table[name]]
            out[name] = JaggedTensor(values=table(jt.values()), lengths=jt.lengths())
        return out


class PlainEmbeddingBagCollection(nn.Module):
    """Sum-pooled lookups (``EmbeddingBagCollection``'s contract) on ``nn.EmbeddingBag(sparse=True)``."""

    def __init__(self, tables: List[EmbeddingBagConfig], device: torch.device):
        super().__init__()
        self._configs = tables
        self.embedding_bags = nn.ModuleDict()
        self._feature_table: Dict[str, str] = {}
        for t in tables:
            self.embedding_bags[t.name] = nn.EmbeddingBag(t.num_embeddings, t.embedding_dim, mode="sum",
                                                          sparse=True, device=device)
            self._feature_table.update({f: t.name for f in t.feature_names})

    def embedding_bag_configs(self) -> List[EmbeddingBagConfig]:
        return self._configs

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedTensor:
        keys, pooled = [], []
        for name, jt in kjt.to_dict().items():
            bag = self.embedding_bags[self._feature_table[name]]
            offsets = torch.cat([jt.lengths().new_zeros(1), jt.lengths().cumsum(0)[:-1]])
            keys.append(name)
            pooled.append(bag(jt.values(), offsets))  # [B, D]; empty bags give zeros, as FBGEMM's
        return KeyedTensor.from_tensor_list(keys, pooled)


def plain_collections(item_tables: List[EmbeddingConfig], feature_tables: List[EmbeddingBagConfig],
                      optimizer: str, optimizer_kwargs: dict, device: torch.device):
    """The two collections with their optimizer attached to every table (stepped inside backward)."""
    optimizer_type = plain_optimizer(optimizer)
    kwargs = {k: v for k, v in optimizer_kwargs.items() if k in ("lr", "eps") and
              (k != "eps" or optimizer_type is torch.optim.Adagrad)}
    items = PlainEmbeddingCollection(item_tables, device)
    features = PlainEmbeddingBagCollection(feature_tables, device) if feature_tables else None
    for module in (items, features):
        if module is not None:
            _apply_optimizer_in_backward(optimizer_type, module.parameters(), kwargs)
    return items, features


def optimizer_state(module: Optional[nn.Module]) -> dict:
    """``{table: {state name: tensor}}`` of the in-backward optimizers of ``module``'s tables."""
    if module is None:
        return {}
    state = {}
    for name, p in module.named_parameters():
        for opt in getattr(p, "_in_backward_optimizers", []):
            state[name] = {k: v.detach().clone() for k, v in opt.state.get(p, {}).items()}
    return state


def load_optimizer_state(module: Optional[nn.Module], state: Optional[dict]) -> None:
    if module is None or not state:
        return
    for name, p in module.named_parameters():
        for opt in getattr(p, "_in_backward_optimizers", []):
            if name in state:
                opt.state[p] = {k: v.clone() for k, v in state[name].items()}
