"""The benchmark command end to end on a small slice: CSV, markdown, chart, and resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from recbole_mtl.benchmark import parse_spec, select, stopped_by
from recbole_mtl.errors import ConfigError


def test_model_specs_say_which_tasks_each_model_competes_on():
    assert parse_spec("MTLRec").tasks == ("sequence", "interest", "category")
    assert parse_spec("MTLRec@category").tasks == ("category",)
    assert parse_spec("SASRec").tasks == ("sequence",) and parse_spec("BPR").tasks == ("sequence",)
    assert parse_spec("DeepFM").tasks == ("interest",) and parse_spec("DIN").tasks == ("interest",)
    assert parse_spec("CategoryMLP").tasks == ("category",)
    with pytest.raises(ConfigError, match="unknown task"):
        parse_spec("MTLRec@genre")
    assert parse_spec("MMoE:pcgrad").balance == "pcgrad" and parse_spec("PLE@sequence+interest").tasks == ("sequence", "interest")
    with pytest.raises(ConfigError, match="unknown balancing method"):
        parse_spec("MMoE:gradnrom")
    with pytest.raises(ConfigError, match="multi-task models only"):
        parse_spec("SASRec@sequence")


def test_learning_rate_is_chosen_on_validation_per_model_seed_and_fold():
    rows = [{"model": "M", "seed": 1, "fold": 0, "learning_rate": lr, "valid_metric": "NDCG@10", "valid_score": v}
            for lr, v in ((0.1, 0.2), (0.01, 0.5), (0.001, 0.4))]
    rows += [{"model": "D", "seed": 1, "fold": 0, "learning_rate": lr, "valid_metric": "interest_logloss",
              "valid_score": v} for lr, v in ((0.1, 0.6), (0.01, 0.5))]
    picked = {(r["model"], r["learning_rate"]) for r in select(rows) if r["selected"]}
    assert picked == {("M", 0.01), ("D", 0.01)}  # LogLoss: smaller is better


def test_benchmark_command_writes_csv_markdown_chart_and_resumes(tmp_path, capsys):
    from recbole_mtl.cli import main
    from tests.conftest import write_slice

    write_slice(tmp_path / "data", max_user=40)
    out = tmp_path / "out"
    argv = ["benchmark", "--dataset=ml-slice", f"--data_path={tmp_path / 'data'}", f"--out={out}",
            "--models=MTLRec,SASRec,DIN,CategoryMLP", "--seeds=1", "--epochs=1", "--max_len=10",
            "--category_field=class", "--embedding_size=16", "--n_layers=1", "--hidden_size=16"]
    summary = main(argv)
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert sorted(r["model"] for r in rows) == ["CategoryMLP", "DIN", "MTLRec", "SASRec"]
    by_model = {r["model"]: r for r in rows}
    for name, metric in [("MTLRec", "ndcg@10"), ("MTLRec", "interest_auc"), ("MTLRec", "category_micro_f1"),
                         ("SASRec", "ndcg@10"), ("DIN", "interest_f1"), ("CategoryMLP", "category_macro_f1")]:
        assert 0.0 <= float(by_model[name][metric]) <= 1.0, (name, metric)
    for name in ("MTLRec", "SASRec"):  # leave-one-out: one test item per user, so recall@10 is hit@10
        row = {k: float(v) for k, v in by_model[name].items() if "@" in k}
        assert row["recall@10"] == row["hit@10"] and row["precision@10"] == pytest.approx(row["hit@10"] / 10, abs=1e-4)
    for name in ("MTLRec", "DIN"):  # the same interest metrics for every model: F1 of its precision and recall
        p, r, f1 = (float(by_model[name][f"interest_{m}"]) for m in ("precision", "recall", "f1"))
        assert f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=2e-4)
    assert all(float(r["peak_rss_mb"]) > 0 and float(r["time_per_epoch_s"]) > 0 for r in rows)
    assert set(summary["sequence"]) == {"MTLRec", "SASRec"} and set(summary["interest"]) == {"MTLRec", "DIN"}
    assert set(summary["category"]) == {"MTLRec", "CategoryMLP"}
    text = (out / "summary.md").read_text()
    assert "python run_recbole_mtl.py benchmark --dataset=ml-slice" in text and "| SASRec |" in text
    assert "**" in text and "article" in text and "Hit@10" in text
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    capsys.readouterr()
    stamp = (out / "runs.csv").stat().st_mtime_ns
    main(argv)  # everything is done: nothing reruns
    printed = capsys.readouterr().out
    assert "4 final run(s): 4 already in" in printed and "0 recorded now" in printed
    assert (out / "runs.csv").stat().st_mtime_ns == stamp

    (out / "runs.csv").write_text("".join(open(out / "runs.csv").readlines()[:-1]))  # as if the last run died
    main(argv)
    assert "3 already in" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(out / "runs.csv")))) == 4


def test_a_seed_value_given_as_the_number_of_seeds_is_refused(tmp_path):
    from recbole_mtl.benchmark import main

    with pytest.raises(ConfigError, match=r"--seeds is how many seeds .* --seed=2020 --seeds=3"):
        main(["--dataset", "ml-100k", "--models", "DeepFM", "--seeds", "2020", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_tuning_table_lists_studies_in_the_order_of_models_not_of_completion(tmp_path):
    """With --jobs > 1 the studies end in a varying order; the summary must not follow it."""
    from argparse import Namespace

    from recbole_mtl.benchmark import extra_sections

    specs = [parse_spec(text) for text in ("MTLRec", "SASRec", "MMoE")]

    def study(name: str, value: float) -> dict:
        return {"study": f"d/{name}/x", "complete": 3, "pruned": 1, "failed": 0, "objective": "NDCG@10",
                "best_value": value, "best": {"learning_rate": 0.001}}

    ended = {"MMoE": study("MMoE", 0.3), "SASRec": study("SASRec", 0.2), "MTLRec": study("MTLRec", 0.1)}
    args = Namespace(tune=4, seed=2020, seed_list=[2020], stopping_step=2, epochs=5, bootstrap=10)
    lines = extra_sections([], specs, tmp_path, ended, args)
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if line.startswith("| ") and "`d/" in line]
    assert rows == ["MTLRec", "SASRec", "MMoE"]


def test_time_budget_stops_training_at_the_first_evaluation_past_it_and_tests_the_best_checkpoint(tmp_path):
    from recbole_mtl.cli import main
    from tests.conftest import write_slice

    write_slice(tmp_path / "data", max_user=40)
    out = tmp_path / "out"
    base = ["benchmark", "--dataset=ml-slice", f"--data_path={tmp_path / 'data'}", "--models=SASRec,MTLRec@sequence",
            "--seeds=1", "--epochs=4", "--stopping_step=10", "--max_len=10", "--embedding_size=16", "--n_layers=1",
            "--hidden_size=16"]
    main(base + [f"--out={out}", "--time_budget=0.000001"])  # spent by the first evaluation
    rows = {r["model"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    for name in ("SASRec", "MTLRec@sequence"):
        row = rows[name]
        assert (row["hit_budget"], row["epochs_run"], row["best_epoch"], row["hit_cap"]) == ("1", "1", "1", "0"), name
        assert 0.0 <= float(row["ndcg@10"]) <= 1.0 and float(row["valid_score"]) >= 0.0
        assert stopped_by(row) == "time budget"
    assert "at most 1e-06 minutes of training per run (--time_budget)" in (out / "summary.md").read_text()

    main(base + [f"--out={tmp_path / 'free'}"])  # no budget: every epoch
    rows = {r["model"]: r for r in csv.DictReader(open(tmp_path / "free" / "runs.csv"))}
    assert all((r["hit_budget"], r["epochs_run"], r["hit_cap"]) == ("0", "4", "1") for r in rows.values())
    assert {stopped_by(r) for r in rows.values()} == {"epoch cap"}

    from recbole_mtl.benchmark import main as benchmark_main

    with pytest.raises(ConfigError, match="--time_budget is minutes"):
        benchmark_main(base[1:] + [f"--out={tmp_path / 'bad'}", "--time_budget=-1"])
    assert not (tmp_path / "bad").exists()
