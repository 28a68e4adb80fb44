"""The sequence transducer: user windows, losses at every position, HSTU, the rating task."""

from __future__ import annotations

import math

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mtl.config import Config
from recbole_mtl.errors import ConfigError
from recbole_mtl.data.windows import NEXT_PREFIX, POSITION_MASK, UserWindows, WindowDataLoader
from recbole_mtl.model.encoders import HSTULayer, RelativeBias
from recbole_mtl.pipeline import build_data_and_model
from recbole_mtl.quick_start import run_recbole_mtl
from recbole_mtl.utils import get_trainer
from tests.conftest import base_config

TINY = {
    "MAX_ITEM_LIST_LENGTH": 8, "embedding_size": 16, "n_layers": 1, "n_heads": 2, "inner_size": 32,
    "shared_hidden": [32], "tower_hidden": [16], "load_col": None, "category_field": "class",
    "dropout": 0.0, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "window_batch_size": 16,
}


def build(data_root, dataset="ml-slice", **overrides):
    config = Config(model="MTLRec", dataset=dataset, cmd_args=[],
                    config_dict=base_config(data_root, **{**TINY, **overrides}))
    dataset, train, valid, test, model = build_data_and_model(config)
    return config, dataset, train, valid, test, model


@pytest.fixture(scope="module")
def built(data_root):
    return build(data_root)


# -- windows -----------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [8, 3])
def test_every_training_target_is_counted_once_with_the_longest_context(built, stride):
    config, _, train, _, _, _ = built
    windows = UserWindows.from_dataset(train.dataset, 8, stride)
    assert windows.num_targets == len(train.dataset)  # one RecBole training row per target
    batch = windows.batch(torch.arange(len(windows)))
    mask, lengths = batch[POSITION_MASK], batch["item_length"]
    assert int(mask.sum()) == len(train.dataset)
    assert int(lengths.max()) == 8 and bool((lengths >= 1).all())
    # the (user, target) pairs the windows count are exactly RecBole's training rows
    users = batch["user_id"].unsqueeze(1).expand_as(mask)[mask]
    counted = sorted(zip(users.tolist(), batch[NEXT_PREFIX + "item_id"][mask].tolist()))
    rows = sorted(zip(train.dataset.inter_feat["user_id"].tolist(), train.dataset.inter_feat["item_id"].tolist()))
    assert counted == rows
    if stride < 8:  # overlapping windows: a counted target after the first window has a full context
        later = windows.window_start > windows.starts[windows.window_user]  # not a user's earliest window
        cols = torch.arange(8).expand_as(mask)
        assert later.any() and not (mask & (cols < 8 - stride))[later].any()
        assert bool((lengths[later] == 8).all())


def test_windows_hold_no_validation_or_test_interaction_on_ml100k(tmp_path):
    config = Config(model="MTLRec", dataset="ml-100k", cmd_args=[], config_dict={
        "checkpoint_dir": str(tmp_path), "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 50})
    dataset, train, valid, test, _ = build_data_and_model(config)
    windows = UserWindows.from_dataset(train.dataset, 50)
    held_out = {}
    for part in (valid.dataset, test.dataset):
        for u, i, t in zip(part.inter_feat["user_id"].tolist(), part.inter_feat["item_id"].tolist(),
                           part.inter_feat["timestamp"].tolist()):
            held_out.setdefault(u, []).append((i, t))
    starts, ends = windows.starts.tolist(), windows.ends.tolist()
    times = windows.fields["timestamp"]
    for index, user in enumerate(windows.users.tolist()):
        items = windows.items[starts[index]:ends[index]].tolist()
        last_time = float(times[ends[index] - 1])
        for item, time in held_out[user]:
            assert item not in items  # ml-100k has no repeated (user, item) pair
            assert time >= last_time  # and every held-out interaction comes after the training ones
    assert int((windows.ends - windows.starts).sum()) == len(train.dataset) + len(windows.users)
    assert set(windows.users.tolist()) == set(held_out)


def test_window_batches_reach_the_trainer_and_last_keeps_recbole_rows(built, data_root):
    config, _, train, _, _, model = built
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    loader = trainer.training_loader(train)
    assert isinstance(loader, WindowDataLoader) and loader.step == 16
    first = next(iter(loader))
    assert first[POSITION_MASK].shape == (16, 8) and "age" in first  # user features joined as RecBole does
    config_last, _, train_last, _, _, model_last = build(data_root, train_positions="last")
    trainer_last = get_trainer(config_last["MODEL_TYPE"], config_last["model"])(config_last, model_last)
    assert trainer_last.training_loader(train_last) is train_last


# -- losses at every position ----------------------------------------------------------------
def _prefix(batch: Interaction, row: int, col: int) -> Interaction:
    """Window ``row`` cut after position ``col``, counting that position only."""
    out = {}
    for key in batch.columns:
        value = batch[key][row:row + 1]
        if value.dim() == 2 and value.shape[1] == batch["item_id_list"].shape[1]:
            value = value.clone()
            value[:, col + 1:] = 0
        out[key] = value
    out["item_length"] = torch.tensor([col + 1])
    mask = torch.zeros_like(out[POSITION_MASK])
    mask[0, col] = True
    out[POSITION_MASK] = mask
    return Interaction(out)


@pytest.mark.parametrize("encoder", ["transformer", "gru", "hstu"])
def test_all_position_loss_is_the_mean_of_per_prefix_losses(encoder, data_root):
    config, _, train, _, _, model = build(data_root, encoder=encoder,
                                          task_weights={"sequence": 1.0, "interest": 1.0, "category": 1.0})
    model.eval()
    batch = WindowDataLoader(config, train.dataset, shuffle=False).windows.batch(torch.arange(6))
    batch = train.dataset.join(batch)
    with torch.no_grad():
        together = model.calculate_loss(batch)
        per_prefix = {t: [] for t in model.tasks}
        weights = {t: [] for t in model.tasks}
        category = model.task("category")
        for row, col in batch[POSITION_MASK].nonzero().tolist():
            losses = dict(zip(model.tasks, model.calculate_loss(_prefix(batch, row, col))))
            item = batch["item_id_list"][row, col]
            for task, loss in losses.items():
                if task != "category" or category.is_train_item[item]:
                    per_prefix[task].append(loss)
                    # the category task weighs an item by the inverse of its training frequency
                    weights[task].append(category.item_weight[item] if task == "category" else torch.tensor(1.0))
    assert len(per_prefix["sequence"]) == int(batch[POSITION_MASK].sum()) > 20
    assert 0 < len(per_prefix["category"]) < len(per_prefix["sequence"])  # held-out items never count
    assert len(set(torch.stack(weights["category"]).tolist())) > 1
    for task, loss in zip(model.tasks, together):
        w = torch.stack(weights[task])
        torch.testing.assert_close(loss, (torch.stack(per_prefix[task]) * w).sum() / w.sum(), rtol=1e-5, atol=1e-6)


def test_last_positions_give_the_per_prefix_losses_of_recbole_rows(built):
    _, _, train, _, _, model = built
    model.eval()
    rows = next(iter(train))[torch.arange(12)]
    rows.update(train.dataset.history_lists(rows))  # RecBole's per-prefix rows
    lengths = rows["item_length"]
    at_last = torch.zeros(rows["item_id_list"].shape, dtype=torch.bool)
    at_last[torch.arange(12), lengths - 1] = True
    windows = {key: rows[key] for key in rows.columns}
    windows[POSITION_MASK] = at_last
    for field in ("item_id", "interest_label"):
        column = torch.zeros(at_last.shape, dtype=rows[field].dtype)
        column[at_last] = rows[field]
        windows[NEXT_PREFIX + field] = column
    with torch.no_grad():
        recbole_rows = model.calculate_loss(rows)  # the per-prefix path (train_positions: last)
        as_windows = model.calculate_loss(Interaction(windows))
    for task, a, b in zip(model.tasks, recbole_rows, as_windows):
        if task != "category":  # the category task draws its own items on that path
            torch.testing.assert_close(a, b)


def test_held_out_category_labels_are_never_read_in_training(data_root):
    config, _, train, _, _, model = build(data_root)
    category = model.task("category")
    held_out = torch.cat([category.valid_items, category.test_items])
    category.labels[held_out] = float("nan")  # any read of them would make the loss NaN
    loader = WindowDataLoader(config, train.dataset, shuffle=False)
    for batch in loader:
        losses = model.calculate_loss(batch)
        assert all(torch.isfinite(loss) for loss in losses)


# -- HSTU --------------------------------------------------------------------------------------
def test_hstu_attention_on_a_hand_computed_three_token_case():
    torch.manual_seed(0)
    layer = HSTULayer(dim=2, n_heads=1, dropout=0.0, attn_dropout=0.0, eps=1e-12).eval()
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]]])
    bias = torch.tensor([[0.1, 0.0, 0.0], [0.2, 0.3, 0.0], [-0.4, 0.5, 0.6]]).unsqueeze(0)
    allowed = torch.tril(torch.ones(3, 3, dtype=torch.bool)).view(1, 1, 3, 3)
    av, u = layer.attention(x, allowed, bias)

    silu = lambda z: z / (1 + math.exp(-z))  # noqa: E731
    W, b = layer.f1.weight.tolist(), layer.f1.bias.tolist()
    rows = []
    for token in x[0].tolist():
        mean = sum(token) / 2
        std = math.sqrt(sum((t - mean) ** 2 for t in token) / 2)
        normed = [(t - mean) / std for t in token]  # LayerNorm with weight 1, bias 0
        rows.append([silu(sum(w * n for w, n in zip(W[k], normed)) + b[k]) for k in range(8)])
    U = [r[0:2] for r in rows]
    V = [r[2:4] for r in rows]
    Q = [r[4:6] for r in rows]
    K = [r[6:8] for r in rows]
    expected = []
    for i in range(3):
        out = [0.0, 0.0]
        for j in range(i + 1):  # causal: keys up to i
            a = silu(sum(q * k for q, k in zip(Q[i], K[j])) + float(bias[0, i, j])) / 3  # divided by n = 3
            out = [o + a * v for o, v in zip(out, V[j])]
        expected.append(out)
    torch.testing.assert_close(av[0], torch.tensor(expected))
    torch.testing.assert_close(u[0], torch.tensor(U))


def test_hstu_relative_bias_by_distance_and_log_time_gap():
    bias = RelativeBias(max_len=3, num_buckets=8)
    with torch.no_grad():
        bias.position.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bias.time.copy_(torch.arange(9.0) * 10)
    keys = torch.tensor([[0.0, 10.0, 1000.0]])
    queries = torch.tensor([[10.0, 1000.0, 1000.0]])  # when each position's next interaction happens
    out = bias(3, queries, keys)
    bucket = lambda gap: min(int(math.log(max(1.0, abs(gap))) / 0.301), 8)  # noqa: E731
    for i in range(3):
        for j in range(3):
            expected = [1.0, 2.0, 3.0][max(0, i - j)] + 10 * bucket(float(queries[0, i] - keys[0, j]))
            assert out[0, i, j].item() == pytest.approx(expected)


def test_hstu_trains_with_time_gaps_from_raw_seconds(data_root):
    config, dataset, train, valid, _, model = build(data_root, encoder="hstu", normalize_all=True)
    assert model.time_field == "timestamp" and float(dataset.inter_feat["timestamp"].max()) == 1.0
    assert model.time_scale > 1e6  # RecBole normalised the seconds of ml-100k; the gaps are in seconds again
    batch = next(iter(WindowDataLoader(config, train.dataset)))
    queries, keys = model._times(batch, all_positions=True)
    valid_positions = batch[POSITION_MASK]
    assert bool((queries[valid_positions] >= keys[valid_positions] - 1e-3).all())  # the next interaction comes later
    losses = model.calculate_loss(batch)
    sum(losses).backward()
    assert model.encoder.bias.time.grad is not None and model.encoder.bias.time.grad.abs().sum() > 0


# -- the rating task ---------------------------------------------------------------------------
def test_rating_task_learns_raw_ratings_and_reports_rmse_and_mae(data_root, workdir):
    result = run_recbole_mtl(model="MTLRec", dataset="ml-slice", cmd_args=[], config_dict=base_config(
        data_root, **{**TINY, "tasks": ["sequence", "rating"], "epochs": 2, "valid_metric": "rating_rmse"}))
    test = result["test_result"]
    assert {"rating_rmse", "rating_mae", "ndcg@10"} <= set(test) and result["valid_score_bigger"] is False
    assert not any(k.startswith(("interest_", "category_")) for k in test)
    assert 0 < test["rating_mae"] <= test["rating_rmse"]
    # the labels are raw ratings (1..5, mean ~3.5): predicting 0 would give an RMSE above 3
    assert test["rating_rmse"] < 3.0


def test_rating_label_is_the_raw_rating_even_when_recbole_normalises_it(data_root):
    _, dataset, _, _, _, model = build(data_root, normalize_all=True, tasks=["sequence", "rating"])
    assert float(dataset.inter_feat["rating"].max()) == 1.0  # RecBole's min-max normalisation
    assert set(dataset.inter_feat["rating_label"].unique().tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert model.tasks == ["sequence", "rating"]


# -- category head: neighbours -----------------------------------------------------------------
def test_neighbour_head_on_a_hand_computed_case():
    from recbole_mtl.tasks.category import NeighbourHead
    head = NeighbourHead()
    with torch.no_grad():
        head.log_temperature.fill_(math.log(2.0))
    keys = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])  # cosines with [1, 0]: 1, 0, 1/sqrt(2)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    query = torch.tensor([[5.0, 0.0]])
    w = [math.exp(2.0), math.exp(0.0), math.exp(2.0 / math.sqrt(2.0))]
    expected = torch.tensor([[(w[0] + w[2]) / sum(w), (w[1] + w[2]) / sum(w)]])
    torch.testing.assert_close(head(query, keys, labels), expected)
    # the query's own row left out: only keys 1 and 2 remain
    own = torch.tensor([[True, False, False]])
    expected = torch.tensor([[w[2] / (w[1] + w[2]), 1.0]])
    torch.testing.assert_close(head(query, keys, labels, own), expected)
    # no key left: nothing is read (no NaN)
    torch.testing.assert_close(head(query, keys[:1], labels[:1], own[:, :1]), torch.zeros(1, 2))


def test_a_training_item_never_reads_its_own_categories(built):
    _, _, train, _, _, model = built
    category = model.task("category")
    batch = next(iter(WindowDataLoader(built[0], train.dataset, shuffle=False)))
    with torch.no_grad():
        step = model._step(batch, training=True)
        ids = torch.unique(category._items)
        before = category._probabilities(step, ids, step.item_embedding(ids))
        item, other = ids[0], ids[1:]
        saved = category.labels[item].clone()
        category.labels[item] = 1.0 - saved  # flip every label of one training item
        after = category._probabilities(step, ids, step.item_embedding(ids))
        category.labels[item] = saved
    torch.testing.assert_close(after[0], before[0])  # its own prediction does not move
    assert not torch.allclose(after[1:], before[1:])  # the others read it as a neighbour
    assert len(other) > 0


# -- action input ----------------------------------------------------------------------------------
def test_action_input_is_causal_and_never_reads_the_predicted_outcome(data_root):
    config, _, train, _, _, model = build(data_root, action_input=True)
    model.eval()
    batch = train.dataset.join(WindowDataLoader(config, train.dataset, shuffle=False).windows.batch(torch.arange(4)))
    row = int(batch["item_length"].argmax())
    col = int(batch["item_length"][row]) // 2

    def states(interaction):
        with torch.no_grad():
            seq = interaction["item_id_list"]
            emb = model._lookup(None, seq.flatten(), None)[0].view(*seq.shape, -1)
            return model.encoder(model._encoder_input(interaction, seq, emb), interaction["item_length"])

    base = states(batch)
    flipped = Interaction({k: batch[k].clone() for k in batch.columns})
    flipped["interest_label_list"][row, col] = 1 - flipped["interest_label_list"][row, col]
    changed = states(flipped)
    torch.testing.assert_close(changed[row, :col], base[row, :col])  # earlier positions cannot see it
    assert not torch.allclose(changed[row, col], base[row, col])  # the position after it does
    # the outcome each position predicts (next_interest_label) is never an encoder input
    hidden = Interaction({k: batch[k].clone() for k in batch.columns})
    hidden[NEXT_PREFIX + "interest_label"] = 1 - hidden[NEXT_PREFIX + "interest_label"]
    torch.testing.assert_close(states(hidden), base)


def test_action_input_without_an_interest_label_is_a_clear_error(data_root):
    from recbole_mtl.errors import ConfigError
    with pytest.raises(ConfigError, match="action_input: True .* interest_label_field"):
        build(data_root, action_input=True, interest_label_field=None, tasks=["sequence", "category"])


# -- length-sorted batches -----------------------------------------------------------------------
def test_length_sorted_batches_hold_every_window_once_in_similar_lengths(data_root):
    config, _, train, _, _, _ = build(data_root, window_sort_chunk=4, MAX_ITEM_LIST_LENGTH=50, window_batch_size=8)
    loader = WindowDataLoader(config, train.dataset)
    batches = loader.sorted_batches()
    flat = torch.cat(batches)
    assert sorted(flat.tolist()) == list(range(len(loader.windows)))  # each window once
    assert len(batches) == len(loader)  # as many steps as shuffled batches of the same size
    lengths = loader.windows.lengths()
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches)
    shuffled = list(torch.randperm(len(flat), generator=torch.Generator().manual_seed(0)).split(8))
    assert spread < 0.5 * sum(int(lengths[b].max() - lengths[b].min()) for b in shuffled)
    # a batch is as wide as its longest window, and the epoch order comes from the loader's generator
    batch = next(iter(loader))
    assert batch["item_id_list"].shape[1] == int(batch["item_length"].max()) <= 50
    loader.generator.manual_seed(7)
    first = loader.sorted_batches()
    loader.generator.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(first, loader.sorted_batches()))
    config["window_sort_chunk"] = -1
    with pytest.raises(ConfigError, match="window_sort_chunk must be an integer >= 0"):
        WindowDataLoader(config, train.dataset)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_a_trimmed_batch_gives_the_losses_of_the_full_width_batch(encoder, data_root):
    config, _, train, _, _, model = build(data_root, encoder=encoder, window_sort_chunk=2, MAX_ITEM_LIST_LENGTH=30)
    model.eval()
    loader = WindowDataLoader(config, train.dataset, shuffle=False)
    assert loader.trim
    short = torch.argsort(loader.windows.lengths())[:6]  # the shortest windows: most columns are padding
    wide = train.dataset.join(loader.windows.batch(short))
    narrow = train.dataset.join(loader.windows.batch(short, trim=True))
    assert narrow["item_id_list"].shape[1] < wide["item_id_list"].shape[1] == 30
    with torch.no_grad():
        for a, b in zip(model.calculate_loss(wide), model.calculate_loss(narrow)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hstu_batches_keep_the_full_width_its_attention_scales_by(data_root):
    config, _, train, _, _, _ = build(data_root, encoder="hstu", window_sort_chunk=2, MAX_ITEM_LIST_LENGTH=30)
    loader = WindowDataLoader(config, train.dataset)
    assert not loader.trim
    assert {batch["item_id_list"].shape[1] for batch in loader} == {30}
