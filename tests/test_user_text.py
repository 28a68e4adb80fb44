"""User text features: ``embed --users`` (profile text, review text of the training split only) and
the multi-task models reading the user vectors on their user side."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_mtl.config import Config
from recbole_mtl.data.feature_files import feature_folder
from recbole_mtl.errors import TextFeatureError
from recbole_mtl.text.fusion import TextFusion
from recbole_mtl.text.users import cut_to_model, embed_users, training_reviews, user_text
from tests.conftest import write_slice
from tests.test_mtlrec import build, small_config

REPO = Path(__file__).resolve().parents[1]
PROFILE = ["age", "gender", "occupation"]
INTER_ONLY = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "class"]}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    write_slice(tmp_path)
    return tmp_path


def config_for(root: Path, **overrides) -> Config:
    return Config(model="MTLRec", dataset="ml-slice", config_dict=small_config(root, **overrides), cmd_args=[])


def user_tokens(root: Path) -> list[str]:
    return [l.split("\t")[0] for l in (root / "ml-slice" / "ml-slice.user").read_text().splitlines()[1:]]


def write_random_user_features(root: Path, dim: int = 10, fields=PROFILE, review_field=None, seed: int = 0,
                               corrupt=None) -> None:
    """A random user feature file for every user of the slice (model tests need no PLM)."""
    folder = root / "ml-slice"
    users = user_tokens(root)
    rng = np.random.default_rng(seed)
    rows = [f"{u}\t" + " ".join(f"{x:.6f}" for x in rng.normal(size=dim)) for u in users]
    if corrupt == "dim":
        rows[3] = rows[3].rsplit(" ", 1)[0]
    elif corrupt == "nan":
        rows[2] = rows[2].split("\t")[0] + "\t" + " ".join(["nan"] * dim)
    elif corrupt == "text":
        rows[1] = rows[1].split("\t")[0] + "\tone two"
    elif corrupt == "unknown":
        rows.append("999999\t" + " ".join(["0.1"] * dim))
    elif corrupt == "missing":
        rows = rows[:-1]
    (folder / "ml-slice.useremb").write_text("user_emb_id:token\tuser_emb:float_seq\n" + "\n".join(rows) + "\n")
    (folder / "ml-slice.useremb.json").write_text(json.dumps(
        {"plm": "random", "user_text_fields": list(fields), "user_review_field": review_field, "dim": dim,
         "users": len(users), "max_tokens": 256, "user_file_sha256": None, "inter_file_sha256": None,
         "train_split_sha256": None, "eval_args": None, "format": 1}))


# -- texts ---------------------------------------------------------------------------------------
def test_user_text_puts_the_profile_first_then_the_most_recent_reviews_within_the_limit():
    assert user_text("age: 24. gender: M", ["old one", "newer", "newest review"]) == \
        "age: 24. gender: M. reviews: newest review | newer | old one"
    # 4 profile words + 3 review words: the oldest review is cut, the most recent kept whole
    assert user_text("age: 24. gender: M", ["old one", "newer", "newest review"], max_words=7) == \
        "age: 24. gender: M. reviews: newest review | newer"
    assert user_text(None, []) == "(no text)"
    assert user_text(None, ["a b c d"], max_words=2) == "reviews: a b"


def test_texts_are_cut_where_the_language_model_stops_reading():
    from recbole_mtl.text.embed import default_plm, load_plm

    model = load_plm(default_plm())
    long = "reviews: " + " | ".join(f"review number {i} was fine" for i in range(400))
    short = "age: 24. gender: M"
    cut_long, cut_short = cut_to_model([long, short], model)
    assert cut_short == short and long.startswith(cut_long) and len(cut_long) < len(long)
    tokens = model.tokenizer(cut_long, add_special_tokens=True)["input_ids"]
    assert len(tokens) == model.max_seq_length
    np.testing.assert_allclose(model.encode([cut_long]), model.encode([long]), atol=1e-5)  # what the model reads


# -- profile text: the written file ----------------------------------------------------------------
def test_embed_writes_profile_vectors_for_every_user_and_skips_when_up_to_date(root):
    config = config_for(root)
    out = feature_folder(config)
    first = embed_users(config, out, text_fields=PROFILE, show_progress=False)
    assert not first["skipped"] and first["users"] == 120 and first["dim"] == 384
    assert first["texts"]["1"] == "age: 24. gender: M. occupation: technician"
    lines = Path(first["path"]).read_text().splitlines()
    assert lines[0] == "user_emb_id:token\tuser_emb:float_seq" and len(lines) == 121
    assert sorted(l.split("\t")[0] for l in lines[1:]) == sorted(user_tokens(root))
    meta = json.loads(Path(first["sidecar"]).read_text())
    assert meta["user_text_fields"] == PROFILE and meta["user_review_field"] is None and meta["dim"] == 384
    assert meta["user_file_sha256"] and meta["train_split_sha256"] is None
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    mtime = Path(first["path"]).stat().st_mtime_ns
    again = embed_users(config, out, text_fields=PROFILE, show_progress=False)
    assert again["skipped"] and Path(first["path"]).stat().st_mtime_ns == mtime
    other = embed_users(config, out, text_fields=["occupation"], show_progress=False)
    assert not other["skipped"] and other["texts"]["1"] == "occupation: technician"
    # the models read it
    embed_users(config, out, text_fields=PROFILE, show_progress=False)
    _, dataset, _, _, _, model = build(root, user_text_features=True, user_text_fields=PROFILE)
    assert model.user_text.vectors.shape == (dataset.user_num, 384)
    assert model.user_text.vectors[0].abs().sum() == 0 and model.user_text.vectors[1:].norm(dim=1).min() > 0.99
    # the .user file changed since: refused, with the command
    user_file = root / "ml-slice" / "ml-slice.user"
    user_file.write_text(user_file.read_text().replace("technician", "engineer", 1))
    with pytest.raises(TextFeatureError, match=r"another version of .*ml-slice.user.*embed --dataset ml-slice"):
        build(root, user_text_features=True, user_text_fields=PROFILE)


def test_embed_users_command_line(root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def embed(*extra):
        return subprocess.run([sys.executable, str(REPO / "run_recbole_mtl.py"), "embed", "--dataset", "ml-slice",
                               f"--data_path={root}", f"--text_feature_dir={root / 'features'}", *extra],
                              cwd=root, capture_output=True, text=True, env=env, timeout=600)

    out = embed("--users_only", "--user_text_fields", "age", "occupation")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "120 users x 384 dims (written)" in out.stdout and "items" not in out.stdout
    assert (root / "features" / "ml-slice" / "ml-slice.useremb").is_file()
    assert not (root / "features" / "ml-slice" / "ml-slice.itememb").exists()
    bad = embed("--users_only", "--user_text_fields", "hobby")
    assert bad.returncode == 2 and "not in the header" in bad.stderr and "Traceback" not in bad.stderr
    none = embed("--users_only", "--user_text_fields")
    assert none.returncode == 2 and "no user text" in none.stderr


# -- review text: the training split only -----------------------------------------------------------
def write_reviews(root: Path) -> dict[tuple[str, str], str]:
    """Give the slice a review field (one unique text per interaction), shuffle the rows so that file
    order is not time order, and add a user with three interactions. Returns (user, item) -> text."""
    path = root / "ml-slice" / "ml-slice.inter"
    header, *rows = path.read_text().splitlines()
    rows = [r.split("\t") for r in rows]
    items = sorted({r[1] for r in rows})[:3]
    rows += [["9999", items[0], "5", "100"], ["9999", items[1], "4", "200"], ["9999", items[2], "3", "300"]]
    random.Random(0).shuffle(rows)
    texts = {(r[0], r[1]): f"user {r[0]} on item {r[1]} said u{r[0]}i{r[1]}" for r in rows}
    path.write_text(header + "\treview:token_seq\n" + "\n".join("\t".join(r + [texts[(r[0], r[1])]]) for r in rows)
                    + "\n")
    return texts


def split_pairs(loader) -> set[tuple[str, str]]:
    ds = loader._dataset
    uid, iid = ds.field2id_token[ds.uid_field], ds.field2id_token[ds.iid_field]
    users, items = ds.inter_feat[ds.uid_field].numpy(), ds.inter_feat[ds.iid_field].numpy()
    return set(zip(uid[users].tolist(), iid[items].tolist()))


def test_review_text_reads_only_the_training_interactions_of_the_models_split(root):
    from recbole_mtl.data.windows import UserWindows

    texts = write_reviews(root)
    config = config_for(root, load_col=INTER_ONLY, user_review_field="review", user_text_fields=[])
    _, reviews, digest = training_reviews(config, "review")
    # the models' own split, built the way they build it
    _, dataset, train, valid, test, model = build(root, load_col=INTER_ONLY)
    windows = UserWindows.from_dataset(train._dataset, 10)
    uid_tok, iid_tok = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    held_out = split_pairs(valid) | split_pairs(test)
    assert len(held_out) > 200
    for k, u in enumerate(windows.users.numpy()):
        user = str(uid_tok[u])
        seq = iid_tok[windows.items[windows.starts[k]:windows.ends[k]].numpy()].tolist()
        assert reviews[user] == [texts[(user, i)] for i in seq]  # every training interaction, oldest first
    for user, own in reviews.items():
        for item in [(u, i) for (u, i) in held_out if u == user]:
            assert texts[item] not in own
    assert reviews["9999"] == [texts[("9999", i)] for i in sorted(i for (u, i) in texts if u == "9999")][:2]
    # the construction bites: a split by file order would hand validation/test text to the users
    by_file = {}
    for line in (root / "ml-slice" / "ml-slice.inter").read_text().splitlines()[1:]:
        user, item = line.split("\t")[:2]
        by_file.setdefault(user, []).append((user, item))
    naive = {pair for pairs in by_file.values() for pair in pairs[:-2]}
    assert naive & held_out
    # what embed writes: most recent first, nothing held out, and the split checked at load time
    made = embed_users(config, feature_folder(config), text_fields=[], review_field="review", show_progress=False)
    meta = json.loads(Path(made["sidecar"]).read_text())
    assert meta["train_split_sha256"] == digest and meta["inter_file_sha256"] and meta["user_text_fields"] == []
    for user, text in made["texts"].items():
        assert not any(texts[pair] in text for pair in held_out if pair[0] == user)
        if reviews.get(user):
            assert text.startswith("reviews: " + reviews[user][-1])
    _, _, _, _, _, model = build(root, load_col=INTER_ONLY, user_text_features=True, user_review_field="review",
                                 user_text_fields=[])
    assert model.user_text is not None
    # another split (only the last interaction held out): its training part holds this split's
    # validation interactions, so the file is refused
    with pytest.raises(TextFeatureError, match="another training split than this run's"):
        build(root, load_col=INTER_ONLY, user_text_features=True, user_review_field="review", user_text_fields=[],
              eval_args={"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user", "mode": "full"})
    with pytest.raises(TextFeatureError, match=r"user_review_field 'review' but the config sets None"):
        build(root, load_col=INTER_ONLY, user_text_features=True, user_text_fields=[])
    # training never loads the review column (only embed reads it)
    _, dataset, _, _, _, _ = build(root, user_review_field="review")
    assert "review" not in dataset.inter_feat and "review_list" not in dataset.inter_feat


# -- loading checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("corrupt, message", [
    ("dim", r"ml-slice.useremb, line 5, field user_emb: 9 values, the sidecar says dimension 10"),
    ("nan", r"line 4, field user_emb: NaN or inf"),
    ("text", r"line 3, field user_emb: not a list of numbers"),
    ("unknown", r"line 122, field user_emb_id: user '999999' is not in the dataset"),
    ("missing", r"no vector for 1 user"),
])
def test_bad_user_files_give_clear_errors_with_the_fix(corrupt, message, root):
    write_random_user_features(root, corrupt=corrupt)
    with pytest.raises(TextFeatureError, match=message) as info:
        build(root, user_text_features=True)
    assert "run_recbole_mtl.py embed --dataset ml-slice --users_only" in str(info.value)


def test_missing_file_and_sidecar_mismatches_are_refused(root):
    with pytest.raises(TextFeatureError, match=r"useremb is missing. Create it with: python run_recbole_mtl.py "
                                               r"embed --dataset ml-slice --users_only"):
        build(root, user_text_features=True)
    write_random_user_features(root, fields=["occupation"])
    with pytest.raises(TextFeatureError, match=r"made from user text fields \['occupation'\] but the config asks "
                                               r"for \['age', 'gender'\].*--user_text_fields age gender"):
        build(root, user_text_features=True, user_text_fields=["age", "gender"])
    build(root, user_text_features=True, user_text_fields=["occupation"])  # the fields it was made from
    with pytest.raises(TextFeatureError, match="made with plm 'random' but the config asks for 'other'"):
        build(root, user_text_features=True, user_text_fields=["occupation"], plm="other")
    side = root / "ml-slice" / "ml-slice.useremb.json"
    side.write_text("{")
    with pytest.raises(TextFeatureError, match="is unreadable"):
        build(root, user_text_features=True)


# -- the models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name, fusion, adapter", [("MTLRec", "add", "linear"), ("MMoE", "gate", "linear"),
                                                          ("PLE", "concat", "whiten_mlp")])
def test_a_users_scores_change_with_their_user_text_alone(model_name, fusion, adapter, root):
    from recbole_mtl.pipeline import build_data_and_model

    write_random_user_features(root)
    config = Config(model=model_name, dataset="ml-slice", cmd_args=[], config_dict=small_config(
        root, user_text_features=True, user_text_fusion=fusion, user_text_adapter=adapter))
    dataset, train, _, test, model = build_data_and_model(config)
    assert isinstance(model.user_text, TextFusion) and model.user_text.vectors.shape == (dataset.user_num, 10)
    losses = model.calculate_loss(next(iter(train)))
    sum(losses).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.user_text.adapter.parameters())
    model.eval()
    batch = next(iter(test))[0][:6]
    users = batch["user_id"]
    with torch.no_grad():
        before = model.predict_tasks(batch)
        model.user_text.vectors[users[0]] += 1e6  # large: fresh layers start small (std 0.02)
        after = model.predict_tasks(batch)
    mine = users == users[0]
    for task in ("sequence", "interest"):
        assert not torch.equal(before[task][mine], after[task][mine]), task
        torch.testing.assert_close(before[task][~mine], after[task][~mine])


def test_the_flag_off_changes_nothing(root):
    torch.manual_seed(0)
    _, _, train, _, test, plain = build(root)
    write_random_user_features(root)
    _, _, _, _, _, off = build(root, user_text_features=False)
    assert off.user_text is None and not any(k.startswith("user_text") for k in off.state_dict())
    assert plain.state_dict().keys() == off.state_dict().keys()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, off.state_dict()[key])
    batch = next(iter(train))
    torch.manual_seed(1)
    plain_losses = plain.calculate_loss(batch)
    torch.manual_seed(1)
    off_losses = off.calculate_loss(batch)
    for a, b in zip(plain_losses, off_losses):
        torch.testing.assert_close(a, b)
    plain.eval(), off.eval()
    with torch.no_grad():
        interaction = next(iter(test))[0]
        torch.testing.assert_close(plain.predict_tasks(interaction)["sequence"],
                                   off.predict_tasks(interaction)["sequence"])


def test_recbole_loads_the_user_file_with_its_own_machinery(root):
    from recbole.data import create_dataset

    from recbole_mtl.text.features import read_vectors
    from tests.conftest import base_config

    write_random_user_features(root)
    config = Config(model="BPR", dataset="ml-slice", cmd_args=[], config_dict={
        **base_config(root), "additional_feat_suffix": ["useremb"],
        "load_col": {"inter": ["user_id", "item_id"], "useremb": ["user_emb_id", "user_emb"]},
        "alias_of_user_id": ["user_emb_id"], "preload_weight": {"user_emb_id": "user_emb"}})
    dataset = create_dataset(config)
    weight = dataset.get_preload_weight("user_emb_id")
    assert weight.shape == (dataset.user_num, 10) and np.abs(weight[1:]).sum(1).min() > 0
    ours = read_vectors(root / "ml-slice" / "ml-slice.useremb", 10, dataset, "user_id", "user_emb_id", "user_emb",
                        "fix", "user")
    np.testing.assert_allclose(weight, ours.numpy(), atol=1e-6)
