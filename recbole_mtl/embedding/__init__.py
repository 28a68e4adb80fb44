"""Sparse features on TorchRec: tables from dataset fields, Interaction -> KJT, fused kernels.

Nothing outside this package knows how the tables are stored or updated.
"""

from recbole_mtl.embedding.features import FeatureSpec, PooledField
from recbole_mtl.embedding.kjt import build_kjt
from recbole_mtl.embedding.sparse_arch import SparseArch, build_sparse_arch, sharding_options

__all__ = ["FeatureSpec", "PooledField", "SparseArch", "build_kjt", "build_sparse_arch", "sharding_options"]
