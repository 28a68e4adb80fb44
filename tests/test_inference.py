"""Batch inference (recommend, score, categorize) from checkpoints of a tiny MTLRec on a slice of ml-100k.

Expected values are computed another way: histories from the raw atomic files, scores from the
model's own ``full_sort_predict`` / ``predict_tasks`` on hand-built rows, categories from
``item_probabilities``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mtl import checkpoint, inference
from recbole_mtl.cli import main
from recbole_mtl.pipeline import load_data_and_model
from tests.conftest import base_config, write_slice

NAME = "ml-inf"
TINY = {"MAX_ITEM_LIST_LENGTH": 8, "embedding_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
        "shared_hidden": [16], "tower_hidden": [16], "window_batch_size": 256, "category_keys": 512,
        "load_col": None, "category_field": "class", "eval_batch_size": 4096}


def _unlabel(folder: Path, every: int = 9) -> list[str]:
    """Blank the class of every ``every``-th item of the slice; returns their tokens."""
    path = folder / f"{NAME}.item"
    lines = path.read_text().splitlines()
    blanked, out = [], [lines[0]]
    for n, line in enumerate(lines[1:]):
        fields = line.split("\t")
        if n % every == 0:
            fields[3] = ""
            blanked.append(fields[0])
        out.append("\t".join(fields))
    path.write_text("\n".join(out) + "\n")
    return blanked


def _train(root: Path, saved: Path, **extra) -> str:
    from recbole_mtl.quick_start import run_recbole_mtl

    config = base_config(root, **TINY, checkpoint_dir=str(saved), **extra)
    return run_recbole_mtl(model="MTLRec", dataset=NAME, config_dict=config, cmd_args=[])["checkpoint"]


@pytest.fixture(scope="module", autouse=True)
def in_tmp(tmp_path_factory):
    """RecBole's ./log of every model built here lands in a temp folder."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(data root, checkpoint, unlabelled item tokens)`` of a 1-epoch tiny MTLRec on 40 users."""
    root = tmp_path_factory.mktemp("infdata")
    write_slice(root, NAME, max_user=40)
    blanked = _unlabel(root / NAME)
    return root, _train(root, root / "saved"), blanked


@pytest.fixture(scope="module")
def served(trained):
    root, path, _ = trained
    config, model, dataset, _, _, test_data = load_data_and_model(path)
    model.eval()
    return config, model, dataset, test_data


def _run(*args) -> None:
    assert main([*map(str, args), "--no_progress"]) is not None


def _fail(capsys, *args) -> str:
    capsys.readouterr()  # only this command's output
    with pytest.raises(SystemExit) as info:
        main([*map(str, args), "--no_progress"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def _raw_histories(root: Path) -> dict[str, list[tuple[str, float]]]:
    """Each user's (item, rating) in file order, from the raw .inter file."""
    history: dict[str, list[tuple[str, float]]] = {}
    for line in (root / NAME / f"{NAME}.inter").read_text().splitlines()[1:]:
        user, item, rating, _ = line.split("\t")
        history.setdefault(user, []).append((item, float(rating)))
    return history


def _test_histories(served) -> dict[str, list[tuple[int, float]]]:
    """Each user's last ``L`` (item id, liked) of the whole history, from RecBole's own test rows:
    the history before the test interaction, then the test interaction itself."""
    config, model, dataset = served[:3]
    L = config["MAX_ITEM_LIST_LENGTH"]
    rows = served[3]._dataset.inter_feat
    out = {}
    for n in range(len(rows)):
        length = int(rows["item_length"][n])
        items = rows["item_id_list"][n, :length].tolist() + [int(rows["item_id"][n])]
        liked = rows["interest_label_list"][n, :length].tolist() + [float(rows["interest_label"][n])]
        out[dataset.field2id_token["user_id"][int(rows["user_id"][n])]] = list(zip(items, liked))[-L:]
    return out


def _hand_built(served, history, users: list[str], next_items=None) -> Interaction:
    """RecBole's evaluation rows for ``users`` with ``history[user]`` ((item id, liked) pairs) as input."""
    config, model, dataset = served[:3]
    L = config["MAX_ITEM_LIST_LENGTH"]
    items = torch.zeros(len(users), L, dtype=torch.long)
    liked = torch.zeros(len(users), L)
    lengths = []
    for row, user in enumerate(users):
        last = history[user][-L:]
        lengths.append(len(last))
        items[row, :len(last)] = torch.tensor([i for i, _ in last])
        liked[row, :len(last)] = torch.tensor([float(r) for _, r in last])
    nxt = torch.zeros(len(users), dtype=torch.long) if next_items is None else \
        torch.tensor([dataset.field2token_id["item_id"][i] for i in next_items])
    inter = Interaction({"user_id": torch.tensor([dataset.field2token_id["user_id"][u] for u in users]),
                         "item_id": nxt, "item_id_list": items, "item_length": torch.tensor(lengths),
                         "interest_label_list": liked})
    return dataset.join(inter)


# -- recommend ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recommended(trained, tmp_path_factory):
    root, path, _ = trained
    out = tmp_path_factory.mktemp("rec") / "top.tsv"
    _run("recommend", f"--checkpoint={path}", "--topk=7", f"--out={out}", "--batch_size=16")
    return out


def test_recommend_excludes_every_seen_item_and_ranks_by_the_models_scores(trained, served, recommended):
    root, _, _ = trained
    config, model, dataset = served[:3]
    header, rows = _rows(recommended)
    assert header == ["user_id:token", "item_id_list:token_seq", "score_list:float_seq"]
    history = _raw_histories(root)
    assert [r[0] for r in rows] == sorted(history, key=lambda u: dataset.field2token_id["user_id"][u])
    for user, items, scores in rows:
        items, scores = items.split(" "), [float(s) for s in scores.split(" ")]
        assert len(items) == 7 == len(set(items)) == len(scores)
        assert not set(items) & {i for i, _ in history[user]}  # training, validation and test interactions
        assert scores == sorted(scores, reverse=True)
    # the same scores as the model's full_sort_predict on each user's whole history
    some = [rows[0][0], rows[5][0], rows[-1][0]]
    whole = _test_histories(served)
    with torch.no_grad():
        expected = model.full_sort_predict(_hand_built(served, whole, some))
    for row, user in enumerate(some):
        _, items, scores = next(r for r in rows if r[0] == user)
        ids = [dataset.field2token_id["item_id"][i] for i in items.split(" ")]
        torch.testing.assert_close(torch.tensor([float(s) for s in scores.split(" ")]), expected[row, ids],
                                   rtol=1e-5, atol=1e-5)
        unseen = expected[row].clone()
        unseen[[dataset.field2token_id["item_id"][i] for i, _ in history[user]] + [0]] = float("-inf")
        assert set(torch.topk(unseen, 7).indices.tolist()) == set(ids)
    # the last item counts: without it, the scores differ
    with torch.no_grad():
        shorter = {u: whole[u][:-1] for u in some}
        assert not torch.allclose(model.full_sort_predict(_hand_built(served, shorter, some)), expected)


def test_recommend_for_the_users_of_a_file_in_either_format(trained, recommended, tmp_path):
    _, path, _ = trained
    everyone = {r[0]: r for r in _rows(recommended)[1]}
    wanted = list(everyone)[3:6][::-1]
    plain = tmp_path / "users.txt"
    plain.write_text("\n".join(wanted + [wanted[0]]) + "\n\n")  # a repeat and a blank line
    atomic = tmp_path / "users.user"
    atomic.write_text("age:token\tuser_id:token\n" + "".join(f"30\t{u}\n" for u in wanted))
    for users in (plain, atomic):
        out = tmp_path / f"{users.name}.tsv"
        _run("recommend", f"--checkpoint={path}", f"--users={users}", "--topk=7", f"--out={out}")
        got = _rows(out)[1]
        assert [r[:2] for r in got] == [everyone[u][:2] for u in wanted]  # users in file order, each once
        for row, user in zip(got, wanted):  # other batches: the same scores up to float rounding
            torch.testing.assert_close(torch.tensor([float(x) for x in row[2].split(" ")]),
                                       torch.tensor([float(x) for x in everyone[user][2].split(" ")]))


# -- score -----------------------------------------------------------------------------------------
def test_score_adds_the_interest_probability_to_every_row(trained, served, tmp_path):
    root, path, _ = trained
    config, model, dataset = served[:3]
    history = _raw_histories(root)
    users = list(history)[:4]
    pairs = [(u, i) for u in users for i in ("1", "50", "100", history[u][0][0])]
    src = tmp_path / "pairs.inter"
    src.write_text("item_id:token\tnote:token\tuser_id:token\n" + "".join(f"{i}\tx{n}\t{u}\n"
                                                                         for n, (u, i) in enumerate(pairs)))
    out = tmp_path / "scored.tsv"
    _run("score", f"--checkpoint={path}", f"--pairs={src}", f"--out={out}", "--batch_size=5")
    header, rows = _rows(out)
    assert header == ["item_id:token", "note:token", "user_id:token", "interest_score:float"]
    assert [r[:3] for r in rows] == [[i, f"x{n}", u] for n, (u, i) in enumerate(pairs)]
    got = torch.tensor([float(r[3]) for r in rows])
    with torch.no_grad():
        expected = model.predict_tasks(_hand_built(served, _test_histories(served), [u for u, _ in pairs],
                                                   [i for _, i in pairs]))
    torch.testing.assert_close(got, expected["interest"], rtol=1e-5, atol=1e-6)
    assert ((got > 0) & (got < 1)).all() and got.std() > 0


# -- categorize --------------------------------------------------------------------------------
def test_categorize_predicts_the_unlabelled_items_with_the_models_probabilities(trained, served, tmp_path):
    _, path, blanked = trained
    config, model, dataset = served[:3]
    out = tmp_path / "cats.tsv"
    _run("categorize", f"--checkpoint={path}", f"--out={out}")
    header, rows = _rows(out)
    assert header == ["item_id:token", "category_list:token_seq", "probability_list:float_seq"]
    assert sorted(r[0] for r in rows) == sorted(blanked) and len(rows) > 3
    ids = torch.tensor([dataset.field2token_id["item_id"][r[0]] for r in rows])
    with torch.no_grad():
        probs = model.item_probabilities("category", ids)
    names = model.task("category").names
    threshold = float(model.task("category").threshold)
    for row, (item, labels, values) in enumerate(rows):
        labels, values = labels.split(" "), [float(v) for v in values.split(" ")]
        want = sorted({names[c] for c in range(len(names)) if probs[row, c] >= threshold}
                      | {names[int(probs[row].argmax())]})
        assert sorted(labels) == want and values == sorted(values, reverse=True)
        torch.testing.assert_close(torch.tensor(values), probs[row, [names.index(l) for l in labels]],
                                   rtol=1e-5, atol=1e-6)
    _run("categorize", f"--checkpoint={path}", f"--out={out}", "--threshold=1")
    assert all(len(r[1].split(" ")) == 1 for r in _rows(out)[1])  # the top label only
    _run("categorize", f"--checkpoint={path}", f"--out={out}", "--threshold=0")
    assert all(len(r[1].split(" ")) == len(names) for r in _rows(out)[1])


def test_categorize_new_items_from_their_text(trained, tmp_path, monkeypatch, capsys):
    """A new item with the text of an unlabelled item gets that item's categories once its id part is zero."""
    from recbole_mtl.text.embed import embed_items

    root, plain_path, blanked = trained
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    features = tmp_path / "features"
    embed_items(NAME, root / NAME / f"{NAME}.item", features / NAME, text_fields=["movie_title", "release_year"],
                exclude=["class"], show_progress=False)
    path = _train(root, tmp_path / "saved", text_features=True, text_feature_dir=str(features))
    item_lines = (root / NAME / f"{NAME}.item").read_text().splitlines()
    sources = [line.split("\t") for line in item_lines[1:] if line.split("\t")[0] in blanked[:3]]
    new = tmp_path / "new.item"
    new.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                   + "".join(f"new-{f[0]}\t{f[1]}\t{f[2]}\n" for f in sources))
    out = tmp_path / "new.tsv"
    _run("categorize", f"--checkpoint={path}", f"--items={new}", f"--out={out}", "--threshold=0")
    header, rows = _rows(out)
    assert [r[0] for r in rows] == [f"new-{f[0]}" for f in sources]

    config, model, dataset, *_ = load_data_and_model(path)
    model.eval()
    ids = torch.tensor([dataset.field2token_id["item_id"][f[0]] for f in sources])
    table = "sparse.item_collection.embeddings.item_id.weight"
    state = model.state_dict()
    state[table][ids] = 0.0  # the same items without their id part
    model.load_state_dict(state)
    with torch.no_grad():
        probs = model.item_probabilities("category", ids)
    names = model.task("category").names
    for row, (_, labels, values) in enumerate(rows):
        got = dict(zip(labels.split(" "), map(float, values.split(" "))))
        torch.testing.assert_close(torch.tensor([got[n] for n in names]), probs[row], rtol=1e-4, atol=1e-5)

    # an item of the dataset is not a new item; a model without text cannot describe new items
    known = tmp_path / "known.item"
    known.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                     f"{sources[0][0]}\t{sources[0][1]}\t{sources[0][2]}\n")
    err = _fail(capsys, "categorize", f"--checkpoint={path}", f"--items={known}", f"--out={out}")
    assert f"known.item, line 2, field item_id: item '{sources[0][0]}' is in dataset 'ml-inf'" in err
    err = _fail(capsys, "categorize", f"--checkpoint={plain_path}", f"--items={new}", f"--out={out}")
    assert "needs text features (text_features: True) to categorize unseen items" in err


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_ids_and_malformed_lines_name_file_line_and_field(trained, tmp_path, capsys):
    _, path, _ = trained
    out = tmp_path / "o.tsv"
    users = tmp_path / "users.txt"
    users.write_text("1\n99999\n2\nnobody\n")
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--users={users}", f"--out={out}")
    assert "users.txt, line 2, field user_id: unknown user '99999' (1 other unknown user(s): 'nobody' (line 4))" in err
    pairs = tmp_path / "pairs.inter"
    pairs.write_text("user_id:token\titem_id:token\n1\t1\n2\n")
    err = _fail(capsys, "score", f"--checkpoint={path}", f"--pairs={pairs}", f"--out={out}")
    assert "pairs.inter, line 3: 1 field(s), the header has 2" in err
    pairs.write_text("user_id:token\titem_id:token\n1\t1\n2\t777777\n")
    err = _fail(capsys, "score", f"--checkpoint={path}", f"--pairs={pairs}", f"--out={out}")
    assert "pairs.inter, line 3, field item_id: unknown item '777777'" in err
    pairs.write_text("user:token\titem_id:token\n1\t1\n")
    err = _fail(capsys, "score", f"--checkpoint={path}", f"--pairs={pairs}", f"--out={out}")
    assert "pairs.inter, line 1: no 'user_id:token' column in the header" in err
    assert not out.exists()


def test_a_checkpoint_of_other_data_is_refused(trained, tmp_path, capsys):
    root, path, _ = trained
    out = tmp_path / "o.tsv"
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={out}", "--dataset=ml-100k")
    assert "was trained on dataset 'ml-inf', not 'ml-100k'" in err
    changed = tmp_path / "changed"
    shutil.copytree(root / NAME, changed / NAME)
    inter = changed / NAME / f"{NAME}.inter"
    lines = inter.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[2] = "1" if fields[2] != "1" else "2"  # one rating differs
    inter.write_text("\n".join([lines[0], "\t".join(fields)] + lines[2:]) + "\n")
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={out}", f"--data_path={changed}")
    assert "was trained on other files of dataset 'ml-inf'" in err and "ml-inf.inter (other contents)" in err
    inter.write_text("\n".join(lines + ["1\t99999\t3\t881250949"]) + "\n")  # one more item
    with open(changed / NAME / f"{NAME}.item", "a") as f:
        f.write("99999\tA New Film\t1998\tDrama\n")
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={out}", f"--data_path={changed}")
    assert "its 'item_id' table has" in err and "The data changed since training" in err


def test_baseline_missing_task_missing_file_and_unwritable_output(trained, tmp_path, capsys, monkeypatch):
    _, path, _ = trained
    out = tmp_path / "o.tsv"
    state = checkpoint.load_checkpoint(path)
    baseline = dict(state, config={**state["config"], "final": {**state["config"]["final"], "model": "BPR"}})
    checkpoint.atomic_torch_save(baseline, tmp_path / "bpr.pth")
    err = _fail(capsys, "recommend", f"--checkpoint={tmp_path / 'bpr.pth'}", f"--out={out}")
    assert "is of the RecBole model BPR: `recommend` serves the multi-task models" in err
    no_interest = dict(state, config={**state["config"], "final": {**state["config"]["final"],
                                                                   "tasks": ["sequence", "category"]}})
    checkpoint.atomic_torch_save(no_interest, tmp_path / "seq.pth")
    err = _fail(capsys, "score", f"--checkpoint={tmp_path / 'seq.pth'}", f"--pairs={tmp_path / 'x'}", f"--out={out}")
    assert "`score` needs a model with the interest task" in err and "['sequence', 'category']" in err
    err = _fail(capsys, "recommend", f"--checkpoint={tmp_path / 'none.pth'}", f"--out={out}")
    assert "checkpoint not found" in err and "none.pth" in err

    def no_work(*args, **kwargs):
        raise AssertionError("the output path is checked before anything is loaded")

    monkeypatch.setattr(inference, "load", no_work)
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={tmp_path / 'missing' / 'o.tsv'}")
    assert "the folder" in err and "does not exist" in err
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={tmp_path}")
    assert "is a folder" in err
    err = _fail(capsys, "recommend", f"--checkpoint={path}", f"--out={path}")
    assert "is one of the command's inputs" in err


# -- atomic output, sharded checkpoints -------------------------------------------------------------
def test_a_failure_mid_stream_leaves_the_earlier_output_byte_identical(trained, tmp_path, monkeypatch):
    _, path, _ = trained
    out = tmp_path / "top.tsv"
    _run("recommend", f"--checkpoint={path}", f"--out={out}", "--topk=3")
    before = out.read_bytes()
    served = inference.load("recommend", path)
    real, calls = served.model.predict_tasks, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C on the second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(served.model, "predict_tasks", failing)
    with pytest.raises(KeyboardInterrupt):
        inference.recommend(served, out, topk=5, batch_size=4, progress=False)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["top.tsv"]


def _write_rank_files(single: str, stem: Path) -> None:
    """The per-rank files two processes would write for ``single``'s weights: tables cut in row blocks
    (item and user ids) or column blocks (the rest), dense weights in every file."""
    state = checkpoint.load_checkpoint(single)
    tables = {k[len("sparse."):]: v for k, v in state["state_dict"].items() if k.startswith("sparse.")}
    dense = {k: v for k, v in state["state_dict"].items() if not k.startswith("sparse.")}
    for rank in range(2):
        shards = {}
        for key, table in tables.items():
            by_rows = key.endswith(("item_id.weight", "user_id.weight"))
            size = table.shape[0 if by_rows else 1]
            lo, hi = (0, size // 2) if rank == 0 else (size // 2, size)
            part = table[lo:hi] if by_rows else table[:, lo:hi]
            shards[key] = {"size": list(table.shape), "shards": [([lo, 0] if by_rows else [0, lo], part.clone())]}
        sparse = {"rank": rank, "world_size": 2, "plan": [], "tables": shards, "optimizer": {},
                  "replicated_optimizer": {}}
        checkpoint.atomic_torch_save(dict(state, state_dict=dense, other_parameter={"sparse_optimizer": sparse}),
                                     checkpoint.shard_path(str(stem), rank, 2))


def test_a_sharded_checkpoint_serves_what_its_export_serves(trained, recommended, tmp_path):
    _, path, _ = trained
    runs = tmp_path / "run"
    runs.mkdir()
    stem = runs / "MTLRec-sharded.pth"
    _write_rank_files(path, stem)
    written = sorted(p.name for p in runs.iterdir())
    out = tmp_path / "sharded.tsv"
    _run("recommend", f"--checkpoint={stem}", "--topk=7", f"--out={out}")
    assert sorted(p.name for p in runs.iterdir()) == written  # nothing written beside the checkpoint
    exported = checkpoint.export_checkpoint(str(stem), str(tmp_path / "exported.pth"))
    again = tmp_path / "exported.tsv"
    _run("recommend", f"--checkpoint={exported}", "--topk=7", f"--out={again}")
    assert out.read_bytes() == again.read_bytes() == recommended.read_bytes()
    rank_file = tmp_path / "from_rank.tsv"
    _run("recommend", f"--checkpoint={checkpoint.shard_path(str(stem), 1, 2)}", "--topk=7", f"--out={rank_file}")
    assert rank_file.read_bytes() == out.read_bytes()
