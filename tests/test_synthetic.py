"""dataset/make_synthetic.py: valid atomic files, deterministic, streamed, learnable structure."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recbole_mtl.quick_start import run_recbole_mtl
from tests.conftest import base_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "dataset" / "make_synthetic.py"


@functools.lru_cache(maxsize=None)
def _module():
    spec = importlib.util.spec_from_file_location("make_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generate(out: Path, *extra: str, users=200, items=300, interactions=6000, seed=3) -> dict:
    return _module().main(["--users", str(users), "--items", str(items), "--interactions", str(interactions),
                           "--seed", str(seed), "--out", str(out), "--quiet", *extra])


def _read(folder: Path, suffix: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{folder.name}.{suffix}", sep="\t", dtype=str)


def test_files_have_typed_headers_and_the_requested_rows(tmp_path):
    out = tmp_path / "synth"
    counts = _generate(out)
    assert (counts["inter"], counts["item"], counts["user"]) == (6000, 300, 200)
    inter, item, user = _read(out, "inter"), _read(out, "item"), _read(out, "user")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert list(item.columns) == ["item_id:token", "categories:token_seq", "title:token_seq"]
    assert list(user.columns) == ["user_id:token", "segment:token"]
    assert len(inter) == 6000 and len(item) == 300 and len(user) == 200
    assert set(inter["rating:float"].astype(int)) <= {1, 2, 3, 4, 5}
    assert inter["timestamp:float"].astype(np.int64).is_monotonic_increasing
    assert set(inter["item_id:token"].astype(int)) <= set(range(1, 301))
    assert set(inter["user_id:token"].astype(int)) <= set(range(1, 201))
    n_cats = item["categories:token_seq"].str.split(" ").map(len)
    assert n_cats.between(1, 3).all() and n_cats.nunique() == 3
    # every category word of an item appears in its title (text correlated with categories)
    for cats, title in zip(item["categories:token_seq"], item["title:token_seq"]):
        assert {"topic" + c[1:] for c in cats.split(" ")} <= set(title.split(" "))


def test_same_seed_same_files(tmp_path, monkeypatch):
    monkeypatch.setattr(_module(), "CHUNK", 1000)  # several chunks
    _generate(tmp_path / "a" / "synth")
    _generate(tmp_path / "b" / "synth")
    _generate(tmp_path / "c" / "synth", seed=4)
    for suffix in ("inter", "item", "user"):
        a = (tmp_path / "a" / "synth" / f"synth.{suffix}").read_bytes()
        assert a == (tmp_path / "b" / "synth" / f"synth.{suffix}").read_bytes()
    assert (tmp_path / "a" / "synth" / "synth.inter").read_bytes() != (tmp_path / "c" / "synth" / "synth.inter").read_bytes()


def test_categories_and_ratings_follow_the_latent_factors(tmp_path):
    module = _module()
    _generate(tmp_path / "synth", items=2000, interactions=20000)
    item = _read(tmp_path / "synth", "item")
    factors = module.item_factors(2000, 8, 3)
    projection = module.category_projection(8, 20, 3)
    first = item["categories:token_seq"].str.split(" ").str[0].str[1:].astype(int).to_numpy()
    # the first category is the noisy argmax of the projected factor: far above chance (1/20)
    assert (first == (factors @ projection).argmax(1)).mean() > 0.5
    inter = _read(tmp_path / "synth", "inter")
    users = module.user_factors(200, 8, 3)
    u = inter["user_id:token"].astype(int).to_numpy() - 1
    i = inter["item_id:token"].astype(int).to_numpy() - 1
    score = (users[u] * factors[i]).sum(1)
    assert np.corrcoef(score, inter["rating:float"].astype(float))[0, 1] > 0.4


def test_bad_arguments_are_refused_with_the_flag_named(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--users", "0", "--items", "10", "--interactions", "5",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--users must be >= 1" in proc.stderr


def test_the_recipe_trains_mtlrec_with_every_task(tmp_path, workdir):
    _generate(tmp_path / "synthetic", users=500, items=200, interactions=15000)  # 500 test interactions
    config = base_config(tmp_path, MAX_ITEM_LIST_LENGTH=10, embedding_size=16, n_layers=1, n_heads=1,
                         inner_size=32, shared_hidden=[16], tower_hidden=[16], category_batch_size=32,
                         window_batch_size=64, epochs=10, valid_metric="interest_auc")  # ~20 steps an epoch
    del config["load_col"]  # the recipe's load_col applies
    result = run_recbole_mtl(model="MTLRec", dataset="synthetic", config_dict=config, cmd_args=[])
    test = result["test_result"]
    assert {"ndcg@10", "interest_auc", "category_micro_f1"} <= set(test)
    assert test["interest_auc"] > 0.55  # ratings follow the factors the ids can learn
