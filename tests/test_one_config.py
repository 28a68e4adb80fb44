"""One dataset config for every model (issue #16): MTLRec and RecBole's general, sequential and
context-aware models run from the same dataset YAML, on fields not named as ml-100k's, with no other
flag; a model/data mismatch and RecBole's own config errors are one line with the fix; a baseline run
alone says which split it is scored on; ``benchmark`` scores every model on one split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from recbole_mtl.cli import main
from recbole_mtl.config import Config

CATEGORIES = ["Skin Care", "Hair Care", "Make Up", "Fragrance"]
USERS, ITEMS, PER_USER = 40, 36, 8


def _item(u: int, k: int) -> int:
    return (3 * u + 5 * k + (u * k) % 7) % ITEMS


def _stars(u: int, item: int) -> int:
    return 1 + (7 * u + item) % 5


def write_amazon_raw(folder: Path) -> tuple[Path, Path]:
    """An Amazon-style dump: reviews (reviewerID, asin, overall, unixReviewTime) and metadata
    (title, categories, brand, price, description)."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews, meta = folder / "reviews.jsonl", folder / "meta.jsonl"
    with open(reviews, "w") as f:
        for u in range(USERS):
            for k in range(PER_USER):
                item = _item(u, k)
                f.write(json.dumps({"reviewerID": f"A{u:04d}", "asin": f"B{item:03d}", "overall": _stars(u, item),
                                    "unixReviewTime": 1400000000 + 1000 * u + k, "reviewText": "Nice."}) + "\n")
    with open(meta, "w") as f:
        for i in range(ITEMS):
            f.write(json.dumps({"asin": f"B{i:03d}", "title": f"Item {i}", "brand": f"Brand {i % 3}",
                                "price": f"${i}.99", "categories": [["Beauty", CATEGORIES[i % 4]]],
                                "description": ["Gentle.", "For every day."]}) + "\n")
    return reviews, meta


def write_renamed(root: Path, name: str = "shop") -> Path:
    """Atomic files whose fields are not ml-100k's (reviewer, asin, stars, unix_time; categories),
    and the dataset YAML that names them: no load_col, no threshold, nothing model-specific."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.inter", "w") as f:
        f.write("reviewer:token\tasin:token\tstars:float\tunix_time:float\n")
        for u in range(USERS):
            for k in range(PER_USER):
                item = _item(u, k)
                f.write(f"A{u:04d}\tB{item:03d}\t{_stars(u, item)}\t{1400000000 + 1000 * u + k}\n")
    with open(folder / f"{name}.item", "w") as f:
        f.write("asin:token\ttitle:token_seq\tbrand:token\tprice:float\tcategories:token_seq\n")
        for i in range(ITEMS):
            f.write(f"B{i:03d}\tItem {i}\tBrand_{i % 3}\t{i}.99\tBeauty {CATEGORIES[i % 4].replace(' ', '_')}\n")
    yaml = folder / f"{name}.yaml"
    yaml.write_text("USER_ID_FIELD: reviewer\nITEM_ID_FIELD: asin\nRATING_FIELD: stars\nTIME_FIELD: unix_time\n"
                    "interest_label_field: stars\ninterest_threshold: 4.0\nrating_label_field: stars\n"
                    "category_field: categories\ntext_fields: [title]\n")
    return yaml


@pytest.fixture
def renamed(tmp_path, monkeypatch):
    """(data_path, the dataset YAML), run from a temp folder (RecBole writes ./log there)."""
    monkeypatch.chdir(tmp_path)
    yaml = write_renamed(tmp_path / "data")
    return tmp_path / "data", yaml


def _flags(data: Path, yaml: Path) -> list[str]:
    return ["--dataset=shop", f"--data_path={data}", f"--config_files={yaml}"]


TINY = ["--epochs=1", "--show_progress=False", "--state=ERROR", "--embedding_size=16", "--hidden_size=16",
        "--n_layers=1", "--MAX_ITEM_LIST_LENGTH=10"]


def _config(model: str, data: Path, yaml: Path, **extra) -> Config:
    return Config(model=model, dataset="shop", config_file_list=[str(yaml)],
                  config_dict={"data_path": str(data), **extra}, cmd_args=[])


def _fails(argv, capsys) -> str:
    """The one line a failing command prints (exit status 2, no traceback)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note: ")]  # the split note
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# -- every model from the same dataset YAML, with no other flag ---------------------------------------
@pytest.mark.parametrize("model", ["DeepFM", "DIN"])
def test_context_aware_and_pointwise_models_run_on_renamed_fields(model, renamed, capsys):
    data, yaml = renamed
    result = main([f"--model={model}", *_flags(data, yaml), *TINY])
    test = dict(result["test_result"])
    assert 0.0 <= test["auc"] <= 1.0 and test["logloss"] > 0
    config = _config(model, data, yaml)
    # the ids and time of the renamed .inter, and the item features but the long text field
    assert config["load_col"]["inter"][:2] == ["reviewer", "asin"] and "unix_time" in config["load_col"]["inter"]
    assert config["load_col"]["item"] == ["asin", "brand", "price", "categories"]
    if model == "DeepFM":  # no label field in the data: the interest label is the 0/1 label
        assert config["threshold"] == {"stars": 4.0}
    else:  # DIN trains on RecBole's sampled negatives; without them (benchmark) it gets the same label
        assert config["threshold"] is None
        assert _config(model, data, yaml, train_neg_sample_args=None)["threshold"] == {"stars": 4.0}


def test_sasrec_runs_with_no_extra_flag(renamed, capsys):
    data, yaml = renamed
    result = main(["--model=SASRec", *_flags(data, yaml), *TINY])
    assert 0.0 <= dict(result["test_result"])["ndcg@10"] <= 1.0
    config = _config("SASRec", data, yaml)
    assert config["train_neg_sample_args"]["distribution"] == "none"  # RecBole's form of None: no negatives
    assert "unix_time" in config["load_col"]["inter"]
    bpr_loss = _config("SASRec", data, yaml, loss_type="BPR")  # a BPR loss keeps RecBole's sampled negatives
    assert bpr_loss["train_neg_sample_args"]["distribution"] == "uniform"


def test_general_model_loads_the_renamed_ids(renamed):
    data, yaml = renamed
    config = _config("BPR", data, yaml)
    assert config["load_col"] == {"inter": ["reviewer", "asin", "stars", "unix_time"]}
    assert config["RATING_FIELD"] == "stars"


def test_what_the_user_sets_is_kept(renamed):
    data, yaml = renamed
    mine = {"inter": ["reviewer", "asin", "stars", "unix_time"], "item": ["asin", "brand"]}
    config = _config("DeepFM", data, yaml, load_col=mine, threshold={"stars": 5})
    assert config["load_col"] == mine and config["threshold"] == {"stars": 5}
    off = _config("BPR", data, yaml, derive_model_config=False)
    assert off["load_col"] == {"inter": ["user_id", "item_id"]}  # RecBole's default, left alone


def test_recbole_models_on_bundled_ml100k_keep_recboles_presets():
    deepfm = Config(model="DeepFM", dataset="ml-100k", cmd_args=[])
    assert deepfm["threshold"] == {"rating": 4} and deepfm["load_col"]["item"] == ["item_id", "release_year", "class"]
    sasrec = Config(model="SASRec", dataset="ml-100k", cmd_args=[])
    assert sasrec["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    assert sasrec.derived == {"train_neg_sample_args": None}


# -- mismatches: one line, the key and the fix ---------------------------------------------------------
MISMATCHES = [
    ("context model without a label", ["--model=DeepFM", "--interest_label_field=None"],
     ["DeepFM (a context-aware RecBole model) learns from 0/1 labels", "no interest_label_field is set",
      "fields: reviewer, asin, stars, unix_time", "threshold: {field: value}"]),
    ("context model with a label that is not a number", ["--model=DeepFM", "--interest_label_field=asin"],
     ["interest_label_field is 'asin'", "token field, not a float one"]),
    ("sequential model, load_col without the time field", ["--model=SASRec", "--load_col={'inter':['reviewer','asin']}"],
     ["load_col leaves out 'unix_time' of shop.inter", "SASRec (a sequential RecBole model)",
      "load_col: {inter: [reviewer, asin, unix_time]}"]),
    ("load_col without the user id", ["--model=BPR", "--load_col={'inter':['asin','stars']}"],
     ["load_col leaves out 'reviewer'", "USER_ID_FIELD", "load_col: {inter: [asin, stars, reviewer]}"]),
    ("CE loss with negatives", ["--model=SASRec", "--train_neg_sample_args={'distribution':'uniform','sample_num':1}"],
     ["SASRec's loss_type is CE", "--train_neg_sample_args=None", "--loss_type=BPR"]),
    ("RecBole's own config error", ["--model=DeepFM", "--metrics=['AUC','Recall']"],
     ["RecBole rejected the config of DeepFM", "Ranking metrics and value metrics", "Fix: set metrics"]),
    ("RecBole's own config error: full ranking with value metrics", ["--model=DeepFM", "--eval_args={'mode':'full'}"],
     ["RecBole rejected the config of DeepFM", "eval_args mode to labeled"]),
    ("a dict key given as something else", ["--model=DeepFM", "--threshold=4"],
     ["config key threshold must be a dict such as {rating: 4}, or None; got 4"]),
    ("RecBole's data error without the derivation", ["--model=BPR", "--derive_model_config=False"],
     ["RecBole loaded shop.inter without USER_ID_FIELD 'reviewer' and ITEM_ID_FIELD 'asin'", "load_col['inter']",
      "drop derive_model_config: False"]),
]


@pytest.mark.parametrize("case,argv,expected", MISMATCHES, ids=[c[0] for c in MISMATCHES])
def test_model_data_mismatch_is_one_line_with_the_fix(case, argv, expected, renamed, capsys):
    data, yaml = renamed
    err = _fails([*argv, *_flags(data, yaml), *TINY], capsys)
    assert err.startswith("recbole-mtl: error: ")
    for piece in expected:
        assert piece in err, f"{case}: {piece!r} not in {err!r}"


# -- a baseline alone says its split; benchmark gives every model the same one ---------------------------
def test_baseline_alone_says_its_split_and_points_to_benchmark(renamed, capsys):
    data, yaml = renamed
    main(["--model=BPR", *_flags(data, yaml), *TINY])
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1, err
    note = notes[0]
    assert "BPR (a general RecBole model) is evaluated on a random 80/10/10 split of each user's interactions" in note
    assert "MTLRec, MMoE and PLE use leave-one-out by time, so figures from separate runs are not comparable" in note
    assert f"benchmark --dataset=shop --models=MTLRec,BPR --data_path={data} --config_files={yaml}" in note


def test_split_note_says_when_the_split_is_the_multi_task_models_own(renamed):
    from recbole_mtl.derive import split_note

    data, yaml = renamed
    sasrec = split_note(_config("SASRec", data, yaml))
    assert "leave-one-out by time" in sasrec and "the split MTLRec, MMoE and PLE use too" in sasrec
    assert "benchmark --dataset=shop --models=MTLRec,SASRec" in sasrec
    din = split_note(_config("DIN", data, yaml))
    assert "its test mode uni100 is not their interest task's" in din and "not comparable" in din


def test_split_descriptions():
    from recbole_mtl.derive import describe_split

    loo = describe_split({"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"})
    assert loo == "leave-one-out by time (eval_args: split {LS: valid_and_test}, order TO, group_by user, mode full)"
    assert describe_split({"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": None,
                           "mode": {"valid": "labeled", "test": "labeled"}}).startswith(
        "a random 80/10/10 split of all interactions (eval_args: split {RS: [0.8, 0.1, 0.1]}, order RO, mode labeled)")


def test_amazon_dump_convert_validate_benchmark_every_model_on_one_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    reviews, meta = write_amazon_raw(tmp_path / "raw")
    data, out = tmp_path / "dataset", tmp_path / "results"
    main(["convert", "--format", "amazon", "--input", str(reviews), str(meta), "--out", str(data),
          "--name", "beauty", "--quiet"])
    yaml = data / "beauty" / "beauty.yaml"
    flags = ["--dataset=beauty", f"--data_path={data}", f"--config_files={yaml}"]
    for model in ("MTLRec", "SASRec", "DeepFM"):
        assert main(["validate", f"--model={model}", *flags]) == []
    capsys.readouterr()
    summary = main(["benchmark", *flags, f"--out={out}", "--models=MTLRec,SASRec,DeepFM", "--seeds=1",
                    "--epochs=1", "--max_len=10", "--embedding_size=16", "--hidden_size=16", "--n_layers=1"])
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    for log in (out / "logs").iterdir():
        assert "Traceback" not in log.read_text(), log
    rows = {r["model"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert set(rows) == {"MTLRec", "SASRec", "DeepFM"}
    for name, metrics in {"MTLRec": ["ndcg@10", "recall@10", "interest_auc", "interest_f1", "category_micro_f1"],
                          "SASRec": ["ndcg@10", "recall@10", "hit@10"],
                          "DeepFM": ["interest_auc", "interest_logloss", "interest_f1"]}.items():
        for metric in metrics:
            assert rows[name].get(metric) not in (None, ""), (name, metric)
            assert float(rows[name][metric]) >= 0.0
    splits = {json.dumps(json.loads(r["split"]), sort_keys=True) for r in rows.values()}
    assert splits == {json.dumps({"group_by": "user", "order": "TO", "split": {"LS": "valid_and_test"}},
                                 sort_keys=True)}  # leave-one-out by time, the same for every model
    assert set(summary["sequence"]) == {"MTLRec", "SASRec"} and set(summary["interest"]) == {"MTLRec", "DeepFM"}
    text = (out / "summary.md").read_text()
    assert "Every run reads `beauty.yaml`" in text and "| DeepFM |" in text
