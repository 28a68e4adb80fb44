"""``MultiTaskRecommender``: a sequence transducer with one head per task.

Shapes: B = batch, L = ``MAX_ITEM_LIST_LENGTH``, D = ``embedding_size``, N = counted positions,
U = distinct items of a step.

One training step (``train_positions: all``, batches of user windows, :mod:`recbole_mtl.data.windows`)::

    window batch --distinct items--> item KJT (one bag) + feature KJT (user fields, item attributes)
      --SparseArch (TorchRec tables on FBGEMM kernels)--> item-id embeddings [U, D], pooled features
      inputs [B, L, D] --causal encoder--> a state at every position [B, L, D]
      states at the N counted positions + user features --mixture--> {user task: [N, D]}
      [item-id embedding (+ text), item attributes] --item tower--> item representations
      for each task of the registry: head -> loss (the mean over its positions) x task weight
      balancer (``loss_balance``, applied by the trainer) -> total loss -> one backward

Every position predicts the interaction after it: the next item (sequence), whether the user
likes it (interest, target-aware: the head also reads that item's representation) and the
categories of the item at the position (category, training items only). With
``train_positions: last`` the batches are RecBole's per-prefix rows and only the last position of
each counts (the category task then draws ``category_batch_size`` training items per step).
Evaluation reads the state at the last position of each RecBole validation/test history, so
every figure is comparable with RecBole's baselines.

Subclasses choose the mixture (:meth:`build_mixture`); everything else is shared.
"""

from __future__ import annotations

import copy
from logging import getLogger
from typing import Iterator, Optional

import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_mtl.balancing import build_balancer
from recbole_mtl.data.dataset import MultiTaskDataset
from recbole_mtl.data.feature_files import feature_folder
from recbole_mtl.data.labels import label_sources
from recbole_mtl.data.windows import NEXT_PREFIX, POSITION_MASK
from recbole_mtl.embedding import FeatureSpec, build_kjt, build_sparse_arch, sharding_options
from recbole_mtl.embedding.fused import embedding_optimizer_name
from recbole_mtl.errors import ConfigError
from recbole_mtl.model.encoders import build_encoder
from recbole_mtl.model.mixtures import SharedBottom
from recbole_mtl.tasks import REGISTRY, TASK_NAMES, resolve_tasks
from recbole_mtl.tasks.common import MLP
from recbole_mtl.tasks.interest import INTEREST_LABEL
from recbole_mtl.text.features import load_item_vectors
from recbole_mtl.text.fusion import TextFusion
from recbole_mtl.text.users import load_user_vectors

TRAIN_POSITIONS = ("all", "last")


class _Batch:
    """What the tasks read of one step (:class:`recbole_mtl.tasks.TaskBatch`), built by the model."""

    def __init__(self, model: "MultiTaskRecommender", interaction, training: bool, all_positions: bool):
        self.model, self.interaction = model, interaction
        self.training, self.all_positions = training, all_positions
        seq = interaction[model.ITEM_SEQ]
        if all_positions:
            self.rows, self.cols = interaction[POSITION_MASK].nonzero(as_tuple=True)
            self.next_item = interaction[NEXT_PREFIX + model.ITEM_ID][self.rows, self.cols]
        else:
            self.rows = torch.arange(seq.shape[0], device=seq.device)
            self.cols = (interaction[model.ITEM_SEQ_LEN] - 1).clamp(min=0)
            self.next_item = interaction[model.POS_ITEM_ID]
        self.item = seq[self.rows, self.cols]
        self.reps: dict[str, torch.Tensor] = {}
        self._ids = self._emb = self._rep_ids = self._rep = self._target_rep = None

    def candidates(self, inverse: torch.Tensor, items: torch.Tensor) -> "_Batch":
        """This batch's states repeated for candidate rows: row ``i`` scores ``items[i]`` from the
        state of history ``inverse[i]`` (one encoder pass per history in sampled evaluation)."""
        view = copy.copy(self)
        view.reps = {name: rep[inverse] for name, rep in self.reps.items()}
        view.rows, view.cols, view.item = self.rows[inverse], self.cols[inverse], self.item[inverse]
        view.next_item = items
        return view

    def label(self, column: str) -> torch.Tensor:
        if self.all_positions:
            return self.interaction[NEXT_PREFIX + column][self.rows, self.cols]
        return self.interaction[column]

    def user(self, task: str) -> torch.Tensor:
        return self.reps[task]

    @staticmethod
    def _index(sorted_ids: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sorted_ids, ids)

    def item_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        return self._emb[self._index(self._ids, ids)]

    def item_representation(self, ids: torch.Tensor) -> torch.Tensor:
        return self._rep[self._index(self._rep_ids, ids)]

    def target_representation(self, ids: torch.Tensor) -> torch.Tensor:
        if self._target_rep is None:
            self._target_rep = self.model._with_item_labels(self, self._rep_ids, self._rep)
        return self._target_rep[self._index(self._rep_ids, ids)]


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
        dropout = float(config["dropout"] or 0.0)
        self.train_positions = str(config["train_positions"] or "all").lower()
        self.sampled_scoring = str(config["sampled_scoring"] or "one_pass").lower()
        if self.sampled_scoring not in ("one_pass", "repeated"):
            raise ConfigError(f"sampled_scoring must be one_pass or repeated; got '{self.sampled_scoring}'.")
        if self.train_positions not in TRAIN_POSITIONS:
            raise ConfigError(f"train_positions must be one of {list(TRAIN_POSITIONS)}; got '{self.train_positions}'.")
        self.tasks = resolve_tasks(config, dataset)
        self.task_weights = self._resolve_weights(config)
        self.heads = nn.ModuleDict({name: REGISTRY[name](config, dataset, self.dim, dropout) for name in self.tasks})
        # learned balancing state (log-variances, GradNorm/DWA weights) lives here to travel in checkpoints
        self.balancer = build_balancer(config, self.tasks, [self.task_weights[t] for t in self.tasks])

        # Sparse arch: tables from the dataset's fields; item label fields are never an input.
        label_fields = [config[s.config_key] for s in label_sources() if s.file == "item" and config[s.config_key]]
        self.spec = FeatureSpec.from_dataset(dataset, exclude=label_fields)
        self.sparse = build_sparse_arch(
            self.spec, self.dim, embedding_optimizer_name(config, config["device"]),
            float(config["embedding_learning_rate"] or config["learning_rate"]), config["device"],
            sharding=sharding_options(config), backend=str(config["embedding_backend"] or "fused").lower(),
            seed=int(config["seed"]),
        )
        self.user_id_input = True if config["user_id_input"] is None else bool(config["user_id_input"])
        self.text = self._build_text_fusion(config, dataset)
        self.user_text = self._build_user_text_fusion(config, dataset)
        self.encoder = build_encoder(config, self.dim, self.max_seq_length)
        self.action_field = self._action_field(config, dataset)
        #: embedding of each history interaction's outcome (0: padding, 1: not liked, 2: liked)
        self.action_embedding = nn.Embedding(3, self.dim) if self.action_field else None
        self.time_field = self._time_field(config, dataset)
        n_user_in = (self.dim * (int(self.user_id_input) + len(self.spec.user_fields)) + len(self.spec.user_floats))
        n_item_in = self.dim * (1 + len(self.spec.item_fields)) + len(self.spec.item_floats)
        self.user_tasks = [t for t in self.tasks if REGISTRY[t].side == "user"]
        self.mixture = self.build_mixture(config, n_user_in, self.user_tasks, dropout)
        self.item_tower = MLP(n_item_in, list(config["tower_hidden"] or []), self.dim, dropout)
        # what item-side tasks know of an item's labels, as an input of the user-side tasks' item side
        self.item_label_projections = nn.ModuleDict({
            name: nn.Linear(self.heads[name].label_width, self.dim, bias=False)
            for name in self.tasks if config["item_label_features"] and self.heads[name].label_width
        })
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
        forbidden = [config[s.config_key] for s in label_sources(self.tasks)
                     if s.file == "item" and config[s.config_key]]
        vectors = load_item_vectors(
            dataset, feature_folder(config), config["dataset"], plm=config["plm"], text_fields=config["text_fields"],
            forbidden_fields=forbidden,
            fix_args=[f"--{key}={config.external_config_dict[key]}" for key in ("data_path", "text_feature_dir")
                      if getattr(config, "external_config_dict", {}).get(key)],
        )
        return TextFusion(vectors.to(self.device), self.dim, str(config["text_adapter"] or "linear"),
                          str(config["text_fusion"] or "add"))

    def _build_user_text_fusion(self, config, dataset) -> Optional[TextFusion]:
        """PLM user vectors fused with the user-id embedding, when ``user_text_features`` is on."""
        if not config["user_text_features"]:
            return None
        vectors = load_user_vectors(config, dataset)
        return TextFusion(vectors.to(self.device), self.dim, str(config["user_text_adapter"] or "linear"),
                          str(config["user_text_fusion"] or "add"))

    def _user_parts(self, interaction, pooled, rows: torch.Tensor) -> list[torch.Tensor]:
        """The user side's pooled features ``[N, D]`` each, at ``rows``; with user text, the
        user-id embedding is fused with the user's PLM vector through its adapter."""
        parts = [pooled[f.field][rows] for f in self.spec.user_fields]
        if self.user_text is not None:
            uid = self.spec.user_fields[0].field  # the user id is always the first user field
            parts[0] = self.user_text(interaction[uid][rows], parts[0])
        return parts if self.user_id_input else parts[1:]  # user_id_input: False: attributes only

    def _action_field(self, config, dataset) -> Optional[str]:
        """The ``.inter`` label column whose value at each history position is an encoder input
        (``action_input``: the interest label, HSTU's actions); ``~``: on when the dataset has it."""
        setting, column = config["action_input"], INTEREST_LABEL.column
        present = column in dataset.inter_feat
        if setting is None:
            return column if present else None
        if setting and not present:
            raise ConfigError(
                "action_input: True feeds each history interaction's interest label to the encoder, but the "
                "dataset has no interest label: set interest_label_field to an .inter field (e.g. rating), or "
                "action_input: ~ (on when there is one) or False.")
        return column if setting else None

    def _encoder_input(self, interaction, seq: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Item embeddings ``[B, L, D]`` of the history, plus each interaction's outcome (``action_input``)."""
        if self.action_field is None:
            return emb
        actions = interaction[self.action_field + "_list"].long().clamp(0, 1) + 1
        return emb + self.action_embedding(torch.where(seq > 0, actions, torch.zeros_like(actions)))

    def _time_field(self, config, dataset) -> Optional[str]:
        """The time field the encoder reads (HSTU's time bias), when the dataset has one."""
        field = dataset.time_field
        if str(config["encoder"] or "").lower() != "hstu" or not field or field not in dataset.inter_feat:
            return None
        self.time_scale = float(getattr(dataset, "time_scale", 1.0))
        return field

    def _resolve_weights(self, config) -> dict[str, float]:
        weights = dict(config["task_weights"] or {})
        unknown = set(weights) - set(TASK_NAMES)
        if unknown:
            raise ConfigError(f"task_weights names unknown tasks {sorted(unknown)}; tasks are {list(TASK_NAMES)}.")
        return {t: float(weights.get(t, 1.0)) for t in self.tasks}

    def _item_attribute_columns(self, dataset) -> dict[str, torch.Tensor]:
        """Every item's attribute ids/floats, to describe any item by its id."""
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

    def task(self, name: str):
        """The task module (head, loss, metrics) of ``name``."""
        return self.heads[name]

    def dense_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters for the dense optimizer; embedding tables update inside ``backward``."""
        return (p for n, p in self.named_parameters() if not n.startswith(("sparse.", "balancer.")))

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last dense layers more than one task reads (GradNorm's ``W``).

        The mixture's last shared layer (user-side tasks) and the item tower's output layer (read
        by every task that reads item representations); the embedding tables are shared too but
        update inside the fused backward, which never exposes their gradients.
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
    def _lookup(self, user_rows, item_ids: torch.Tensor, rep_ids: Optional[torch.Tensor]):
        """Embeddings of ``item_ids`` ``[U]`` and pooled features of the users and of ``rep_ids``.

        One call per collection (sharded collections need every rank to make the same calls).

        Returns:
            item-id embeddings ``[U, D]`` (with text), pooled features (``KeyedTensor`` or None).
        """
        B = 0 if user_rows is None else len(user_rows)
        none = item_ids.new_zeros(0)
        rep_ids = none if rep_ids is None else rep_ids
        item_kjt = build_kjt({}, max(B, 1), {"item": item_ids})
        # fused collections expect every feature of their tables, so unused ones are empty
        columns = {f.field: none if user_rows is None else user_rows[f.field] for f in self.spec.user_fields}
        columns.update({f.field: self._item_columns[f.field][rep_ids] for f in self.spec.item_fields})
        feature_kjt = build_kjt(columns, max(B, len(rep_ids), 1)) if columns else None
        items, pooled = self.sparse(item_kjt, feature_kjt)
        emb = items["item"].values()
        return (emb if self.text is None else self.text(item_ids, emb)), pooled

    def _step(self, interaction, training: bool, user_tasks: Optional[list[str]] = None) -> _Batch:
        """Encode ``interaction`` and prepare what every task reads (see :class:`_Batch`); with
        ``user_tasks``, only what those user-side tasks (and every item-side task) read."""
        all_positions = training and self.train_positions == "all" and POSITION_MASK in interaction
        batch = _Batch(self, interaction, training, all_positions)
        seq = interaction[self.ITEM_SEQ]
        names = [name for name in self.tasks
                 if user_tasks is None or name in user_tasks or name not in self.user_tasks]
        wanted = {name: self.heads[name].items(batch) for name in names}
        needs_rep = [ids for name, ids in wanted.items()
                     if ids is not None and self.heads[name].reads_item_representation]
        rep_ids = torch.unique(torch.cat(needs_rep)) if needs_rep else None
        item_ids = torch.unique(torch.cat([seq.flatten()] + [ids for ids in wanted.values() if ids is not None]))
        emb, pooled = self._lookup(interaction, item_ids, rep_ids)
        batch._ids, batch._emb = item_ids, emb
        if rep_ids is not None:
            batch._rep_ids = rep_ids
            batch._rep = self._item_representation(batch.item_embedding(rep_ids), pooled, rep_ids)
        if self.user_tasks:
            states = self.encoder(self._encoder_input(interaction, seq, batch.item_embedding(seq)),
                                  interaction[self.ITEM_SEQ_LEN],
                                  self._times(interaction, all_positions))
            state = states[batch.rows, batch.cols]  # [N, D]
            parts = [state] + self._user_parts(interaction, pooled, batch.rows)
            parts += [interaction[n].float()[batch.rows].view(-1, 1) for n in self.spec.user_floats]
            batch.reps = self.mixture(torch.cat(parts, dim=-1), state)
        return batch

    def _times(self, interaction, all_positions: bool) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """``(query_times, key_times)`` ``[B, L]`` in seconds: when each position's next interaction
        happens, and when each input happened (HSTU's time bias)."""
        if self.time_field is None:
            return None
        keys = interaction[self.time_field + "_list"].double() * self.time_scale
        if all_positions:
            queries = interaction[NEXT_PREFIX + self.time_field].double() * self.time_scale
        else:
            queries = torch.cat([keys[:, 1:], keys[:, -1:]], dim=1)
            last = (interaction[self.ITEM_SEQ_LEN] - 1).clamp(min=0)
            queries[torch.arange(len(last), device=last.device), last] = \
                interaction[self.time_field].double() * self.time_scale
        return queries, keys

    def _item_representation(self, emb: torch.Tensor, pooled, ids: torch.Tensor) -> torch.Tensor:
        """Item tower over ``[id embedding, pooled attributes, float attributes]`` of ``ids`` ``[R]``."""
        R = len(ids)
        parts = [emb] + [pooled[f.field][:R] for f in self.spec.item_fields]
        parts += [self._item_columns[n][ids].float().view(-1, 1) for n in self.spec.item_floats]
        return self.item_tower(torch.cat(parts, dim=-1))

    def _with_item_labels(self, batch: _Batch, ids: torch.Tensor, representation: torch.Tensor) -> torch.Tensor:
        """``representation`` plus the projection of every item-side task's :meth:`known_labels`."""
        for name, projection in self.item_label_projections.items():
            representation = representation + projection(self.heads[name].known_labels(batch, ids, representation))
        return representation

    # -- RecBole model contract --------------------------------------------------------------
    def forward(self, interaction):
        return self.predict_tasks(interaction)

    def calculate_loss(self, interaction) -> tuple[torch.Tensor, ...]:
        """Per-task losses (each the mean over its counted positions) times their task weights,
        in ``self.tasks`` order."""
        batch = self._step(interaction, training=True)
        losses = tuple(self.task_weights[name] * self.heads[name].loss(batch) for name in self.tasks)
        #: how many positions (or items) each task's mean ran over, for averaging over ranks
        self.last_counts = [self.heads[name].count(batch) for name in self.tasks]
        return losses

    def predict_tasks(self, interaction, tasks: Optional[list[str]] = None) -> dict[str, torch.Tensor]:
        """Evaluation scores of every user-side task (or of ``tasks``) at the last position of each history.

        The history is ``interaction[ITEM_SEQ]`` (``[B, L]``, left-aligned) up to ``ITEM_SEQ_LEN``;
        the interaction scored is the next one (``POS_ITEM_ID``: its item, for pair tasks).

        Returns:
            task name -> scores, e.g. ``sequence``: ``[B, n_items]``; ``interest``: ``[B]``.
        """
        names = self.user_tasks if tasks is None else [t for t in self.user_tasks if t in tasks]
        batch = self._step(interaction, training=False, user_tasks=names)
        return {name: self.heads[name].predict(batch) for name in names}

    def full_sort_predict(self, interaction) -> torch.Tensor:
        return self.predict_tasks(interaction)[self._ranking_task()]

    def predict(self, interaction) -> torch.Tensor:
        """Score ``[N]`` of ``interaction[ITEM_ID]`` as the next item (RecBole's sampled evaluation).

        RecBole's sampled evaluation (``uni100``, ``pop100``) repeats each history once per candidate
        item. With ``sampled_scoring: one_pass`` each distinct history of the batch is encoded once
        and its state scores all of its candidates; ``repeated`` encodes every row (RecBole's way).
        """
        task = self._ranking_task()
        first, inverse = self._distinct_histories(interaction)
        if self.sampled_scoring == "repeated" or len(first) == len(inverse):
            return self.heads[task].score(self._step(interaction, training=False))
        batch = self._step(interaction[first], training=False)
        return self.heads[task].score(batch.candidates(inverse, interaction[self.POS_ITEM_ID]))

    def _distinct_histories(self, interaction) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first, inverse)``: the first row of each distinct history ``[G]`` and each row's
        history ``[N]``; rows agree on every input but the candidate item (user, history, length,
        and the target's time when the encoder reads times)."""
        seq = interaction[self.ITEM_SEQ]
        columns = [seq, interaction[self.ITEM_SEQ_LEN].view(-1, 1)]
        if self.USER_ID in interaction:
            columns.append(interaction[self.USER_ID].view(-1, 1))
        if self.time_field is not None and self.time_field in interaction:
            columns.append(interaction[self.time_field].view(-1, 1).to(seq.dtype))
        keys = torch.cat([c.to(seq.dtype) for c in columns], dim=1)
        _, inverse = torch.unique(keys, dim=0, return_inverse=True)
        groups = int(inverse.max()) + 1 if len(inverse) else 0
        positions = torch.arange(len(inverse), device=inverse.device)
        first = torch.full((groups,), len(inverse), dtype=torch.long, device=inverse.device)
        first = first.scatter_reduce(0, inverse, positions, reduce="amin")
        return first, inverse

    def _ranking_task(self) -> str:
        """The task RecBole's ranking evaluation scores (``evaluation == "ranking"``)."""
        ranking = [name for name in self.tasks if self.heads[name].evaluation == "ranking"]
        if not ranking:
            raise ConfigError(f"ranking evaluation needs a ranking task among `tasks` ({self.tasks}); "
                              "add sequence to tasks.")
        return ranking[0]

    def item_predictions(self, task: str, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
        """An item-side task's probabilities ``[N, C]`` and labels of its held-out items of ``phase``."""
        head = self.heads[task]
        item_ids = head.held_out(phase)
        return self.item_probabilities(task, item_ids), head.labels[item_ids]

    def item_probabilities(self, task: str, item_ids: torch.Tensor) -> torch.Tensor:
        """An item-side task's probabilities ``[N, C]`` for the dataset's items ``item_ids`` ``[N]``
        (with the neighbours head: from the task's training items, an item never its own key)."""
        describe = self._items_representation if self.heads[task].reads_item_representation \
            else self._items_embedding
        return self._item_probabilities(task, item_ids, [describe(chunk) for chunk in item_ids.split(4096)])

    def new_item_probabilities(self, task: str, text_vectors: torch.Tensor) -> torch.Tensor:
        """An item-side task's probabilities ``[N, C]`` for items outside the dataset, described by
        their PLM text vectors ``[N, P]`` (made as the feature file's, with the same model and fields).

        Such an item has no row in the id table: its id part is zero (the mean of the initial id
        embeddings, what an item the model never trained on has on average) and its text goes
        through the model's adapter and fusion, as for the items of the table.

        Raises:
            ConfigError: see :meth:`check_new_items`.
        """
        self.check_new_items(task)
        text_vectors = text_vectors.to(self.device)
        unseen = torch.zeros(len(text_vectors), dtype=torch.long, device=self.device)  # no table row: no key match
        described = [self.text.fuse_vectors(chunk, torch.zeros(len(chunk), self.dim, device=self.device))
                     for chunk in text_vectors.split(4096)]
        return self._item_probabilities(task, unseen, described)

    def check_new_items(self, task: str) -> None:
        """Whether :meth:`new_item_probabilities` can describe new items for ``task``.

        Raises:
            ConfigError: the model reads no item text (``text_features: False``), or the task reads
                the item tower, whose attribute tables have no rows for new items (``category_head: mlp``).
        """
        if self.text is None:
            raise ConfigError("the model needs text features (text_features: True) to categorize unseen items: it "
                              "was trained without item text, and an item outside its dataset has no id embedding. "
                              "Run run_recbole_mtl.py embed, then train with --text_features=True.")
        if self.heads[task].reads_item_representation:
            raise ConfigError(f"the {task} head of this model reads the item tower (ids and attribute tables), "
                              "which has no rows for items outside the dataset; train with category_head: "
                              "neighbours (the default) to categorize new items from their text.")

    def _item_probabilities(self, task: str, item_ids: torch.Tensor, described: list[torch.Tensor]) -> torch.Tensor:
        """Probabilities ``[N, C]`` of items ``item_ids`` whose head inputs are ``described`` (chunks of 4096)."""
        head = self.heads[task]
        key_ids = head.train_items
        describe = self._items_representation if head.reads_item_representation else self._items_embedding
        key_rep = torch.cat([describe(chunk) for chunk in key_ids.split(4096)]) \
            if len(key_ids) else item_ids.new_zeros(0, self.dim).float()
        probs = [head.probabilities(ids, rep, key_ids, key_rep) for ids, rep in zip(item_ids.split(4096), described)]
        return torch.cat(probs) if probs else item_ids.new_zeros(0, head.labels.shape[1]).float()

    def _items_embedding(self, ids: torch.Tensor) -> torch.Tensor:
        """Item-id embeddings (with text) ``[R, D]`` of items ``ids``."""
        return self._lookup(None, ids, None)[0]

    def _items_representation(self, ids: torch.Tensor) -> torch.Tensor:
        """Item-tower representations ``[R, D]`` of items ``ids`` (no user, one lookup)."""
        emb, pooled = self._lookup(None, ids, ids)
        return self._item_representation(emb, pooled, ids)
