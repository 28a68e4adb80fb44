"""Lean sequences: the flat time-ordered interactions instead of RecBole's per-prefix list copies.

The same dataset built lean and with RecBole's own augmentation (and remapping) must give the same evaluation rows, the same training targets, the same
training windows and the same interaction matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.data.dataset import SequentialDataset

from recbole_mtl.config import Config
from recbole_mtl.data.dataset import FLAT_POSITION, MultiTaskDataset
from recbole_mtl.data.windows import UserWindows
from recbole_mtl.pipeline import build_data_and_model
from tests.conftest import base_config

L = 8
TINY = {"MAX_ITEM_LIST_LENGTH": L, "embedding_size": 8, "n_layers": 1, "n_heads": 1, "inner_size": 16,
        "shared_hidden": [8], "tower_hidden": [8], "load_col": None, "category_field": "class"}


def _build(data_root, lean, **overrides):
    config = Config(model="MTLRec", dataset="ml-slice", cmd_args=[],
                    config_dict=base_config(data_root, **{**TINY, **overrides}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MultiTaskDataset, "lean_sequences", lean)
        if not lean:  # the reference: RecBole's own augmentation, remapping, filtering and grouping
            for name in ("_remap", "_filter_by_inter_num", "_grouped_index"):
                patch.setattr(MultiTaskDataset, name, getattr(SequentialDataset, name))
        dataset, train, valid, test, _ = build_data_and_model(config)
    return dataset, train.dataset, valid.dataset, test.dataset


@pytest.fixture(scope="module")
def both(data_root):
    return _build(data_root, True), _build(data_root, False)


def _assert_same_rows(lean, recbole):
    for column in recbole.inter_feat.columns:
        assert column in lean.inter_feat, column
        torch.testing.assert_close(lean.inter_feat[column], recbole.inter_feat[column], atol=0, rtol=0,
                                   msg=column)


def test_evaluation_rows_are_recboles(both):
    (_, _, lean_valid, lean_test), (_, _, valid, test) = both
    assert len(valid) > 50 and int(valid.inter_feat["item_length"].max()) == L  # some histories are cut at L
    _assert_same_rows(lean_valid, valid)
    _assert_same_rows(lean_test, test)


def test_training_rows_hold_no_per_prefix_copy(both):
    (lean_all, lean_train, _, _), (_, train, _, _) = both
    assert "item_id_list" in train.inter_feat and "item_id_list" not in lean_train.inter_feat
    assert not any(v.dim() > 1 and v.shape[0] == len(lean_train) for v in lean_train.inter_feat.interaction.values())
    for column in lean_train.inter_feat.columns:
        if column != FLAT_POSITION:
            torch.testing.assert_close(lean_train.inter_feat[column], train.inter_feat[column], atol=0, rtol=0)
    # every row's target is the flat arrays' entry at its position; the history is the entries before it
    pos = lean_train.inter_feat[FLAT_POSITION]
    assert torch.equal(lean_all.flat["item_id"][pos], lean_train.inter_feat["item_id"])
    rows = lean_train.history_lists(lean_train.inter_feat)
    assert torch.equal(rows["item_id_list"], train.inter_feat["item_id_list"])
    assert torch.equal(rows["timestamp_list"], train.inter_feat["timestamp_list"])


@pytest.mark.parametrize("stride", [L, 3])
def test_windows_read_from_the_flat_arrays_equal_windows_rebuilt_from_recboles_rows(both, stride):
    (_, lean_train, _, _), (_, train, _, _) = both
    lean, rebuilt = UserWindows.from_dataset(lean_train, L, stride), UserWindows.from_dataset(train, L, stride)
    assert lean.items.data_ptr() == lean_train.flat["item_id"].data_ptr()  # no copy
    assert len(lean) == len(rebuilt) and lean.num_targets == rebuilt.num_targets == len(train)
    a, b = lean.batch(torch.arange(len(lean))), rebuilt.batch(torch.arange(len(rebuilt)))
    assert set(a.columns) == set(b.columns)
    for column in b.columns:
        assert torch.equal(a[column], b[column]), column


def test_rows_left_out_within_a_user_are_gathered(both):
    (_, lean_train, _, _), (_, train, _, _) = both
    keep = torch.from_numpy(np.arange(len(train)) % 5 != 2)  # drop every fifth training row
    lean_part, part = lean_train.copy(lean_train.inter_feat[keep]), train.copy(train.inter_feat[keep])
    lean, rebuilt = UserWindows.from_dataset(lean_part, L), UserWindows.from_dataset(part, L)
    assert lean.items.data_ptr() != lean_train.flat["item_id"].data_ptr()
    for column, value in rebuilt.batch(torch.arange(len(rebuilt))).interaction.items():
        assert torch.equal(lean.batch(torch.arange(len(lean)))[column], value), column


def test_recboles_loader_over_lean_rows_gives_recboles_per_prefix_rows(both):
    (_, lean_train, _, _), (_, train, _, _) = both
    index = torch.arange(0, len(train), 7)
    a, b = lean_train[index], train[index]
    for column in b.columns:
        assert torch.equal(a[column], b[column]), column


def test_interaction_matrix_is_recboles(both):
    (_, lean_train, _, _), (_, train, _, _) = both
    a, b = lean_train.inter_matrix(form="csr"), train.inter_matrix(form="csr")
    assert a.shape == b.shape and a.nnz == b.nnz > len(train)  # targets plus each user's first item
    assert (a != b).nnz == 0


def test_token_maps_are_recboles_and_built_on_first_use(both):
    (lean_all, _, _, _), (reference, _, _, _) = both
    for field in ("user_id", "item_id", "class"):
        lazy, eager = lean_all.field2token_id[field], reference.field2token_id[field]
        assert type(eager) is dict and lazy._tokens is not None  # not built yet
        assert np.array_equal(lean_all.field2id_token[field], reference.field2id_token[field])
        assert lazy == eager and len(lazy) == len(eager) and lazy._tokens is None
        token = lean_all.field2id_token[field][5]
        assert lazy[token] == eager[token] == 5 and token in lazy and "no such token" not in lazy
    assert lean_all.token2id("item_id", ["1", "2"]).tolist() == reference.token2id("item_id", ["1", "2"]).tolist()


def test_grouped_index_is_recboles(both):
    (lean_all, _, _, _), _ = both
    rng = np.random.default_rng(0)
    for keys in (rng.integers(0, 50, 1000), np.array([3, 3, 1, 2, 1, 3]), np.array([7])):
        ours = [list(map(int, g)) for g in lean_all._grouped_index(keys)]
        recbole = [list(g) for g in SequentialDataset._grouped_index(lean_all, keys)]
        assert ours == recbole


@pytest.mark.parametrize("interval", ["[0,inf)", "[25,inf)", "[0,40)"])
def test_interaction_count_filters_are_recboles(data_root, interval):
    settings = {"user_inter_num_interval": interval, "item_inter_num_interval": "[2,inf)" if interval != "[0,inf)"
                else "[0,inf)"}
    lean, reference = _build(data_root, True, **settings)[0], _build(data_root, False, **settings)[0]
    assert lean.inter_num == reference.inter_num and lean.user_num == reference.user_num
    if interval != "[0,inf)":  # the filter removed something, so the comparison says something
        assert lean.inter_num < _build(data_root, True)[0].inter_num
    assert np.array_equal(lean.field2id_token["item_id"], reference.field2id_token["item_id"])


@pytest.mark.parametrize("world_size", [2, 4])
def test_each_rank_keeps_a_block_of_users_and_together_what_recboles_sampler_deals(both, world_size):
    from collections import Counter

    from torch.utils.data.distributed import DistributedSampler

    (_, lean_train, _, _), _ = both
    windows = UserWindows.from_dataset(lean_train, L, 3)
    assert len(windows) % 4 != 0  # the padding is exercised (with 4 ranks)
    dealt, together = [], Counter()
    for rank in range(world_size):
        part = windows.part(rank, world_size)
        got = part.batch(torch.arange(len(part)))
        assert part.items.data_ptr() == windows.items.data_ptr()  # the flat arrays are shared, not copied
        position = torch.arange(len(part)) + rank * len(part)  # in the padded order of all windows
        users = part.window_user[position < len(windows)]  # (the padding wraps around to the first users)
        assert bool((users[1:] >= users[:-1]).all())  # one block of users, in order
        dealt.append(len(part))
        together.update(zip(part.window_start.tolist(), part.window_end.tolist()))
        for column in got.columns:  # every window as the whole set would give it
            assert torch.equal(got[column], windows.batch(position % len(windows))[column]), column
    assert len(set(dealt)) == 1 and sum(dealt) >= len(windows)  # every rank takes as many steps
    recbole = Counter()
    for rank in range(world_size):
        sampler = DistributedSampler(list(range(len(windows))), num_replicas=world_size, rank=rank, shuffle=False)
        index = torch.tensor(list(sampler))
        recbole.update(zip(windows.window_start[index].tolist(), windows.window_end[index].tolist()))
    assert together == recbole


def test_histories_hold_every_interaction_even_a_users_only_one(tmp_path):
    from recbole_mtl.data.history import UserHistories
    from tests.conftest import write_slice

    folder = write_slice(tmp_path, "ml-one", max_user=30)
    inter = folder / "ml-one.inter"
    header, *rows = inter.read_text().splitlines()
    first = next(r for r in rows if r.split("\t")[0] == "7")
    rows = [r for r in rows if r.split("\t")[0] != "7"] + [first]  # user 7: a single interaction, no target
    inter.write_text("\n".join([header] + rows) + "\n")
    config = Config(model="MTLRec", dataset="ml-one", cmd_args=[],
                    config_dict={**base_config(tmp_path, **TINY), "dataset": "ml-one", "data_path": str(tmp_path)})
    dataset = build_data_and_model(config)[0]
    histories = UserHistories(dataset, L)
    user = int(dataset.token2id("user_id", "7"))
    assert int(histories.length(torch.tensor([user]))) == 1
    assert dataset.field2id_token["item_id"][int(histories.items[histories.starts[user]])] == first.split("\t")[1]
    users = torch.arange(1, dataset.user_num)
    assert int(histories.length(users).sum()) == len(rows)  # every interaction of the file


def test_item_ids_checked_unique_are_not_hashed_again_and_unchecked_ones_are(tmp_path, monkeypatch):
    import pandas as pd

    from recbole_mtl.data import checked
    from tests.conftest import write_slice

    write_slice(tmp_path, "ml-dup", max_user=20)
    config = Config(model="MTLRec", dataset="ml-dup", cmd_args=[],
                    config_dict={**base_config(tmp_path, **TINY), "dataset": "ml-dup", "data_path": str(tmp_path)})
    calls = []
    original = pd.DataFrame.drop_duplicates
    monkeypatch.setattr(pd.DataFrame, "drop_duplicates",
                        lambda self, *a, **k: calls.append(k.get("subset")) or original(self, *a, **k))
    dataset = build_data_and_model(config)[0]
    assert ["item_id"] not in calls and ["user_id"] not in calls  # the check found no repeated id
    monkeypatch.setattr(checked, "_UNIQUE_IDS", {})
    with open(tmp_path / "ml-dup" / "ml-dup.item", "a") as f:  # changed since the check
        f.write("1\t" + "\t".join([""] * (len(dataset.item_feat.columns) - 1)) + "\n")
    config["validate_data"] = False
    from recbole_mtl.hardening import safe_create_dataset

    safe_create_dataset(config)
    assert ["item_id"] in calls and ["user_id"] in calls  # RecBole's own drop


def test_recboles_loaders_index_rows_without_a_list_per_row(data_root):
    from torch.utils.data import DataLoader

    config = Config(model="MTLRec", dataset="ml-slice", cmd_args=[],
                    config_dict=base_config(data_root, **{**TINY, "shuffle": False, "train_batch_size": 97}))
    _, train, valid, _, _ = build_data_and_model(config)
    for loader in (train, valid):
        indices = DataLoader.__getattribute__(loader, "dataset")
        assert isinstance(indices, range) and len(indices) == loader.sample_size
    seen = torch.cat([batch["item_id"] for batch in train])  # every row once, in order
    assert torch.equal(seen, train.dataset.inter_feat["item_id"])
