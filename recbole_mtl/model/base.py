"""``MultiTaskRecommender``: sparse arch -> sequence encoder -> mixture -> task heads.

Shapes: B = batch, L = ``MAX_ITEM_LIST_LENGTH``, D = ``embedding_size``, C = categories.

Data flow of one training step::

    Interaction --build_kjt--> item KJT (sequence, target, candidates, category items)
                               feature KJT (user fields, target-item attributes, category-item attributes)
      --SparseArch (fused TorchRec/FBGEMM tables)--> item-id embeddings, pooled feature embeddings
      sequence [B, L, D] --encoder--> state [B, D]
      [state, user features] --mixture--> {sequence: [B, D], interest: [B, D]}
      [item id, item attributes] --item tower--> item representation [B, D] / [C_items, D]
      heads -> per-task losses, each times its task weight (RecBole logs each)
      balancer (``loss_balance``, applied by the trainer) -> total loss

The mixture hands each user-side task its own representation (the same tensor for every task in
the shared bottom, a gated mix of experts in MMoE and PLE); the category task reads the item tower.
Subclasses choose the mixture (:meth:`build_mixture`); everything else is shared.
"""

from __future__ import annotations

from logging import getLogger
from typing import Iterator, Optional

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_mtl.balancing import build_balancer
from recbole_mtl.data.dataset import INTEREST_LABEL_FIELD, TASK_NAMES, MultiTaskDataset
from recbole_mtl.embedding import FeatureSpec, build_kjt, build_sparse_arch, sharding_options
from recbole_mtl.embedding.features import CATEGORY_SUFFIX
from recbole_mtl.embedding.fused import embedding_optimizer_name
from recbole_mtl.errors import ConfigError
from recbole_mtl.model.encoders import build_encoder
from recbole_mtl.model.mixtures import SharedBottom
from recbole_mtl.tasks import CategoryHead, CategoryTask, InterestHead, InterestTask, SequenceHead, SequenceTask
from recbole_mtl.tasks.common import MLP
from recbole_mtl.text.embed import feature_folder
from recbole_mtl.text.features import load_item_vectors
from recbole_mtl.text.fusion import TextFusion

USER_TASKS = ("sequence", "interest")


class MultiTaskRecommender(SequentialRecommender):
    """Base of the plugin's multi-task models (registered subclasses: ``MTLRec``, ``MMoE``, ``PLE``)."""

    type = ModelType.SEQUENTIAL
    input_type = InputType.POINTWISE
    dataset_class = MultiTaskDataset
    #: The YAML holding the keys common to the multi-task models, layered below each model's own.
    properties_base = "MTLRec"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.logger = getLogger()
        self.dim = int(config["embedding_size"])
        self.tasks = self._resolve_tasks(config, dataset)
        self.task_weights = self._resolve_weights(config)
        # learned balancing state (log-variances, GradNorm/DWA weights) lives here to travel in checkpoints
        self.balancer = build_balancer(config, self.tasks, [self.task_weights[t] for t in self.tasks])
        self.interest_label_field = INTEREST_LABEL_FIELD
        dropout = float(config["dropout"] or 0.0)
        category_field = dataset.task_fields.category_field

        # Sparse arch: tables from the dataset's fields; the category labels are never an input.
        self.spec = FeatureSpec.from_dataset(dataset, exclude=[category_field] if category_field else [])
        self.sparse = build_sparse_arch(
            self.spec, self.dim, embedding_optimizer_name(config, config["device"]),
            float(config["embedding_learning_rate"] or config["learning_rate"]), config["device"],
            sharding=sharding_options(config), backend=str(config["embedding_backend"] or "fused").lower(),
        )
        self.text = self._build_text_fusion(config, dataset)
        self.encoder = build_encoder(config, self.dim, self.max_seq_length)
        n_user_in = self.dim * (1 + len(self.spec.user_fields)) + len(self.spec.user_floats)
        n_item_in = self.dim * (1 + len(self.spec.item_fields)) + len(self.spec.item_floats)
        user_tasks = [t for t in USER_TASKS if t in self.tasks]
        self.mixture = self.build_mixture(config, n_user_in, user_tasks, dropout)
        self.item_tower = MLP(n_item_in, list(config["tower_hidden"] or []), self.dim, dropout)

        self.sequence_task = SequenceTask(config, self.n_items) if "sequence" in self.tasks else None
        self.sequence_head = SequenceHead(self.dim) if "sequence" in self.tasks else None
        self.interest_task = InterestTask(config) if "interest" in self.tasks else None
        self.interest_head = (InterestHead(self.dim, list(config["tower_hidden"] or []), dropout)
                              if "interest" in self.tasks else None)
        self.category_task = self.category_head = None
        if "category" in self.tasks:
            self._init_category(config, dataset, dropout)
        self._item_columns = self._item_attribute_columns(dataset)
        self.apply(self._init_dense)

    # -- construction ----------------------------------------------------------------------
    def build_mixture(self, config, in_dim: int, tasks: list[str], dropout: float) -> nn.Module:
        """The module sharing the user representation among ``tasks`` (shared bottom here)."""
        return SharedBottom(in_dim, list(config["shared_hidden"] or []), self.dim, tasks, dropout)

    def _build_text_fusion(self, config, dataset) -> Optional[TextFusion]:
        """PLM item vectors fused with the item-id embedding, when ``text_features`` is on."""
        if not config["text_features"]:
            return None
        category_field = dataset.task_fields.category_field
        vectors = load_item_vectors(
            dataset, feature_folder(config), config["dataset"], plm=config["plm"], text_fields=config["text_fields"],
            forbidden_fields=[category_field] if "category" in self.tasks and category_field else [],
            fix_args=[f"--{key}={config.external_config_dict[key]}" for key in ("data_path", "text_feature_dir")
                      if getattr(config, "external_config_dict", {}).get(key)],
        )
        return TextFusion(vectors.to(self.device), self.dim, str(config["text_adapter"] or "linear"),
                          str(config["text_fusion"] or "add"))

    def _item_emb(self, ids: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        """The item representation on both sides of the model: id embedding (+ fused text)."""
        return id_emb if self.text is None else self.text(ids, id_emb)

    @staticmethod
    def _resolve_tasks(config, dataset) -> list[str]:
        wanted = config["tasks"] or list(TASK_NAMES)
        if isinstance(wanted, str):
            wanted = [wanted]
        tasks = dataset.available_tasks(wanted)
        if not tasks:
            raise ConfigError(f"no task left to train: `tasks` is {wanted} and none can run on this dataset.")
        return [t for t in TASK_NAMES if t in tasks]

    def _resolve_weights(self, config) -> dict[str, float]:
        weights = dict(config["task_weights"] or {})
        unknown = set(weights) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(f"task_weights names unknown tasks {sorted(unknown)}; tasks are {list(TASK_NAMES)}.")
        return {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def _init_category(self, config, dataset: MultiTaskDataset, dropout: float) -> None:
        labels = dataset.category_labels()
        self.category_task = CategoryTask(config)
        self.category_head = CategoryHead(self.dim, labels.shape[1], list(config["tower_hidden"] or []), dropout)
        self.category_batch_size = int(config["category_batch_size"] or 256)
        self.register_buffer("category_labels", labels, persistent=False)
        for phase, ids in dataset.category_split().items():
            self.register_buffer(f"category_{phase}_items", ids, persistent=False)
        self.category_names = dataset.category_names()

    def _item_attribute_columns(self, dataset) -> dict[str, torch.Tensor]:
        """Every item's attribute ids/floats, to describe items that are not in the batch."""
        if dataset.item_feat is None:
            return {}
        names = [f.field for f in self.spec.item_fields] + self.spec.item_floats
        return {name: dataset.item_feat[name].to(self.device) for name in names}

    @staticmethod
    def _init_dense(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters for the dense optimizer; embedding tables update inside ``backward``."""
        return (p for n, p in self.named_parameters() if not n.startswith(("sparse.", "balancer.")))

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last dense layers more than one task reads (GradNorm's ``W``).

        The mixture's last shared layer (sequence and interest) and the item tower's output layer
        (interest and category); the embedding tables are shared too but update inside the fused
        backward, which never exposes their gradients.
        """
        return list(self.mixture.last_shared_parameters()) + [self.item_tower[-1].weight]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, with a clear error when the balancing state does not fit."""
        saved = sorted(k for k in state_dict if k.startswith("balancer."))
        expected = sorted("balancer." + k for k in self.balancer.state_dict())
        if strict and saved != expected:
            raise ConfigError(
                f"the checkpoint's balancing state {saved or '(none)'} does not fit loss_balance: "
                f"{self.balancer.name}, which keeps {expected or '(none)'}. Resume with the loss_balance the "
                "checkpoint was trained with (its config is stored in the checkpoint)."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def other_parameter(self) -> dict:
        return {"sparse_optimizer": self.sparse.sparse_optimizer_state()}

    def load_other_parameter(self, para: Optional[dict]) -> None:
        if para:
            self.sparse.load_sparse_optimizer_state(para.get("sparse_optimizer"))

    # -- lookups -----------------------------------------------------------------------------
    def _lookup(self, interaction, candidates: Optional[torch.Tensor], category_items: Optional[torch.Tensor]):
        B = len(interaction)
        C = 0 if category_items is None else category_items.numel()
        stride = max(B, C, 1)
        none = interaction[self.POS_ITEM_ID].new_zeros(0)
        # fused collections expect every feature of their tables, so unused ones are empty
        singles = {"candidate_item": none if candidates is None else candidates,
                   "category_item": none if category_items is None else category_items}
        item_kjt = build_kjt({"item_id_list": interaction[self.ITEM_SEQ], "target_item": interaction[self.POS_ITEM_ID]},
                             stride, singles)
        columns = {f.field: interaction[f.field] for f in self.spec.user_fields + self.spec.item_fields}
        columns.update({f.field + CATEGORY_SUFFIX: self._item_columns[f.field][none if category_items is None
                                                                             else category_items]
                        for f in self.spec.item_fields})
        feature_kjt = build_kjt(columns, stride) if columns else None
        return self.sparse(item_kjt, feature_kjt), B, C

    def _floats(self, source, names: list[str]) -> list[torch.Tensor]:
        return [source[n].float().view(-1, 1) for n in names]

    def _item_representation(self, id_emb: torch.Tensor, pooled, n: int, suffix: str,
                             float_source) -> torch.Tensor:
        parts = [id_emb] + [pooled[f.field + suffix][:n] for f in self.spec.item_fields]
        parts += self._floats(float_source, self.spec.item_floats)
        return self.item_tower(torch.cat(parts, dim=-1))

    def _user_representations(self, interaction, items, pooled, B: int) -> dict[str, torch.Tensor]:
        ids = interaction[self.ITEM_SEQ]
        # the KJT's stride may exceed B (more category items than users): keep the B user rows
        seq = items["item_id_list"].to_padded_dense(desired_length=ids.shape[1])[:B]  # [B, L, D]
        seq = self._item_emb(ids, seq)
        state = self.encoder(seq, interaction[self.ITEM_SEQ_LEN])  # [B, D]
        parts = [state] + [pooled[f.field][:B] for f in self.spec.user_fields]
        parts += self._floats(interaction, self.spec.user_floats)
        return self.mixture(torch.cat(parts, dim=-1), state)

    def _sample_category_items(self) -> torch.Tensor:
        train = self.category_train_items
        return train[torch.randint(len(train), (min(self.category_batch_size, len(train)),), device=train.device)]

    # -- RecBole model contract --------------------------------------------------------------
    def forward(self, interaction):
        return self.predict_tasks(interaction)

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        """Per-task losses, each multiplied by its task weight, in ``self.tasks`` order."""
        candidates = self.sequence_task.candidates(self.device) if self.sequence_task else None
        category_items = self._sample_category_items() if self.category_task else None
        (items, pooled), B, C = self._lookup(interaction, candidates, category_items)
        reps = self._user_representations(interaction, items, pooled, B) if self.mixture.tasks else {}
        targets = interaction[self.POS_ITEM_ID]
        target_emb = self._item_emb(targets, items["target_item"].values())  # [B, D]
        losses = []
        for task in self.tasks:
            if task == "sequence":
                query = self.sequence_head(reps["sequence"])
                candidate_emb = self._item_emb(candidates, items["candidate_item"].values())
                loss = self.sequence_task.loss(query, target_emb, candidate_emb, targets, candidates)
            elif task == "interest":
                item_rep = self._item_representation(target_emb, pooled, B, "", interaction)
                logits = self.interest_head(reps["interest"], item_rep)
                loss = self.interest_task.loss(logits, interaction[INTEREST_LABEL_FIELD])
            else:
                float_source = {n: self._item_columns[n][category_items] for n in self.spec.item_floats}
                rep = self._item_representation(self._item_emb(category_items, items["category_item"].values()),
                                                pooled, C, CATEGORY_SUFFIX, float_source)
                loss = self.category_task.loss(self.category_head(rep), self.category_labels[category_items])
            losses.append(self.task_weights[task] * loss)
        return tuple(losses)

    def predict_tasks(self, interaction) -> dict[str, torch.Tensor]:
        """Scores of the user-side tasks for evaluation.

        Returns:
            ``sequence``: ``[B, n_items]`` scores of every item; ``interest``: ``[B]``
            probability that the user likes ``interaction[ITEM_ID]``.
        """
        candidates = torch.arange(self.n_items, device=self.device) if "sequence" in self.tasks else None
        (items, pooled), B, _ = self._lookup(interaction, candidates, None)
        reps = self._user_representations(interaction, items, pooled, B)
        out = {}
        if "sequence" in self.tasks:
            candidate_emb = self._item_emb(candidates, items["candidate_item"].values())
            out["sequence"] = self.sequence_head(reps["sequence"]) @ candidate_emb.t()
        if "interest" in self.tasks:
            target_emb = self._item_emb(interaction[self.POS_ITEM_ID], items["target_item"].values())
            item_rep = self._item_representation(target_emb, pooled, B, "", interaction)
            out["interest"] = torch.sigmoid(self.interest_head(reps["interest"], item_rep))
        return out

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.predict_tasks(interaction)["sequence"]

    def predict(self, interaction) -> torch.Tensor:
        """Score of ``interaction[ITEM_ID]`` as the next item (RecBole's sampled evaluation)."""
        (items, pooled), B, _ = self._lookup(interaction, None, None)
        reps = self._user_representations(interaction, items, pooled, B)
        query = self.sequence_head(reps["sequence"]) if self.sequence_head is not None else reps["interest"]
        return (query * self._item_emb(interaction[self.POS_ITEM_ID], items["target_item"].values())).sum(-1)

    def category_predict(self, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Category probabilities ``[N, C]`` and labels of the held-out items of ``phase``."""
        item_ids = getattr(self, f"category_{phase}_items")
        probs = []
        for chunk in item_ids.split(4096):
            empty = {self.ITEM_SEQ: chunk.new_zeros(1, 1), self.POS_ITEM_ID: chunk.new_zeros(1)}
            (items, pooled), _, C = self._lookup(_Columns(empty), None, chunk)
            float_source = {n: self._item_columns[n][chunk] for n in self.spec.item_floats}
            rep = self._item_representation(self._item_emb(chunk, items["category_item"].values()), pooled, C,
                                            CATEGORY_SUFFIX, float_source)
            probs.append(torch.sigmoid(self.category_head(rep)))
        return torch.cat(probs), self.category_labels[item_ids]


class _Columns(dict):
    """A dict that behaves like a RecBole Interaction of one empty row (for item-only lookups)."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key):
        if key in self.keys():
            return dict.__getitem__(self, key)
        return torch.zeros(1, dtype=torch.long, device=next(iter(self.values())).device)
