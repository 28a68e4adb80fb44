"""``eval_mask_history``: full ranking with each user's earlier items scored minus infinity.

The expected figures are computed here by hand: each user's earlier items from the atomic file
in time order (not by :mod:`recbole_mtl.data.history_mask`), the model's ``full_sort_predict`` on
the loader's rows, the ranks and NDCG@10 / Hit@10 from them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_mtl import pipeline
from recbole_mtl.config import Config
from recbole_mtl.errors import ConfigError
from tests.conftest import base_config

SMALL = {
    "MTLRec": {"MAX_ITEM_LIST_LENGTH": 10, "embedding_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
               "shared_hidden": [32], "tower_hidden": [16], "train_batch_size": 512,
               "tasks": ["sequence", "interest"]},
    "SASRec": {"MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
               "train_batch_size": 2048},
}
SAMPLED = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "uni100"}


def config_of(model, data_root, **overrides) -> Config:
    return Config(model=model, dataset="ml-slice", config_dict=base_config(data_root, **{**SMALL[model], **overrides}),
                  cmd_args=[])


def time_ordered(data_root, dataset) -> dict[int, list[int]]:
    """Internal user id -> internal item ids of every interaction, in time order (file order on ties).

    The time is a float field, which RecBole holds as float32 (ml-100k's timestamps: 64 s apart),
    so times closer than that tie, and keep the file's order, as in RecBole's rows.
    """
    raw = pd.read_csv(data_root / "ml-slice" / "ml-slice.inter", sep="\t", dtype=str)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    raw["timestamp"] = raw["timestamp"].astype(np.float32)
    raw = raw.sort_values("timestamp", kind="stable")
    users = dataset.token2id("user_id", raw["user_id"].tolist())
    items = dataset.token2id("item_id", raw["item_id"].tolist())
    history: dict[int, list[int]] = {}
    for user, item in zip(users.tolist(), items.tolist()):
        history.setdefault(user, []).append(item)
    return history


@torch.no_grad()
def by_hand(model, loader, earlier: dict[int, list[int]] | None, k: int = 10):
    """Per row: NDCG@k, Hit@k, top-k items and user, from ``full_sort_predict`` with ``earlier`` masked."""
    model.eval()
    ndcg, hit, tops, users = [], [], [], []
    for interaction, _, _, positive_i in loader:
        interaction = interaction.to(model.device)
        scores = model.full_sort_predict(interaction).view(len(positive_i), -1).float().cpu().clone()
        scores[:, 0] = -math.inf
        row_users = interaction["user_id"].cpu().tolist()
        if earlier is not None:
            for row, user in enumerate(row_users):
                scores[row, earlier[user]] = -math.inf
        target = scores.gather(1, positive_i.view(-1, 1))
        rank = (scores > target).sum(1) + 1
        ndcg += [1.0 / math.log2(r + 1) if r <= k else 0.0 for r in rank.tolist()]
        hit += [float(r <= k) for r in rank.tolist()]
        tops += torch.topk(scores, k, dim=1).indices.tolist()
        users += row_users
    return np.array(ndcg), np.array(hit), tops, users


def recorded_evaluation(trainer, loader, config):
    """The trainer's metrics on ``loader``, its per-user values for the significance tests
    (``benchmark``'s recorder, ``topk_per_user``) and the top-10 items of every evaluated row."""
    from recbole_mtl.benchmark import _TestRecorder
    from recbole_mtl.significance import topk_per_user

    recorder = _TestRecorder(trainer, "user_id")
    tops, collect = [], trainer.eval_collector.eval_batch_collect

    def collect_topk(scores, interaction, positive_u, positive_i):
        tops.extend(torch.topk(scores, 10, dim=1).indices.cpu().tolist())
        return collect(scores, interaction, positive_u, positive_i)

    trainer.eval_collector.eval_batch_collect = collect_topk
    result = dict(trainer.evaluate(loader, load_best_model=False))
    trainer.eval_collector.eval_batch_collect = collect
    return result, topk_per_user(recorder.struct, config), tops


@pytest.mark.parametrize("model_name", ["MTLRec", "SASRec"])
def test_full_ranking_masks_every_earlier_item_only_when_asked(model_name, data_root, workdir):
    off = pipeline.build(config_of(model_name, data_root))  # the default: RecBole's ranking over every item
    assert off.config["eval_mask_history"] is False
    off.trainer.fit(off.train_data, off.valid_data, saved=model_name == "MTLRec", show_progress=False)
    on_config = config_of(model_name, data_root, eval_mask_history=True)
    _, _, on_valid, on_test, _ = pipeline.build_data_and_model(on_config)  # the same data, masked loaders

    history = time_ordered(data_root, off.dataset)
    before_test = {u: items[:-1] for u, items in history.items()}  # training and validation items
    before_valid = {u: items[:-2] for u, items in history.items()}  # training items
    model, trainer = off.model, off.trainer
    ndcg_off, hit_off, _, users = by_hand(model, off.test_data, None)
    ndcg_on, hit_on, tops_on, users_on = by_hand(model, on_test, before_test)
    assert users == users_on and len(users) == len(history)
    # the rows' targets are the users' last items: the time order above is RecBole's
    targets = torch.cat([batch[3] for batch in off.test_data]).tolist()
    assert targets == [history[u][-1] for u in users]
    assert abs(ndcg_on.mean() - ndcg_off.mean()) > 1e-3  # on this data the mask changes the figure

    result_off = dict(trainer.evaluate(off.test_data, load_best_model=False))
    assert result_off["ndcg@10"] == pytest.approx(ndcg_off.mean(), abs=1e-4)
    assert result_off["hit@10"] == pytest.approx(hit_off.mean(), abs=1e-4)
    result_on, per_user, tops = recorded_evaluation(trainer, on_test, on_config)
    assert result_on["ndcg@10"] == pytest.approx(ndcg_on.mean(), abs=1e-4)
    assert result_on["hit@10"] == pytest.approx(hit_on.mean(), abs=1e-4)
    # the benchmark's per-user values (significance tests) come from the masked scores
    assert per_user["ndcg@10"] == pytest.approx(ndcg_on, abs=1e-6)
    assert per_user["hit@10"] == pytest.approx(hit_on, abs=1e-6)
    # no masked item is recommended: not in the evaluator's top 10, not in the hand-made one
    for user, top, hand_top in zip(users, tops, tops_on):
        assert not set(top) & set(before_test[user]) and not set(hand_top) & set(before_test[user])
    assert [set(t) for t in tops] == [set(t) for t in tops_on]

    # validation: the training items only (the validation target stays rankable)
    ndcg_valid, hit_valid, _, _ = by_hand(model, on_valid, before_valid)
    valid_targets = torch.cat([batch[3] for batch in on_valid]).tolist()
    assert valid_targets == [history[u][-2] for u in users]
    result_valid = dict(trainer.evaluate(on_valid, load_best_model=False))
    assert result_valid["ndcg@10"] == pytest.approx(ndcg_valid.mean(), abs=1e-4)
    assert result_valid["hit@10"] == pytest.approx(hit_valid.mean(), abs=1e-4)

    if model_name == "MTLRec":  # a checkpoint evaluated with the key on, as `evaluate --checkpoint` does
        from recbole_mtl.utils import get_trainer

        config, reloaded, _, _, _, test_data = pipeline.load_data_and_model(trainer.saved_model_file,
                                                                            {"eval_mask_history": True})
        again = get_trainer(config["MODEL_TYPE"], config["model"])(config, reloaded)
        assert dict(again.evaluate(test_data, load_best_model=False)) == pytest.approx(result_on, abs=1e-4)


def test_general_models_keep_recboles_own_mask(data_root, workdir):
    from recbole_mtl.data.history_mask import EarlierItems

    config = Config(model="BPR", dataset="ml-slice", config_dict=base_config(data_root, eval_mask_history=True),
                    cmd_args=[])
    _, _, valid, test, _ = pipeline.build_data_and_model(config)
    for loader in (valid, test):
        assert not isinstance(loader.collate_fn, EarlierItems)
        _, history_index, _, _ = next(iter(loader))
        assert history_index is not None  # RecBole's: the training (and validation) items


def test_sampled_evaluation_is_unchanged_by_the_key(data_root, workdir):
    """uni100: the key leaves RecBole's candidates as they are. For a sequential model RecBole
    requires ``repeatable: True``, whose sampler keeps only the row's target out of the negatives:
    earlier items of the user can be drawn (docs/configuration.md)."""
    from recbole_mtl.data.history_mask import EarlierItems

    candidates = {}
    for mask in (False, True):
        config = config_of("SASRec", data_root, eval_args=SAMPLED, eval_mask_history=mask)
        dataset, _, _, test, _ = pipeline.build_data_and_model(config)
        assert type(test).__name__ == "NegSampleEvalDataLoader" and not isinstance(test.collate_fn, EarlierItems)
        rows = [batch[0] for batch in test]
        candidates[mask] = (torch.cat([r["user_id"] for r in rows]), torch.cat([r["item_id"] for r in rows]))
    assert torch.equal(candidates[False][0], candidates[True][0])
    assert torch.equal(candidates[False][1], candidates[True][1])
    history = time_ordered(data_root, dataset)
    users, items = candidates[True]
    negatives = [(u, i) for u, i in zip(users.tolist(), items.tolist()) if i != history[u][-1]]
    earlier = sum(i in set(history[u][:-1]) for u, i in negatives)
    assert 0 < earlier < len(negatives) // 4  # RecBole's sampled negatives: some earlier items among them


@pytest.mark.parametrize("value", ["3", "yes_please", "[True]"])
def test_a_bad_value_is_one_line_saying_what_to_set(value, data_root):
    with pytest.raises(ConfigError) as error:
        Config(model="SASRec", dataset="ml-slice", config_dict=base_config(data_root), cmd_args=[
            f"--eval_mask_history={value}"])
    message = str(error.value)
    assert "\n" not in message and "eval_mask_history" in message and "True or False" in message


def test_a_saved_dataset_gets_the_same_mask(data_root, workdir):
    """``save_dataset``: the run that saves and the run that loads the arrays mask the same items."""
    batches = []
    for _ in range(2):  # the first build saves the split dataset, the second loads it
        config = config_of("MTLRec", data_root, eval_mask_history=True, save_dataset=True)
        dataset, _, valid, test, _ = pipeline.build_data_and_model(config)
        batches.append([(batch[0]["user_id"], batch[1]) for loader in (valid, test) for batch in loader])
    assert getattr(dataset, "_saved_parts", None) is not None  # the second one was loaded
    history = time_ordered(data_root, dataset)
    for (users, (rows, items)), (users_again, (rows_again, items_again)) in zip(*batches):
        assert torch.equal(users, users_again) and torch.equal(rows, rows_again) and torch.equal(items, items_again)
    (users, (rows, items)), (test_users, (test_rows, test_items)) = batches[1][0], batches[1][-1]
    assert sorted(items[rows == 0].tolist()) == sorted(history[int(users[0])][:-2])
    assert sorted(test_items[test_rows == 0].tolist()) == sorted(history[int(test_users[0])][:-1])
