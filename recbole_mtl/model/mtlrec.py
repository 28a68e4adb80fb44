"""``MTLRec``: the shared-bottom multi-task model of the source article.

input layer -> shared embedding layer (TorchRec tables) -> sequence encoder + shared bottom ->
one mapping layer (head) per task -> per-task losses -> weighted total loss, for three tasks:
next item (``sequence``), user interest (``interest``) and item categories (``category``).
Defaults and every key: ``properties/model/MTLRec.yaml``.
"""

from recbole_mtl.model.base import MultiTaskRecommender

__all__ = ["MTLRec"]


class MTLRec(MultiTaskRecommender):
    """Shared-bottom multi-task recommender (see :class:`MultiTaskRecommender`)."""
