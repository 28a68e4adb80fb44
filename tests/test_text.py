"""Item text features: the embed command (offline, real shipped PLM) and MTLRec with PLM vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_mtl.text.embed import TextFeatureError, embed_items, read_item_texts
from recbole_mtl.text.fusion import TextFusion
from tests.conftest import base_config, write_slice
from tests.test_mtlrec import build

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A .item file of six real ml-100k items."""
    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    folder.mkdir()
    from tests.conftest import ML100K

    lines = (ML100K / "ml-100k.item").read_text(encoding="utf-8", errors="ignore").splitlines()[:7]
    (folder / "tiny.item").write_text("\n".join(lines) + "\n")
    return folder


def test_item_texts_use_the_chosen_fields_and_never_the_excluded_one(tiny):
    ids, texts, fields = read_item_texts(tiny / "tiny.item", None, "item_id", exclude=["class"])
    assert ids == ["1", "2", "3", "4", "5", "6"]
    assert fields == ["movie_title", "release_year"]
    assert texts[0] == "movie_title: Toy Story. release_year: 1995"
    with pytest.raises(TextFeatureError, match=r"line 1: text field\(s\) \['plot'\] not in the header"):
        read_item_texts(tiny / "tiny.item", ["plot"], "item_id")


def test_embed_writes_a_deterministic_atomic_file_and_skips_when_up_to_date(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    first = embed_items("tiny", tiny / "tiny.item", out, text_fields=["movie_title"], show_progress=False)
    assert not first["skipped"] and first["items"] == 6 and first["dim"] == 384
    path = Path(first["path"])
    lines = path.read_text().splitlines()
    assert lines[0] == "item_emb_id:token\titem_emb:float_seq"
    vectors = np.array([[float(x) for x in l.split("\t")[1].split()] for l in lines[1:]], dtype=np.float32)
    assert vectors.shape == (6, 384) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)  # all-MiniLM-L6-v2 normalises
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    meta = json.loads(Path(first["sidecar"]).read_text())
    assert meta["text_fields"] == ["movie_title"] and meta["dim"] == 384
    mtime = path.stat().st_mtime_ns
    again = embed_items("tiny", tiny / "tiny.item", out, text_fields=["movie_title"], show_progress=False)
    assert again["skipped"] and path.stat().st_mtime_ns == mtime
    # different fields: recomputed; same text -> the same vectors (deterministic)
    other = embed_items("tiny", tiny / "tiny.item", out, text_fields=["movie_title", "release_year"],
                        show_progress=False)
    assert not other["skipped"]
    path.unlink()
    Path(first["sidecar"]).unlink()
    embed_items("tiny", tiny / "tiny.item", out, text_fields=["movie_title"], show_progress=False)
    redo = np.array([[float(x) for x in l.split("\t")[1].split()] for l in path.read_text().splitlines()[1:]],
                    dtype=np.float32)
    np.testing.assert_allclose(redo, vectors, atol=1e-6)


def test_embed_command_line_offline(data_root, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(REPO / "run_recbole_mtl.py"), "embed", "--dataset", "ml-slice",
                          f"--data_path={data_root}", "--text_fields", "movie_title", f"--text_feature_dir={tmp_path}"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(written)" in out.stdout
    assert (tmp_path / "ml-slice" / "ml-slice.itememb").is_file()
    bad = subprocess.run([sys.executable, str(REPO / "run_recbole_mtl.py"), "embed", "--dataset", "ml-slice",
                          f"--data_path={data_root}", "--text_fields", "plot"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "not in the header" in bad.stderr and "Traceback" not in bad.stderr


def write_random_features(folder: Path, dataset: str, dim: int = 12, fields=("movie_title",), seed: int = 0,
                          corrupt=None) -> None:
    """A small random feature file for every item of the slice (tests need no PLM for the model)."""

    items = [l.split("\t")[0] for l in (folder / f"{dataset}.item").read_text().splitlines()[1:]]
    rng = np.random.default_rng(seed)
    rows = [f"{i}\t" + " ".join(f"{x:.6f}" for x in rng.normal(size=dim)) for i in items]
    if corrupt == "dim":
        rows[3] = rows[3].rsplit(" ", 1)[0]
    elif corrupt == "nan":
        rows[2] = rows[2].split("\t")[0] + "\t" + " ".join(["nan"] * dim)
    elif corrupt == "unknown":
        rows.append("999999\t" + " ".join(["0.1"] * dim))
    elif corrupt == "missing":
        rows = rows[:-1]
    (folder / f"{dataset}.itememb").write_text("item_emb_id:token\titem_emb:float_seq\n" + "\n".join(rows) + "\n")
    (folder / f"{dataset}.itememb.json").write_text(json.dumps(
        {"plm": "random", "text_fields": list(fields), "dim": dim, "items": len(items), "item_file_sha256": "x",
         "format": 1}))


@pytest.fixture
def text_root(tmp_path):
    write_slice(tmp_path)
    return tmp_path


@pytest.mark.parametrize("fusion, adapter", [("add", "linear"), ("concat", "whiten_mlp"), ("gate", "linear")])
def test_mtlrec_uses_text_on_both_sides_and_for_categories(fusion, adapter, text_root):
    write_random_features(text_root / "ml-slice", "ml-slice")
    _, dataset, train, _, _, model = build(text_root, text_features=True, text_fusion=fusion, text_adapter=adapter)
    assert isinstance(model.text, TextFusion) and model.text.vectors.shape == (dataset.item_num, 12)
    losses = model.calculate_loss(next(iter(train)))
    sum(losses).backward()
    assert all(torch.isfinite(l) for l in losses)
    adapter_grad = [p.grad for p in model.text.adapter.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in adapter_grad)
    # an item's scores and categories change with its text alone (cold-start items rely on it)
    model.eval()
    batch = next(iter(train))[:4]
    with torch.no_grad():
        cat_before = model.item_predictions("category", "test")[0].clone()
        model.text.vectors[model.task("category").test_items[0]] += 1e3  # large: fresh layers start small
        cat_after = model.item_predictions("category", "test")[0]
        before = model.predict_tasks(batch)["sequence"][:, 5].clone()
        model.text.vectors[5] += 1e3
        after = model.predict_tasks(batch)["sequence"][:, 5]
    assert not torch.allclose(before, after)
    # a held-out item is no other item's neighbour: only its own categories move
    assert not torch.equal(cat_before[0], cat_after[0]) and torch.equal(cat_before[1:], cat_after[1:])


@pytest.mark.parametrize("corrupt, message", [
    ("dim", r"line 5, field item_emb: 11 values, the sidecar says dimension 12"),
    ("nan", r"line 4, field item_emb: NaN or inf"),
    ("unknown", r"item '999999' is not in the dataset"),
    ("missing", r"no vector for 1 item"),
])
def test_bad_feature_files_give_clear_errors_with_the_fix(corrupt, message, text_root):
    write_random_features(text_root / "ml-slice", "ml-slice", corrupt=corrupt)
    with pytest.raises(TextFeatureError, match=message) as info:
        build(text_root, text_features=True)
    assert "run_recbole_mtl.py embed --dataset ml-slice" in str(info.value)


def test_missing_file_sidecar_mismatch_and_label_leak_are_refused(text_root):
    with pytest.raises(TextFeatureError, match="is missing. Create it with: python run_recbole_mtl.py embed"):
        build(text_root, text_features=True)
    write_random_features(text_root / "ml-slice", "ml-slice", fields=("movie_title",))
    with pytest.raises(TextFeatureError, match=r"made from text fields \['movie_title'\] but the config asks"):
        build(text_root, text_features=True, text_fields=["movie_title", "release_year"])
    write_random_features(text_root / "ml-slice", "ml-slice", fields=("movie_title", "class"))
    with pytest.raises(TextFeatureError, match=r"made from \['class'\], the category task's label field"):
        build(text_root, text_features=True)
    _, _, _, _, _, model = build(text_root, text_features=True, tasks=["sequence", "interest"])
    assert model.text is not None  # without the category task, genre text is a fair input


def test_recbole_loads_the_feature_file_with_its_own_machinery(text_root):
    from recbole.data import create_dataset

    from recbole_mtl.config import Config

    write_random_features(text_root / "ml-slice", "ml-slice")
    config = Config(model="BPR", dataset="ml-slice", cmd_args=[], config_dict={
        **base_config(text_root), "additional_feat_suffix": ["itememb"],
        "load_col": {"inter": ["user_id", "item_id"], "itememb": ["item_emb_id", "item_emb"]},
        "alias_of_item_id": ["item_emb_id"], "preload_weight": {"item_emb_id": "item_emb"}})
    dataset = create_dataset(config)
    weight = dataset.get_preload_weight("item_emb_id")
    assert weight.shape == (dataset.item_num, 12) and np.abs(weight[1:]).sum(1).min() > 0
    # the same rows as recbole_mtl's own loader
    from recbole_mtl.text.features import load_item_vectors

    ours = load_item_vectors(dataset, text_root / "ml-slice", "ml-slice")
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(weight, ours.numpy(), atol=1e-6)


def test_mtlrec_one_epoch_on_ml100k_with_real_text_features(tmp_path, monkeypatch):
    """The full path: embed ml-100k with the shipped PLM (offline), then train MTLRec on it."""
    from recbole_mtl.config import Config
    from recbole_mtl.quick_start import run_recbole_mtl
    from recbole_mtl.data.feature_files import feature_folder
    from recbole_mtl.text.embed import embed_items
    from tests.test_mtlrec import SMALL, _check_ranges

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    settings = {**SMALL, "load_col": None, "epochs": 1, "show_progress": False, "state": "WARNING",
                "text_feature_dir": str(tmp_path / "features"), "checkpoint_dir": str(tmp_path / "saved"),
                "train_batch_size": 2048, "MAX_ITEM_LIST_LENGTH": 5}
    config = Config(model="MTLRec", dataset="ml-100k", config_dict=settings, cmd_args=[])
    made = embed_items("ml-100k", Path(config["data_path"]) / "ml-100k.item", feature_folder(config),
                       text_fields=config["text_fields"], exclude=["class"], show_progress=False)
    assert made["items"] == 1682 and made["dim"] == 384
    result = run_recbole_mtl(model="MTLRec", dataset="ml-100k", cmd_args=[],
                             config_dict={**settings, "text_features": True})
    _check_ranges(result["test_result"], ["sequence", "interest", "category"])
