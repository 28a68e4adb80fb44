"""MTLRec on real RecBole data (a slice of ml-100k): heads, losses, task switches, evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mtl.config import Config
from recbole_mtl.errors import ConfigError
from recbole_mtl.pipeline import build_data_and_model
from recbole_mtl.quick_start import load_data_and_model, run_recbole_mtl
from recbole_mtl.utils import get_trainer
from tests.conftest import base_config

SMALL = {
    "MAX_ITEM_LIST_LENGTH": 10, "embedding_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
    "shared_hidden": [32], "tower_hidden": [16], "train_batch_size": 512, "category_batch_size": 64,
    "load_col": None,  # every column: user and item attributes are features
    "category_field": "class",
}


def small_config(data_root, **overrides):
    return base_config(data_root, **{**SMALL, **overrides})


def build(data_root, **overrides):
    config = Config(model="MTLRec", dataset="ml-slice", config_dict=small_config(data_root, **overrides), cmd_args=[])
    dataset, train, valid, test, model = build_data_and_model(config)
    return config, dataset, train, valid, test, model


@pytest.fixture(scope="module")
def built(data_root):
    return build(data_root)


def table(model, name):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("sparse.")}[name]


ITEM_TABLE = "sparse.item_collection.embeddings.item_id.weight"
USER_TABLE = "sparse.feature_collection.embedding_bags.user_id.weight"
TITLE_TABLE = "sparse.feature_collection.embedding_bags.movie_title.weight"


def test_tables_come_from_dataset_fields_and_exclude_the_category_label(built):
    _, dataset, _, _, _, model = built
    fields = {f.field for f in model.spec.user_fields + model.spec.item_fields}
    assert {"user_id", "age", "gender", "occupation", "movie_title", "release_year"} <= fields
    assert "class" not in fields and "item_id" not in fields
    assert model.state_dict()[ITEM_TABLE].shape == (dataset.item_num, 16)
    assert model.state_dict()[USER_TABLE].shape == (dataset.user_num, 16)


@pytest.mark.parametrize("normalize_all", [False, True])
def test_interest_label_is_raw_rating_at_least_four(normalize_all, data_root):
    _, dataset, _, _, _, _ = build(data_root, normalize_all=normalize_all)
    labels = dataset.inter_feat["interest_label"]
    rating = dataset.inter_feat["rating"]
    if normalize_all:  # RecBole min-max normalises 1..5 to 0..1; the label still uses the raw value
        assert rating.max() == 1.0 and rating.min() == 0.0
        rating = rating * 4 + 1
    torch.testing.assert_close(labels, (rating >= 4 - 1e-6).float())
    assert 0.3 < labels.mean() < 0.8


def test_category_split_is_fixed_by_seed_and_disjoint(built, data_root):
    _, dataset, _, _, _, _ = built
    labels = dataset.multi_hot("class")
    split = dataset.item_split(labels, "class")
    again = dataset.item_split(labels, "class")
    assert all(torch.equal(split[k], again[k]) for k in split)
    sets = [set(split[k].tolist()) for k in ("train", "valid", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    holdout = len(sets[1]) + len(sets[2])
    assert abs(holdout / (holdout + len(sets[0])) - 0.2) < 0.01


@pytest.mark.parametrize("task, changed, head", [
    ("sequence", [ITEM_TABLE, USER_TABLE], "neighbours"),  # the shared bottom reads user features
    ("interest", [ITEM_TABLE, USER_TABLE, TITLE_TABLE], "neighbours"),
    ("category", [ITEM_TABLE], "neighbours"),  # label attention over the item-id embeddings
    ("category", [ITEM_TABLE, TITLE_TABLE], "mlp"),  # the item tower reads the item attributes
])
def test_each_head_updates_the_shared_embeddings(task, changed, head, data_root):
    _, _, train, _, _, model = build(data_root, tasks=[task], category_head=head)
    assert model.tasks == [task]
    batch = next(iter(train))
    before = {name: table(model, name) for name in (ITEM_TABLE, USER_TABLE, TITLE_TABLE)}
    losses = model.calculate_loss(batch)
    assert len(losses) == 1 and torch.isfinite(losses[0])
    losses[0].backward()  # the fused optimizers update the tables inside backward
    for name in (ITEM_TABLE, USER_TABLE, TITLE_TABLE):
        moved = not torch.equal(before[name], table(model, name))
        assert moved == (name in changed), (task, name)
    # and the dense layers get gradients
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dense_parameters())


def test_a_batch_smaller_than_the_category_sample_gives_the_same_user_losses(built):
    """The last batch of an epoch can hold fewer users than category_batch_size items."""
    _, _, train, _, _, model = built
    model.eval()
    small = next(iter(train))[torch.arange(5)]
    category = model.task("category")
    saved = category.batch_size
    try:
        category.batch_size = 64  # more category items than users: the KJT stride is 64
        many = model.calculate_loss(small)
        category.batch_size = 2  # fewer: the stride is the batch
        few = model.calculate_loss(small)
    finally:
        category.batch_size = saved
    assert model.tasks == ["sequence", "interest", "category"]
    torch.testing.assert_close(many[0], few[0])  # sequence and interest losses do not depend on the sample
    torch.testing.assert_close(many[1], few[1])
    assert torch.isfinite(many[2]) and torch.isfinite(few[2])


def test_task_weights_scale_the_losses(data_root):
    torch.manual_seed(0)
    _, _, train, _, _, model = build(data_root, task_weights={"sequence": 1.0, "interest": 1.0, "category": 1.0})
    model.eval()
    batch = next(iter(train))
    torch.manual_seed(1)
    plain = model.calculate_loss(batch)
    model.task_weights = {"sequence": 2.0, "interest": 0.5, "category": 0.0}
    torch.manual_seed(1)
    weighted = model.calculate_loss(batch)
    torch.testing.assert_close(torch.stack(weighted), torch.stack(plain) * torch.tensor([2.0, 0.5, 0.0]))


def test_missing_category_field_is_an_error_when_set_and_switches_the_task_off_otherwise(data_root, caplog):
    from recbole_mtl.data.validate import DataValidationError

    with pytest.raises(DataValidationError, match=r"ml-slice.item, line 1, field 'genre'.*category_field"):
        build(data_root, category_field="genre")
    _, _, _, _, _, model = build(data_root, category_field="genre", validate_data=False)
    assert model.tasks == ["sequence", "interest"]
    assert "task 'category' switched off" in caplog.text and "'genre'" in caplog.text and "category_field" in caplog.text


@pytest.mark.parametrize("encoder", ["lstm", "gru", "transformer", "hstu"])
def test_encoders_are_causal_and_give_a_state_per_position(encoder, data_root):
    from recbole_mtl.model.encoders import build_encoder

    config = Config(model="MTLRec", dataset="ml-slice", config_dict=small_config(data_root, encoder=encoder), cmd_args=[])
    enc = build_encoder(config, 16, 10).eval()
    seq = torch.randn(3, 10, 16)
    lengths = torch.tensor([4, 10, 1])
    out = enc(seq, lengths)
    assert out.shape == (3, 10, 16)
    changed = seq.clone()
    changed[0, 4:] = torch.randn(6, 16)  # padding after the last real item must not matter
    changed[1, 6:] = torch.randn(4, 16)  # nor later items to earlier positions
    again = enc(changed, lengths)
    torch.testing.assert_close(again[0, :4], out[0, :4])
    torch.testing.assert_close(again[1, :6], out[1, :6])
    assert not torch.allclose(again[1, 6:], out[1, 6:])


def _check_ranges(result, tasks):
    keys = set(result)
    if "sequence" in tasks:
        assert {"recall@10", "mrr@10", "ndcg@10", "hit@10"} <= keys
    else:
        assert not any("@" in k for k in keys)
    interest = {f"interest_{m}" for m in ("auc", "logloss", "accuracy", "precision", "recall", "f1")}
    category = {f"category_{m}" for m in ("accuracy", "label_accuracy", "micro_precision", "micro_recall",
                                          "micro_f1", "macro_precision", "macro_recall", "macro_f1")}
    assert (interest <= keys) == ("interest" in tasks) and (keys.isdisjoint(interest)) == ("interest" not in tasks)
    assert (category <= keys) == ("category" in tasks) and (keys.isdisjoint(category)) == ("category" not in tasks)
    for k, v in result.items():
        assert math.isfinite(v), k
        assert v >= 0 and (k == "interest_logloss" or v <= 1), (k, v)
    for prefix in ("interest_", "category_micro_"):  # F1 of the reported precision and recall
        if prefix + "f1" in result:
            p, r = result[prefix + "precision"], result[prefix + "recall"]
            assert result[prefix + "f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=2e-4)
    if "sequence" in tasks:  # hit@10 counts users, recall@10 items: never fewer hits than recall
        assert result["hit@10"] >= result["recall@10"]


def test_one_epoch_saved_reports_every_task_and_reloads_identically(data_root, workdir):
    result = run_recbole_mtl(model="MTLRec", dataset="ml-slice", config_dict=small_config(data_root), cmd_args=[])
    _check_ranges(result["test_result"], ["sequence", "interest", "category"])
    _check_ranges(result["best_valid_result"], ["sequence", "interest", "category"])
    assert torch.load(result["checkpoint"], weights_only=True)["format"] == "recbole_mtl.checkpoint.v1"
    config, model, _, _, _, test_data = load_data_and_model(result["checkpoint"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]), abs=2e-4)
    assert list((workdir / "log_tensorboard").rglob("events.*"))


@pytest.mark.parametrize("tasks", [["sequence", "interest"], ["interest", "category"], ["category"]])
def test_switching_tasks_off_removes_their_metrics(tasks, data_root, workdir):
    valid_metric = "NDCG@10" if "sequence" in tasks else ("interest_auc" if "interest" in tasks else "category_micro_f1")
    result = run_recbole_mtl(model="MTLRec", dataset="ml-slice", cmd_args=[],
                             config_dict=small_config(data_root, tasks=tasks, valid_metric=valid_metric))
    _check_ranges(result["test_result"], tasks)
    assert result["best_valid_score"] == result["best_valid_result"][valid_metric.lower()]


def test_valid_metric_direction_follows_the_metric(data_root):
    for metric, bigger in (("interest_logloss", False), ("interest_auc", True), ("category_macro_f1", True)):
        config = Config(model="MTLRec", dataset="ml-slice", config_dict=small_config(data_root, valid_metric=metric),
                        cmd_args=[])
        assert config["valid_metric_bigger"] is bigger


def test_recbole_resolves_mtlrec_through_its_own_zoo(data_root, workdir):
    from recbole.quick_start import run_recbole
    from recbole.utils import get_model, get_trainer as recbole_get_trainer

    from recbole_mtl.model.mtlrec import MTLRec
    from recbole_mtl.trainer import MultiTaskTrainer

    assert get_model("MTLRec") is MTLRec
    assert recbole_get_trainer(MTLRec.type, "MTLRec") is MultiTaskTrainer
    result = run_recbole(model="MTLRec", dataset="ml-slice", config_dict=small_config(data_root, tasks=["sequence"]))
    assert "ndcg@10" in result["test_result"]


class _Rows:
    """The part of a batch the sequence task reads: fixed user vectors and item embeddings."""

    training, all_positions, item = True, True, None

    def __init__(self, user, emb, targets):
        self._user, self._emb, self.next_item = user, emb, targets

    def user(self, task):
        return self._user

    def item_embedding(self, ids):
        return self._emb[ids]


def test_sampled_softmax_masks_accidental_hits_and_trains(data_root):
    from recbole_mtl.tasks.sequence import SequenceTask

    config, dataset, train, _, _, model = build(data_root, sequence_loss="sampled", num_negatives=50, tasks=["sequence"])
    task = SequenceTask(config, dataset, 4, 0.0)
    user, emb, targets = torch.randn(2, 4), torch.randn(dataset.item_num, 4), torch.tensor([5, 7])
    task.items(_Rows(user, emb, targets))
    task._candidates = torch.tensor([5, 9, 11])  # 5 is the first row's target: it must not count as a negative
    loss = task.loss(_Rows(user, emb, targets))
    query = task.head(user)
    pos = (query * emb[targets]).sum(-1, keepdim=True)
    logits = query @ emb[task._candidates].t()
    logits[0, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(torch.cat([pos, logits], 1), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(loss, expected)
    losses = model.calculate_loss(next(iter(train)))
    assert torch.isfinite(losses[0]) and 0 < losses[0].item() < math.log(51) + 5


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_lr_scheduler_changes_the_dense_learning_rate(scheduler, data_root):
    config, _, _, _, _, model = build(data_root, lr_scheduler=scheduler, epochs=4, lr_patience=0)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    lr0 = trainer.optimizer.param_groups[0]["lr"]
    if scheduler == "cosine":
        trainer.lr_scheduler.step()
    else:
        trainer.lr_scheduler.step(0.5)
        trainer.lr_scheduler.step(0.4)  # no improvement (bigger is better for NDCG@10)
    assert trainer.optimizer.param_groups[0]["lr"] < lr0


def test_fused_optimizer_state_travels_with_the_checkpoint(data_root):
    _, _, train, _, _, model = build(data_root)
    sum(model.calculate_loss(next(iter(train)))).backward()
    state = model.other_parameter()
    momenta = state["sparse_optimizer"]["items"]["state"]["item_id.weight"]["item_id.weight.momentum_1"]
    assert momenta.abs().sum() > 0
    _, _, _, _, _, fresh = build(data_root)
    fresh.load_state_dict(model.state_dict())
    fresh.load_other_parameter(state)
    again = fresh.other_parameter()["sparse_optimizer"]["items"]["state"]["item_id.weight"]["item_id.weight.momentum_1"]
    torch.testing.assert_close(again, momenta)


@pytest.mark.parametrize("key, value, message", [
    ("encoder", "cnn", "encoder must be one of lstm, gru, transformer, hstu"),
    ("tasks", ["sequence", "ranking"], "unknown task 'ranking'"),
    ("task_weights", {"sequence": 1.0, "seq": 2.0}, "task_weights names unknown tasks"),
    pytest.param("embedding_optimizer", "adam", "cannot be fused into FBGEMM's CPU kernels",
                 marks=pytest.mark.cpu_only),  # FBGEMM's CUDA kernels do have Adam
    ("sequence_loss", "bpr", "sequence_loss must be one of ce, sampled"),
    ("category_holdout_ratio", 1.5, "category_holdout_ratio must be between 0 and 1"),
])
def test_bad_model_settings_are_config_errors(key, value, message, data_root):
    from recbole_mtl.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build(data_root, **{key: value})


@pytest.mark.parametrize("user_id_input", [True, False])
def test_user_id_input_false_makes_the_scores_independent_of_the_user_id_table(user_id_input, data_root):
    _, _, _, _, test, model = build(data_root, tasks=["sequence", "interest"], user_id_input=user_id_input)
    model.eval()
    interaction = next(iter(test))[0]
    with torch.no_grad():
        before = model.full_sort_predict(interaction)
        weight = model.sparse.feature_collection.embedding_bags["user_id"].weight
        weight.add_(torch.randn_like(weight))  # a different vector for every user
        after = model.full_sort_predict(interaction)
    assert before.shape == after.shape and torch.isfinite(before).all()
    assert torch.equal(before, after) != user_id_input  # the table is read only with user_id_input: True
    assert model.user_id_input is user_id_input


def test_user_id_input_false_with_user_text_is_refused(data_root):
    with pytest.raises(ConfigError, match="user_id_input: False drops the user-id embedding"):
        build(data_root, user_id_input=False, user_text_features=True)
