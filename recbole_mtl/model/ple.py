"""``PLE``: progressive layered extraction (Tang et al., RecSys 2020) between the encoder and the heads.

Same sparse arch, encoder, heads, losses and evaluation as ``MTLRec``; only the mixture differs:
``num_levels`` CGC layers of shared and task-specific experts with per-task gates
(:class:`recbole_mtl.model.mixtures.ProgressiveLayeredExtraction`). Keys:
``properties/model/MTLRec.yaml`` (shared by the multi-task models) and ``properties/model/PLE.yaml``.
"""

from torch import nn

from recbole_mtl.model.base import MultiTaskRecommender
from recbole_mtl.model.mixtures import ProgressiveLayeredExtraction

__all__ = ["PLE"]


class PLE(MultiTaskRecommender):
    """Progressive-layered-extraction multi-task recommender (see :class:`MultiTaskRecommender`)."""

    def build_mixture(self, config, in_dim: int, tasks: list[str], dropout: float) -> nn.Module:
        return ProgressiveLayeredExtraction(
            in_dim, list(config["expert_hidden"] or []), self.dim, tasks, config["num_levels"],
            config["num_shared_experts"], config["num_specific_experts"], dropout,
        )
