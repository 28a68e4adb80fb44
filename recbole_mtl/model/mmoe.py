"""``MMoE``: multi-gate mixture of experts (Ma et al., KDD 2018) between the encoder and the heads.

Same sparse arch, encoder, heads, losses and evaluation as ``MTLRec``; only the mixture differs:
``num_experts`` shared expert MLPs and one softmax gate per user-side task
(:class:`recbole_mtl.model.mixtures.MultiGateMixture`). Keys: ``properties/model/MTLRec.yaml``
(shared by the multi-task models) and ``properties/model/MMoE.yaml``.
"""

from torch import nn

from recbole_mtl.model.base import MultiTaskRecommender
from recbole_mtl.model.mixtures import MultiGateMixture

__all__ = ["MMoE"]


class MMoE(MultiTaskRecommender):
    """Multi-gate mixture-of-experts multi-task recommender (see :class:`MultiTaskRecommender`)."""

    def build_mixture(self, config, in_dim: int, tasks: list[str], dropout: float) -> nn.Module:
        return MultiGateMixture(in_dim, list(config["expert_hidden"] or []), self.dim, tasks,
                                config["num_experts"], dropout)
