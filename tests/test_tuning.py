"""benchmark --tune and the benchmark's evidence: search spaces, studies that resume, pruning,
paired bootstrap intervals, per-user metrics, and one-pass sampled scoring."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from recbole_mtl import tuning
from recbole_mtl.errors import ConfigError
from recbole_mtl.significance import (auc, auc_statistic, mean_statistic, micro_f1, micro_f1_statistic,
                                     paired_bootstrap)
from tests.conftest import base_config

REPO = Path(__file__).resolve().parents[1]
SMALL = {"embedding_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32, "hidden_size": 16,
         "shared_hidden": [16], "tower_hidden": [16], "MAX_ITEM_LIST_LENGTH": 10, "category_field": "class",
         "load_col": None, "train_batch_size": 256, "eval_batch_size": 256}


# -- paired bootstrap ---------------------------------------------------------------------------
def test_bootstrap_interval_excludes_zero_for_a_clear_difference_and_includes_it_for_none():
    rng = np.random.default_rng(1)
    base = rng.random((3, 400))
    better = [base[s] + 0.1 + rng.normal(0, 0.05, 400) for s in range(3)]
    clear = paired_bootstrap(mean_statistic(better), mean_statistic(list(base)), 400, 3, n_boot=500, seed=3)
    assert clear.significant and clear.low > 0.05 and abs(clear.mean - 0.1) < 0.01
    noise = [base[s] + rng.normal(0, 0.05, 400) for s in range(3)]
    none = paired_bootstrap(mean_statistic(noise), mean_statistic(list(base)), 400, 3, n_boot=500, seed=3)
    assert not none.significant and none.low < 0 < none.high


def test_bootstrap_interval_matches_a_direct_computation():
    rng = np.random.default_rng(5)
    diff = rng.normal(0.02, 0.2, 1000)
    got = paired_bootstrap(mean_statistic([diff]), mean_statistic([np.zeros(1000)]), 1000, 1, n_boot=400, seed=11)
    draws = np.random.default_rng(11)  # the same draws, by hand
    means = []
    for _ in range(400):
        idx = draws.integers(0, 1000, 1000)
        draws.integers(0, 1, 1)
        means.append(diff[idx].mean())
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got.mean == pytest.approx(diff.mean())
    half = 1.96 * diff.std(ddof=1) / np.sqrt(1000)  # the normal approximation agrees closely
    assert got.low == pytest.approx(diff.mean() - half, abs=0.004)
    assert got.high == pytest.approx(diff.mean() + half, abs=0.004)


def test_auc_bootstrap_pairs_the_interactions_of_both_models():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    labels = rng.random(600) < 0.5
    good, weak = labels + rng.normal(0, 0.6, 600), labels + rng.normal(0, 1.5, 600)
    assert auc(good, labels) == pytest.approx(roc_auc_score(labels, good))
    interval = paired_bootstrap(auc_statistic([good], [labels]), auc_statistic([weak], [labels]), 600, 1,
                                n_boot=300, seed=0)
    assert interval.significant and interval.mean == pytest.approx(auc(good, labels) - auc(weak, labels))


def test_micro_f1_bootstrap_recomputes_f1_on_the_drawn_items():
    labels = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
    preds = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    assert micro_f1(preds, labels) == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))  # tp 4, fp 1, fn 2 by hand
    rng = np.random.default_rng(4)
    truth = rng.random((500, 6)) < 0.3
    good = truth ^ (rng.random((500, 6)) < 0.05)  # 5% of the cells flipped
    weak = truth ^ (rng.random((500, 6)) < 0.25)
    interval = paired_bootstrap(micro_f1_statistic([good], [truth]), micro_f1_statistic([weak], [truth]), 500, 1,
                                n_boot=300, seed=0)
    assert interval.significant and interval.mean == pytest.approx(micro_f1(good, truth) - micro_f1(weak, truth))
    same = paired_bootstrap(micro_f1_statistic([good], [truth]), micro_f1_statistic([good], [truth]), 500, 1,
                            n_boot=50, seed=0)
    assert (same.low, same.mean, same.high) == (0.0, 0.0, 0.0) and not same.significant


# -- search spaces --------------------------------------------------------------------------------
def test_every_shipped_search_space_is_valid():
    files = sorted((REPO / "properties" / "search").glob("*.yaml"))
    assert {"default.yaml", "MTLRec.yaml", "SASRec.yaml", "DeepFM.yaml"} <= {f.name for f in files}
    for file in files:
        space = tuning.load_space(file)
        assert "learning_rate" in space.distributions()
    assert tuning.space_path("NoSuchModel").name == "default.yaml"


@pytest.mark.parametrize("text, message", [
    ("lr: {type: float, low: 0.1, high: 0.01}\n",
     r"x\.yaml:1: parameter 'lr': bad range: low \(0.1\) must be below high"),
    ("a: {type: float, low: 0.0, high: 1.0}\nlr: {type: float, low: 0.0, high: 0.1, log: true}\n",
     r"x\.yaml:2: parameter 'lr': bad range: log: true needs low > 0"),
    ("lr: {type: float, low: 0.1, hihg: 0.2}\n", r"x\.yaml:1: parameter 'lr': unknown field\(s\) \['hihg'\]"),
    ("lr: {type: real, low: 0.1, high: 0.2}\n", r"x\.yaml:1: parameter 'lr': field 'type' is 'real'"),
    ("size: {type: categorical, choices: []}\n", r"parameter 'size': field 'choices' must be a non-empty list"),
    ("size: {type: int, low: 1.5, high: 4}\n", r"type: int needs whole-number low and high"),
    ("lr: 0.1\n", r"x\.yaml:1: parameter 'lr': expected a mapping"),
])
def test_search_space_errors_name_file_line_and_field(tmp_path, text, message):
    (tmp_path / "x.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        tuning.load_space(tmp_path / "x.yaml")


def test_dotted_parameters_merge_into_the_models_dict_and_the_digest_follows_the_space(tmp_path):
    (tmp_path / "a.yaml").write_text("task_weights.interest: {type: float, low: 0.1, high: 2.0}\n")
    space = tuning.load_space(tmp_path / "a.yaml")
    defaults = tuning.model_defaults("MTLRec")
    merged = space.overrides({"task_weights.interest": 0.7}, defaults)
    assert merged["task_weights"] == {**defaults["task_weights"], "interest": 0.7}
    (tmp_path / "b.yaml").write_text("# a comment\ntask_weights.interest: {type: float, low: 0.1, high: 2.0}\n")
    (tmp_path / "c.yaml").write_text("task_weights.interest: {type: float, low: 0.1, high: 3.0}\n")
    assert tuning.load_space(tmp_path / "b.yaml").digest == space.digest
    assert tuning.load_space(tmp_path / "c.yaml").digest != space.digest


# -- pruning --------------------------------------------------------------------------------------
def test_a_trial_worse_than_the_median_is_pruned(tmp_path):
    path = tmp_path / "tuning.db"
    study = tuning.open_study(path, "d/M/0", maximize=True, seed=0)
    for value in (0.5, 0.6, 0.55):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        for step in range(3):
            trial.report(value, step)
        study.tell(trial, value)
    reporter_of = lambda trial: tuning.TrialReporter(  # noqa: E731 - as the trial's own process opens it
        {"storage": tuning.storage_url(path), "study": "d/M/0", "trial_id": trial._trial_id})
    good = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    for epoch in range(3):
        reporter_of(good).report(epoch, 0.7)  # above the median: goes on
    bad = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    reporter = reporter_of(bad)
    assert tuning.PRUNE_WARMUP_EPOCHS == 2
    reporter.report(0, 0.1)  # below the median, but within the warm-up epochs: goes on
    reporter.report(1, 0.1)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
        reporter.report(2, 0.1)


# -- a study survives its process being killed -----------------------------------------------------
def _trials(path: Path, prefix: str) -> list:
    """The trials of the one study whose name starts with ``prefix`` (none while it does not exist)."""
    if not path.exists():
        return []
    try:
        names = [n for n in optuna.get_all_study_names(tuning.storage_url(path)) if n.startswith(prefix)]
        return optuna.load_study(study_name=names[0], storage=tuning.storage_url(path)).get_trials(deepcopy=False) \
            if names else []
    except Exception:  # noqa: BLE001 - the file may be mid-creation
        return []


def _stored_states(path: Path) -> list:
    """The trials' states in the study file, read-only: a reader that opened it through Optuna
    while the benchmark creates it would create its tables too, racing the benchmark."""
    import sqlite3
    from contextlib import closing

    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            return [row[0] for row in db.execute("SELECT state FROM trials")]
    except sqlite3.Error:  # no tables yet
        return []


def test_tuning_resumes_after_its_process_is_killed(tmp_path):
    from tests.conftest import write_slice

    write_slice(tmp_path / "data", max_user=40)
    out = tmp_path / "out"
    argv = [sys.executable, str(REPO / "run_recbole_mtl.py"), "benchmark", "--dataset=ml-slice",
            f"--data_path={tmp_path / 'data'}", f"--out={out}", "--models=CategoryMLP", "--tune=3", "--seeds=1",
            "--epochs=2", "--category_field=class"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    name = "ml-slice/CategoryMLP/"
    path = out / tuning.STUDY_FILE
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if {"COMPLETE", "PRUNED"} & set(_stored_states(path)):
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the tuning run ended before a trial was stored: " + (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the benchmark and the trial it runs
    proc.wait()
    before = {t.number: (t.state, t.params) for t in _trials(path, name)
              if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)}
    assert before

    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    trials = _trials(path, name)
    counted = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) == 3  # the total reaches N, not N more
    assert all((t.state, t.params) == before[t.number] for t in counted if t.number in before)  # kept, not re-run
    interrupted = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get(tuning.INTERRUPTED) for t in interrupted)
    summary = (out / "summary.md").read_text()
    assert "## Tuning" in summary and (out / "curves.png").is_file()
    row = next(line for line in summary.splitlines() if line.startswith("| CategoryMLP | `ml-slice/CategoryMLP/"))
    states = [t.state for t in trials]
    cut = f" ({len(interrupted)} cut off, run again)" if interrupted else ""
    assert (f"| {states.count(optuna.trial.TrialState.COMPLETE)} / {states.count(optuna.trial.TrialState.PRUNED)}"
            f" / 0{cut} |") in row  # a cut-off trial is not a failure
    rows = (out / "runs.csv").read_text()
    assert '"{""dropout""' in rows  # the rows carry the tuned parameters


# -- parallel runs: each model tuned, then its seeds; the best trial is the first seed's run ---------
def test_parallel_runs_finish_each_model_and_the_best_trial_is_the_first_seeds_run(tmp_path):
    import csv

    from recbole_mtl import benchmark
    from tests.conftest import write_slice

    write_slice(tmp_path / "data", max_user=40)
    out = tmp_path / "out"
    args = ["benchmark", "--dataset=ml-slice", f"--data_path={tmp_path / 'data'}", f"--out={out}",
            "--models=MTLRec@category,CategoryMLP", "--tune=2", "--seeds=2", "--epochs=2", "--jobs=2",
            "--category_field=class", "--MAX_ITEM_LIST_LENGTH=10", "--n_layers=1"]
    argv = [sys.executable, str(REPO / "run_recbole_mtl.py"), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    # a model's final runs start only once its trials have ended
    lines = first.stdout.splitlines()
    for model in ("MTLRec@category", "CategoryMLP"):
        trial_ends = [i for i, l in enumerate(lines) if l.startswith(f"  {model} trial ")]
        finals = [i for i, l in enumerate(lines) if l.startswith(f"start {model} seed=")]
        assert len(trial_ends) == 2 and finals and max(trial_ends) < min(finals)

    rows = list(csv.DictReader(open(out / "runs.csv")))
    parsed, specs, base, _ = benchmark.parse(args[1:])
    path = out / tuning.STUDY_FILE
    for spec in specs:
        mine = {int(r["seed"]): r for r in rows if r["model"] == spec.text}
        assert sorted(mine) == [2020, 2021]
        name = next(n for n in optuna.get_all_study_names(tuning.storage_url(path)) if f"/{spec.text}/" in n)
        study = optuna.load_study(study_name=name, storage=tuning.storage_url(path))
        assert len(tuning.counted(study)) == 2
        assert mine[2020]["trial"] == str(study.best_trial.number)  # taken from the best trial, not retrained
        assert mine[2021]["trial"] == ""
        assert (out / mine[2020]["per_user"]).is_file()
        assert json.loads(mine[2020]["params"]) == space_params(spec, study)
        # the best trial's test metrics are those of the first seed's run trained afresh
        row = mine[2020]
        key = (spec, 2020, 0, float(row["learning_rate"]), row["params"])
        job = benchmark._Runner(specs, parsed, base, tmp_path / "again")._final_job(key)
        again = benchmark._run_one(spec, "ml-slice", job.config, tmp_path / "again.log", 600, job.extra)
        metrics = benchmark.TASK_METRICS["category"]
        assert {m: round(float(row[m]), 6) for m in metrics} == {m: round(again["test"][m], 6) for m in metrics}

    # the same command again runs nothing
    second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "start " not in second.stdout
    assert list(csv.DictReader(open(out / "runs.csv"))) == rows


def space_params(spec, study) -> dict:
    """The config keys of the study's best trial, as the benchmark writes them in ``params``."""
    space = tuning.load_space(tuning.space_path(spec.model))
    return json.loads(json.dumps(space.overrides(study.best_trial.params, tuning.model_defaults(spec.model))))


# -- per-user metrics and one-pass sampled scoring --------------------------------------------------
def _built(data_root, model="MTLRec", **overrides):
    from recbole_mtl import pipeline
    from recbole_mtl.config import Config

    config = Config(model=model, dataset="ml-slice", config_dict=base_config(data_root, **{**SMALL, **overrides}),
                    cmd_args=[])
    return pipeline.build(config)


def test_per_user_metrics_average_to_recboles_reported_values(data_root, workdir):
    from recbole_mtl.benchmark import _per_user, _TestRecorder

    built = _built(data_root, model="SASRec", train_neg_sample_args=None, metrics=["NDCG", "Hit", "MRR", "Recall"],
                   topk=[5, 10])
    recorder = _TestRecorder(built.trainer, built.config["USER_ID_FIELD"])
    result = built.trainer.evaluate(built.test_data, load_best_model=False)
    values = _per_user(built, recorder, built.trainer, None)
    assert len(values["users"]) == len(set(values["users"])) == len(values["ndcg@10"]) > 0
    for metric in ("ndcg@10", "hit@10", "mrr@5", "recall@5"):
        assert values[metric].mean() == pytest.approx(result[metric], abs=1e-4), metric
    assert values["hit@10"].max() > 0  # the test can fail: not all zeros


def test_one_pass_sampled_scoring_equals_the_repeated_pass(data_root, workdir):
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                 "mode": {"valid": "uni100", "test": "uni100"}}
    results, scores = {}, {}
    for way in ("repeated", "one_pass"):
        built = _built(data_root, eval_args=eval_args, sampled_scoring=way, tasks=["sequence", "interest"])
        built.model.eval()
        batch = next(iter(built.test_data))[0]
        with torch.no_grad():
            scores[way] = built.model.predict(batch)
        results[way] = built.trainer.evaluate(built.test_data, load_best_model=False)
    assert len(torch.unique(batch["user_id"])) < len(batch)  # the batch holds repeated histories
    torch.testing.assert_close(scores["one_pass"], scores["repeated"], rtol=1e-5, atol=1e-5)
    ranking = {k: v for k, v in results["repeated"].items() if "@" in k}
    assert ranking and ranking == {k: results["one_pass"][k] for k in ranking}


def test_the_protocol_applies_to_the_sequence_task_only():
    from recbole_mtl.benchmark import parse_spec, run_config

    args = {"epochs": 1, "stopping_step": 1, "max_len": 10, "checkpoint_dir": "c", "protocol": "uni100"}
    mode = {name: run_config(parse_spec(name), 1, 0, 1, 0.001, args, {"dropout": 0.3})["eval_args"]["mode"]
            for name in ("SASRec", "MTLRec", "MTLRec@category", "DeepFM")}
    assert mode == {"SASRec": {"valid": "uni100", "test": "uni100"}, "MTLRec": {"valid": "uni100", "test": "uni100"},
                    "MTLRec@category": "full", "DeepFM": "labeled"}
    assert run_config(parse_spec("MTLRec"), 1, 0, 1, 0.001, args, {"learning_rate": 0.01})["learning_rate"] == 0.01


def test_per_item_category_values_give_the_reported_micro_f1(data_root, workdir):
    from recbole_mtl.benchmark import _per_user, _TestRecorder

    built = _built(data_root, tasks=["sequence", "category"], epochs=1)
    built.trainer.evaluate(built.valid_data, load_best_model=False)  # fits the decoding threshold
    recorder = _TestRecorder(built.trainer, built.config["USER_ID_FIELD"])
    result = built.trainer.evaluate(built.test_data, load_best_model=False)
    values = _per_user(built, recorder, built.trainer, None)
    items = values["category_items"]
    assert len(items) == len(set(items)) == len(values["category_pred"]) == len(values["category_label"]) > 10
    assert values["category_label"].any(axis=1).all()  # held-out items all have a category
    assert micro_f1(values["category_pred"], values["category_label"]) == pytest.approx(
        result["category_micro_f1"], abs=1e-4)


# -- the significance section, from runs.csv rows and per-user files ----------------------------------
def test_significance_section_pairs_users_and_seeds_and_says_who_wins(tmp_path):
    from recbole_mtl import benchmark
    from recbole_mtl.significance import write_npz

    rng = np.random.default_rng(0)
    users = np.array([str(u) for u in range(300)])
    specs = [benchmark.parse_spec(s) for s in ("MTLRec", "SASRec", "GRU4Rec")]
    rows, ref_values = [], {}
    for seed in (2020, 2021):
        base = rng.random(300)
        ref_values[seed] = base
        # SASRec: every user 0.05 lower than MTLRec; GRU4Rec: the same values, in another user order
        per_model = {"MTLRec": (users, base), "SASRec": (users, base - 0.05), "GRU4Rec": (users[::-1], base[::-1])}
        for model, (order, ndcg) in per_model.items():
            file = tmp_path / "per_user" / f"{model}-{seed}.npz"
            file.parent.mkdir(exist_ok=True)
            write_npz(file, {"users": order, "ndcg@10": ndcg, "hit@10": (ndcg > 0.5).astype(float),
                             "mrr@10": ndcg / 2})
            rows.append({"model": model, "seed": seed, "fold": 0, "selected": 1,
                         "per_user": f"per_user/{model}-{seed}.npz"})
    # a row that is not selected (another learning rate) is ignored
    rows.append({"model": "SASRec", "seed": 2020, "fold": 0, "selected": 0, "per_user": "per_user/missing.npz"})
    lines = benchmark.significance(rows, specs, tmp_path, n_boot=200, seed=0)
    table = {(l.split("|")[2].strip(), l.split("|")[3].strip()): l for l in lines if l.startswith("| sequence")}
    sasrec = table[("ndcg@10", "SASRec")].split("|")
    assert float(sasrec[4]) == pytest.approx(0.05, abs=1e-4) and "| significant |" in table[("ndcg@10", "SASRec")]
    assert sasrec[6].strip() == "2" and sasrec[7].strip() == "300"  # seeds, users
    gru = table[("ndcg@10", "GRU4Rec")]
    assert float(gru.split("|")[4]) == pytest.approx(0.0, abs=1e-9)  # users matched by token, not by row
    assert "*not significant*" in gru
    words = [l for l in lines if l.startswith("- sequence")]
    assert words == ["- sequence (ndcg@10): MTLRec is significantly above SASRec (+0.0500); "
                     "not significantly different from GRU4Rec (+0.0000)."]


def test_category_significance_matches_items_within_each_seed(tmp_path):
    """Each seed holds out its own items: the test counts every seed's items, not the few that all
    seeds share, and a model right on every item is significantly above one wrong on every item."""
    from recbole_mtl import benchmark
    from recbole_mtl.significance import write_npz

    rng = np.random.default_rng(1)
    specs = [benchmark.parse_spec(s) for s in ("MTLRec", "CategoryMLP")]
    rows = []
    for k, seed in enumerate((2020, 2021, 2022)):
        items = np.array([f"{seed}-{i}" for i in range(40 + k)])  # no item shared between seeds
        labels = rng.random((len(items), 5)) < 0.3
        labels[:, 0] = True
        for model, pred in (("MTLRec", labels), ("CategoryMLP", ~labels)):
            name = f"per_user/{model}-{seed}.npz"
            (tmp_path / "per_user").mkdir(exist_ok=True)
            write_npz(tmp_path / name, {"category_items": items, "category_pred": pred, "category_label": labels})
            rows.append({"model": model, "seed": seed, "fold": 0, "selected": 1, "per_user": name})
    lines = benchmark.significance(rows, specs, tmp_path, n_boot=200, seed=0)
    row = next(l for l in lines if l.startswith("| category | category_micro_f1 | CategoryMLP"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[7] == "40 / 41 / 42 (per seed)"
    assert float(cells[4]) == pytest.approx(1.0) and cells[8] == "significant"


# -- one validation number over all tasks (valid_metric: mtl_gain) ---------------------------------
def test_mtl_gain_is_the_mean_relative_gain_with_the_sign_turned_for_smaller_is_better():
    from recbole_mtl.trainer import mtl_gain

    result = {"ndcg@10": 0.06, "interest_auc": 0.84, "rating_rmse": 0.9}
    reference = {"ndcg@10": 0.05, "interest_auc": 0.80, "rating_rmse": 1.0}
    # (+0.2 + 0.05 + 0.1) / 3: a lower RMSE is a gain
    assert mtl_gain(result, reference) == pytest.approx((0.2 + 0.05 + 0.1) / 3, abs=1e-6)
    assert mtl_gain(reference, reference) == 0.0
    with pytest.raises(ConfigError, match="'category_micro_f1', which this model does not report"):
        mtl_gain(result, {"category_micro_f1": 0.4})


@pytest.mark.parametrize("reference, message", [
    (None, "valid_metric: mtl_gain needs mtl_gain_reference"),
    ({"ndcg@10": 0}, "'ndcg@10' must be a positive number"),
    ({"interest_auc": "high"}, "'interest_auc' must be a positive number"),
])
def test_mtl_gain_without_usable_references_is_refused(data_root, workdir, reference, message):
    with pytest.raises(ConfigError, match=message):
        _built(data_root, tasks=["sequence", "interest"], valid_metric="mtl_gain", mtl_gain_reference=reference)


def test_mtl_gain_drives_early_stopping_and_the_best_checkpoint(data_root, workdir):
    from recbole_mtl.trainer import mtl_gain

    reference = {"NDCG@10": 0.05, "interest_auc": 0.7}
    built = _built(data_root, tasks=["sequence", "interest"], valid_metric="mtl_gain", mtl_gain_reference=reference,
                   epochs=3, stopping_step=10)
    seen = []
    original = built.trainer._valid_epoch

    def spy(valid_data, show_progress=False):
        score, result = original(valid_data, show_progress=show_progress)
        seen.append((score, dict(result)))
        return score, result

    built.trainer._valid_epoch = spy
    best_score, best_result = built.trainer.fit(built.train_data, built.valid_data, saved=True, show_progress=False)
    assert len(seen) == 3
    for score, result in seen:  # the score is the gain computed from that evaluation's own metrics
        expected = ((result["ndcg@10"] - 0.05) / 0.05 + (result["interest_auc"] - 0.7) / 0.7) / 2
        assert score == result["mtl_gain"] == pytest.approx(expected, abs=1e-5)
    assert best_score == max(score for score, _ in seen)  # bigger is better
    assert best_result["mtl_gain"] == mtl_gain(best_result, {"ndcg@10": 0.05, "interest_auc": 0.7})
    assert len({round(s, 6) for s, _ in seen}) > 1  # the test can fail: the gain moves with training


def test_multi_task_tuning_without_its_references_is_refused():
    from recbole_mtl import benchmark

    with pytest.raises(ConfigError, match=r"add MTLRec@interest to --models .*--tune_objective first_task"):
        benchmark.parse(["--models=MTLRec@sequence+interest,MTLRec@sequence", "--tune=2"])
    benchmark.parse(["--models=MTLRec@sequence+interest", "--tune=2", "--tune_objective=first_task"])
    benchmark.parse(["--models=MTLRec@sequence+interest"])  # no tuning: nothing to refer to


def test_a_multi_task_model_is_tuned_on_its_gain_over_the_tuned_single_task_models(tmp_path):
    import csv

    from tests.conftest import write_slice

    write_slice(tmp_path / "data", max_user=40)
    out = tmp_path / "out"
    common = ["benchmark", "--dataset=ml-slice", f"--data_path={tmp_path / 'data'}", f"--out={out}", "--tune=2",
              "--seeds=1", "--epochs=2", "--jobs=2", "--category_field=class", "--MAX_ITEM_LIST_LENGTH=10",
              "--n_layers=1"]
    multi = "MTLRec@sequence+category"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # the multi-task model first: it waits for its references' studies
    argv = [sys.executable, str(REPO / "run_recbole_mtl.py"), *common,
            f"--models={multi},MTLRec@sequence,MTLRec@category"]
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    lines = first.stdout.splitlines()
    reference_ends = [i for i, l in enumerate(lines) if l.startswith(("  MTLRec@sequence trial", "  MTLRec@category trial"))]
    multi_starts = [i for i, l in enumerate(lines) if l.startswith(f"start {multi} trial")]
    assert len(reference_ends) == 4 and len(multi_starts) == 2 and max(reference_ends) < min(multi_starts)

    path = out / tuning.STUDY_FILE
    studies = {n.split("/")[1]: optuna.load_study(study_name=n, storage=tuning.storage_url(path))
               for n in optuna.get_all_study_names(tuning.storage_url(path))}
    expected = {"NDCG@10": round(studies["MTLRec@sequence"].best_value, 6),
                "category_micro_f1": round(studies["MTLRec@category"].best_value, 6)}
    assert f"objective mtl_gain over {expected}" in first.stdout
    rows = {r["model"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert rows[multi]["valid_metric"] == "mtl_gain" and rows["MTLRec@sequence"]["valid_metric"] == "NDCG@10"
    assert float(rows[multi]["valid_score"]) == pytest.approx(studies[multi].best_value)
    summary = (out / "summary.md").read_text()
    assert f"| mtl_gain | {studies[multi].best_value:.4f} |" in summary

    # on the first task's metric instead: another study, whose best configuration replaces the runs
    again = subprocess.run([*argv, "--tune_objective=first_task"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    names = [n for n in optuna.get_all_study_names(tuning.storage_url(path)) if f"/{multi}/" in n]
    assert len(names) == 2
    rows = [r for r in csv.DictReader(open(out / "runs.csv")) if r["model"] == multi]
    assert len(rows) == 1 and rows[0]["valid_metric"] == "NDCG@10"
    # each study's trials keep their own per-user files (the best one becomes the first seed's run)
    complete = sum(t.state == optuna.trial.TrialState.COMPLETE
                   for n in names for t in optuna.load_study(study_name=n, storage=tuning.storage_url(path)).trials)
    assert len(list((out / "logs" / "tuning").glob("MTLRec_sequence_category-*.npz"))) == complete
    # the references are not run again
    assert not any(l.startswith(("start MTLRec@sequence ", "start MTLRec@category ")) for l in again.stdout.splitlines())


def test_learning_curves_share_a_panel_per_task_and_one_for_mtl_gain():
    from recbole_mtl.benchmark import curve_panels, parse_spec

    specs = [parse_spec(s) for s in ("DeepFM", "MTLRec@interest", "MTLRec", "SASRec", "MTLRec@sequence")]

    def row(model, metric):
        return {"model": model, "selected": "1", "valid_metric": metric, "curve": "[[1.0, 0.5], [2.0, 0.6]]"}

    rows = [row("DeepFM", "AUC"), row("MTLRec@interest", "interest_auc"), row("MTLRec", "mtl_gain"),
            row("SASRec", "NDCG@10"), row("MTLRec@sequence", "NDCG@10"), {**row("SASRec", "NDCG@10"), "selected": "0"}]
    panels = {key: [(spec.text, len(chosen)) for spec, chosen in entries]
              for key, entries in curve_panels(rows, specs).items()}
    assert panels == {"sequence": [("SASRec", 1), ("MTLRec@sequence", 1)],
                      "interest": [("DeepFM", 1), ("MTLRec@interest", 1)], "mtl_gain": [("MTLRec", 1)]}
