"""``run_recbole_mtl.py benchmark``: the multi-task models against RecBole baselines, fairly.

Every model is scored on the tasks it competes on, on one split and the same test cases:

* **sequence** (next item): leave-one-out by time (each user's last interaction is the test case,
  the one before it the validation case), full ranking over all items with RecBole's metrics.
  Competitors: RecBole's sequential and general recommenders (SASRec, GRU4Rec, BERT4Rec, BPR, ...)
  and the multi-task models' sequence head.
* **interest** (rating >= 4): the same last interactions with their labels. Competitors: RecBole's
  context-aware models and point-wise sequential models (DeepFM, DIN, ...) and the multi-task
  models' interest head; every one is scored by the same code (``InterestTask.metrics``: RecBole's
  AUC/LogLoss plus accuracy, precision, recall, F1 at 0.5).
* **category** (multi-label): the held-out items of the category split (fixed by seed, or K folds
  with ``--folds``). Competitors: the multi-task models, a single-task variant (``MTLRec@category``)
  and ``CategoryMLP``, a plain classifier on the same item features.

Each (model, seed, fold, learning rate) run happens in its own process (so its peak memory is its
own) and is appended to ``results/<dataset>/runs.csv`` as soon as it finishes; a rerun of the same
command skips the runs already there. For each (model, seed, fold) the learning rate with the best
validation score is selected; the summary reports the mean +- std of the selected runs.

Model specs: ``Model`` | ``Model@task+task`` (only those tasks) | ``Model:balance`` (``loss_balance``),
e.g. ``MTLRec@category``, ``MMoE:uncertainty``, ``PLE@sequence+interest:pcgrad``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Optional, Sequence

from recbole_mtl.checkpoint import atomic_open, atomic_write_text
from recbole_mtl.derive import split_of
from recbole_mtl.errors import ConfigError, RunFailedError
from recbole_mtl.tasks import DEFAULT_TASKS, REGISTRY, TASK_NAMES
from recbole_mtl.trainer import MTL_GAIN

TASKS = TASK_NAMES
#: Metrics reported per task (keys of the run records), the first is the task's main metric.
TASK_METRICS = {name: list(cls.metric_names) for name, cls in REGISTRY.items()}
#: The metrics drawn in the chart, per task.
PLOTTED = {name: list(cls.plotted) for name, cls in REGISTRY.items()}
#: Metrics where smaller is better.
SMALLER = {m for cls in REGISTRY.values() for m in cls.smaller_is_better}
#: The validation metric that selects the learning rate, per task a model is run for.
VALID_METRIC = {name: cls.valid_metric for name, cls in REGISTRY.items()}
CATEGORY_MLP = "CategoryMLP"
LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}
RESULT_TAG = "BENCHMARK_RESULT "
#: The run config's key (seconds) of ``--time_budget``: the worker stops training after the first
#: evaluation past it and tests the best checkpoint so far.
TIME_BUDGET_KEY = "benchmark_time_budget_s"
FIELDS = ["model", "seed", "fold", "learning_rate", "params", "tasks", "selected", "valid_metric", "valid_score",
          "epochs_run", "best_epoch", "epoch_cap", "hit_cap", "hit_budget", "protocol", "time_per_epoch_s",
          "train_time_s", "peak_rss_mb", "split", "per_user", "trial", "curve"]
#: User attribute of a completed tuning trial: its result (test metrics included), so the best
#: trial stands as the first seed's final run.
TRIAL_RESULT = "result"
#: ``--models`` presets: every model family the benchmark compares (``all``) and the quick default.
PRESETS = {
    "default": "MTLRec,SASRec,GRU4Rec,DeepFM,MTLRec@category,CategoryMLP",
    # cheapest first (seconds per epoch on ml-100k): a benchmark cut short leaves these finished
    # (the single-task ablations before the multi-task models: they give --tune_objective mtl_gain its references)
    "all": "CategoryMLP,CategoryMLP+text,DeepFM,MTLRec@category,MTLRec@interest,MTLRec@sequence,MTLRec,MMoE,PLE,"
           "DCNV2,GRU4Rec,DIN,SASRec,LightSANs,BERT4Rec",
}
#: ``--tune_objective``: what a multi-task model's trials maximise (and its runs stop early on).
OBJECTIVES = ("mtl_gain", "first_task")
#: ``--tune_objective mtl_gain``: the single-task models whose best validation values are the references.
GAIN_REFERENCE_MODEL = "MTLRec"
#: ``--protocol``: how the sequence task is scored (full ranking, or RecBole's sampled candidates).
PROTOCOLS = ("full", "uni100", "pop100")
CATEGORY_MLP_TEXT = CATEGORY_MLP + "+text"


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``--models``: a model, the tasks it competes on, and its balancing method."""

    text: str
    model: str
    tasks: tuple
    balance: Optional[str] = None
    plugin: bool = False

    @property
    def valid_metric(self) -> str:
        return VALID_METRIC[self.tasks[0]]

    @property
    def multi_task(self) -> bool:
        return self.plugin and len(self.tasks) > 1

    def gain_references(self) -> list[str]:
        """The single-task specs whose tuned validation values are this spec's ``mtl_gain`` references."""
        return [f"{GAIN_REFERENCE_MODEL}@{task}" for task in self.tasks]


def parse_spec(text: str) -> ModelSpec:
    """``Model[@task+task][:balance]`` -> :class:`ModelSpec`, with the model's competing tasks."""
    from recbole.utils import ModelType

    from recbole_mtl.utils import get_model, plugin_model_names

    rest, _, balance = text.partition(":")
    name, _, task_text = rest.partition("@")
    if name in (CATEGORY_MLP, CATEGORY_MLP_TEXT):
        return ModelSpec(text, name, ("category",))
    model_class = get_model(name)  # clear error with suggestions when unknown
    plugin = name in plugin_model_names()
    if plugin:
        from recbole_mtl.balancing import BALANCING_METHODS

        if balance and balance not in BALANCING_METHODS:
            raise ConfigError(f"--models entry '{text}': unknown balancing method '{balance}'; choose from "
                              f"{list(BALANCING_METHODS)}.")
        tasks = tuple(t for t in task_text.split("+") if t) or DEFAULT_TASKS
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"--models entry '{text}': unknown task(s) {bad}; choose from {list(TASKS)}.")
    else:
        if task_text or balance:
            raise ConfigError(f"--models entry '{text}': @tasks and :balance apply to the multi-task models only.")
        pointwise = getattr(model_class, "input_type", None) is not None and model_class.input_type.name == "POINTWISE"
        if model_class.type == ModelType.CONTEXT or (model_class.type == ModelType.SEQUENTIAL and pointwise):
            tasks = ("interest",)
        elif model_class.type in (ModelType.SEQUENTIAL, ModelType.GENERAL):
            tasks = ("sequence",)
        else:
            raise ConfigError(f"--models entry '{text}': {name} is a {model_class.type.name} model, which "
                              "competes on none of the tasks (sequence, interest, category).")
    return ModelSpec(text, name, tasks, balance or None, plugin)


def _item_tasks(spec: ModelSpec) -> list[str]:
    """The spec's tasks scored on held-out items (``--folds`` applies to them)."""
    return [t for t in spec.tasks if t in REGISTRY and REGISTRY[t].evaluation == "items"]


# -- one run (in its own process) ---------------------------------------------------------------
def _ranking_mode(args: dict):
    protocol = args.get("protocol") or "full"
    return "full" if protocol == "full" else {"valid": protocol, "test": protocol}


def run_config(spec: ModelSpec, seed: int, fold: int, folds: int, learning_rate: float, args: dict,
               params: Optional[dict] = None) -> dict:
    """The config dict of one run: the same split, seed, epochs and patience for every model;
    ``params``: tuned keys (they win over ``learning_rate`` and the model's defaults), with, for a
    multi-task model tuned on ``mtl_gain``, its ``valid_metric`` and ``mtl_gain_reference``."""
    config = {
        "seed": seed, "epochs": args["epochs"], "stopping_step": args["stopping_step"], "learning_rate": learning_rate,
        "show_progress": False, "state": "INFO", "checkpoint_dir": args["checkpoint_dir"],
        "MAX_ITEM_LIST_LENGTH": args["max_len"], "eval_args": dict(LEAVE_ONE_OUT),
    }
    if args.get("time_budget"):
        config[TIME_BUDGET_KEY] = float(args["time_budget"]) * 60.0
    if not _files_set(args.get("config_files"), "load_col"):
        config["load_col"] = None  # every column: the models read the features they use
    if args.get("data_path"):
        config["data_path"] = args["data_path"]
    if args.get("config_files"):
        config["config_files"] = list(args["config_files"])  # the dataset config: each run reads it
    if spec.plugin or spec.model in (CATEGORY_MLP, CATEGORY_MLP_TEXT):
        config.update({"tasks": list(spec.tasks), "valid_metric": spec.valid_metric,
                       "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "topk": [10]})
        config["eval_args"]["mode"] = _ranking_mode(args) if "sequence" in spec.tasks else "full"
        if spec.model == CATEGORY_MLP_TEXT:
            config["text_features"] = True
        if folds > 1:
            config.update({"category_folds": folds, "category_fold": fold})
        if spec.balance:
            config["loss_balance"] = spec.balance
    elif spec.tasks == ("interest",):
        # the label: --label_field/--label_threshold, else the dataset's interest_label_field and
        # interest_threshold, the multi-task models' interest label (recbole_mtl.derive sets threshold)
        config.update({"metrics": ["AUC", "LogLoss"], "valid_metric": "AUC", "train_neg_sample_args": None})
        if args.get("label_field"):
            threshold = args["label_threshold"] if args.get("label_threshold") is not None else 4.0
            config["threshold"] = {args["label_field"]: threshold}
        elif args.get("label_threshold") is not None:
            config["interest_threshold"] = args["label_threshold"]
        config["eval_args"]["mode"] = "labeled"
    else:  # a CE loss gets no negatives from recbole_mtl.derive, a BPR loss RecBole's sampled ones
        config.update({"metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "topk": [10],
                       "valid_metric": "NDCG@10"})
        config["eval_args"]["mode"] = _ranking_mode(args)
    config.update(args.get("overrides") or {})  # the user's --key=value, for every model
    config.update(params or {})
    return config


def _files_set(files, key: str) -> bool:
    """Whether one of the YAML ``files`` sets ``key``."""
    import yaml

    for file in files or []:
        try:
            loaded = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # the run's Config reports it
        if isinstance(loaded, dict) and key in loaded:
            return True
    return False


def _interest_metrics_of_baseline(trainer, test_data, config) -> tuple[dict, dict]:
    """Score a CTR baseline's test predictions with the multi-task models' interest metrics;
    also returns ``{"users", "prob", "label"}`` per test interaction (for the significance tests), or
    ``None`` when the run dropped the user field (``unused_col``: nothing to pair users on)."""
    import torch

    from recbole.evaluator.metrics import AUC, LogLoss

    from recbole_mtl.tasks.interest import interest_metrics

    probs, labels, users = [], [], []
    trainer.model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0] if isinstance(batch, tuple) else batch
            interaction = interaction.to(config["device"])
            probs.append(trainer.model.predict(interaction).detach().cpu().float())
            labels.append(interaction[config["LABEL_FIELD"]].detach().cpu().float())
            if config["USER_ID_FIELD"] in interaction:
                users.append(interaction[config["USER_ID_FIELD"]].detach().cpu())
    probs, labels = torch.cat(probs), torch.cat(labels)
    metrics = interest_metrics(probs, labels, AUC(config), LogLoss(config), int(config["metric_decimal_place"] or 4))
    return metrics, ({"users": torch.cat(users), "prob": probs, "label": labels} if users else None)


class _TestRecorder:
    """Keeps what RecBole's evaluator sees in the last evaluation: the collected data (``struct``)
    and, per evaluated row, the user it belongs to (to pair users across models)."""

    def __init__(self, trainer, uid_field: str):
        self.struct, self.users, self.uid_field = None, [], uid_field
        self._evaluate, self._collect = trainer.evaluator.evaluate, trainer.eval_collector.eval_batch_collect
        trainer.evaluator.evaluate = self.evaluate
        trainer.eval_collector.eval_batch_collect = self.collect

    def start(self) -> None:
        self.struct, self.users = None, []

    def collect(self, scores, interaction, positive_u, positive_i):
        import torch

        if self.uid_field in interaction:
            users = interaction[self.uid_field].detach().cpu()
            # sampled evaluation: a user's candidate rows are contiguous, one score row per user
            self.users.append(users if len(users) == scores.shape[0] else torch.unique_consecutive(users))
        return self._collect(scores, interaction, positive_u, positive_i)

    def evaluate(self, struct):
        self.struct = struct
        return self._evaluate(struct)


def _per_user(built, recorder: _TestRecorder, trainer, baseline_interest: Optional[dict]) -> dict:
    """Per-user test values of one run: top-k metrics per user, interest probabilities per interaction."""
    import numpy as np
    import torch

    from recbole_mtl.significance import topk_per_user

    config, dataset = built.config, built.dataset
    uid = config["USER_ID_FIELD"]

    def tokens(ids) -> np.ndarray:
        return np.asarray(dataset.id2token(uid, torch.as_tensor(ids).numpy()), dtype=str)

    out: dict = {}
    if recorder.struct is not None and recorder.users:
        values = topk_per_user(recorder.struct, config)
        users = torch.cat(recorder.users)
        if values and len(users) == len(next(iter(values.values()))):
            out["users"] = tokens(users)
            out.update(values)
    category = getattr(trainer, "last_items", {}).get("category")
    if category is not None:
        out.update(_item_values(dataset, category))
    interest = baseline_interest or getattr(trainer, "last_pointwise", {}).get("interest")
    if interest is not None:
        out["interest_users"] = tokens(interest["users"])
        out["interest_prob"] = np.asarray(interest["prob"], dtype=np.float32)
        out["interest_label"] = np.asarray(interest["label"], dtype=np.float32)
    return out


def _item_values(dataset, category: dict) -> dict:
    """The category task's held-out test items (tokens), decoded predictions and labels."""
    import numpy as np

    tokens = dataset.id2token(dataset.iid_field, category["items"].numpy())
    return {"category_items": np.asarray(tokens, dtype=str), "category_pred": category["pred"].numpy(),
            "category_label": category["label"].numpy()}


class _BudgetSpent(Exception):
    """Raised from the validation callback once ``--time_budget`` is spent."""


def worker(spec_text: str, dataset: str, config_dict: dict, extra: Optional[dict] = None) -> dict:
    """Train and test one model; returns its test metrics, time per epoch and peak memory.

    ``extra``: ``{"tune": {...}}`` makes the run a tuning trial (it reports each validation score to
    its study and may be pruned; it is tested only with ``per_user``, so that the best trial can
    stand as its seed's final run); ``{"per_user": path}`` writes the per-user test values there
    (:mod:`recbole_mtl.significance`).
    """
    from recbole.utils import init_logger, init_seed

    from recbole_mtl import pipeline
    from recbole_mtl.config import Config
    from recbole_mtl.utils import peak_rss_mb

    spec = parse_spec(spec_text)
    extra = extra or {}
    config_dict = dict(config_dict)
    config_files = config_dict.pop("config_files", None)
    budget = float(config_dict.pop(TIME_BUDGET_KEY, 0) or 0)
    reporter = None
    if extra.get("tune"):
        from recbole_mtl.tuning import TrialReporter

        reporter = TrialReporter(extra["tune"])
    if spec.model in (CATEGORY_MLP, CATEGORY_MLP_TEXT):
        import optuna

        from recbole_mtl.baselines import train_category_mlp

        try:
            result = train_category_mlp(dataset, config_dict, config_files,
                                        callback_fn=reporter.report if reporter else None)
        except optuna.TrialPruned as pruned:
            return {"pruned": str(pruned)}
        per_item = result.pop("per_item", None)
        if extra.get("per_user") and per_item:
            from recbole_mtl.significance import write_npz

            write_npz(Path(extra["per_user"]), _item_values(per_item["dataset"], per_item["category"]))
        result["epoch_cap"] = int(config_dict["epochs"])
        result["hit_cap"] = int(result["epochs_run"] >= int(config_dict["epochs"]))
        return result
    config = Config(model=spec.model, dataset=dataset, config_file_list=config_files, config_dict=config_dict,
                    cmd_args=[])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    built = pipeline.build(config)
    trainer, test_data = built.trainer, built.test_data
    curve: list = []  # (seconds since training started, validation score) after each evaluation
    start = time.perf_counter()

    def record(epoch_idx, valid_score):
        curve.append([round(time.perf_counter() - start, 2), float(valid_score)])
        if reporter is not None:
            reporter.report(epoch_idx, valid_score)  # raises optuna.TrialPruned when the pruner says so
        if budget and curve[-1][0] >= budget and epoch_idx + 1 < int(config["epochs"]):
            # the trainer has saved its best checkpoint before calling back: stop here, test that one
            raise _BudgetSpent(epoch_idx)

    hit_budget = 0
    try:
        best_valid_score, _ = trainer.fit(built.train_data, built.valid_data, saved=True, show_progress=False,
                                          callback_fn=record)
    except _BudgetSpent:
        hit_budget = 1
        best_valid_score = trainer.best_valid_score
        logging.getLogger().info(f"benchmark: --time_budget of {budget / 60:g} min spent after "
                                 f"{len(curve)} evaluation(s); testing the best checkpoint so far")
    except Exception as e:  # noqa: BLE001 - only a pruned trial is caught, the rest re-raised
        if type(e).__name__ != "TrialPruned":
            raise
        return {"pruned": str(e), "curve": json.dumps(curve)}
    train_time = time.perf_counter() - start
    epochs_run = max(1, len(trainer.train_loss_dict))
    test: dict = {}
    if not extra.get("tune") or extra.get("per_user"):
        recorder = _TestRecorder(trainer, config["USER_ID_FIELD"])
        result = dict(trainer.evaluate(test_data, load_best_model=True))
        baseline_interest = None
        if spec.tasks == ("interest",) and not spec.plugin:
            result, baseline_interest = _interest_metrics_of_baseline(trainer, test_data, config)
        test = {k: float(v) for k, v in result.items()}
        if extra.get("per_user"):
            from recbole_mtl.significance import write_npz

            values = _per_user(built, recorder, trainer, baseline_interest)
            if values:
                write_npz(Path(extra["per_user"]), values)
    return {
        "test": test,
        "epoch_cap": int(config["epochs"]),
        "hit_cap": int(epochs_run >= int(config["epochs"])),
        "hit_budget": hit_budget,
        "valid_score": float(best_valid_score),
        "epochs_run": epochs_run,
        "best_epoch": 1 + max(range(len(curve)), key=lambda i: curve[i][1] if trainer.valid_metric_bigger
                              else -curve[i][1]) if curve else epochs_run,
        "curve": json.dumps(curve),
        "split": split_of(config),
        "train_time_s": round(train_time, 2),
        "time_per_epoch_s": round(train_time / epochs_run, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# -- the benchmark ---------------------------------------------------------------------------------
def _key(row: dict) -> tuple:
    return (row["model"], int(row["seed"]), int(row["fold"]), float(row["learning_rate"]), row.get("params") or "")


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_runs(path: Path, rows: list[dict]) -> None:
    metrics = sorted({k for r in rows for k in r} - set(FIELDS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS + metrics, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _run_one(spec: ModelSpec, dataset: str, config: dict, log_file: Path, timeout: int,
             extra: Optional[dict] = None) -> dict:
    """Run :func:`worker` in a fresh Python process; its output goes to ``log_file``."""
    code = ("import json, sys\nfrom recbole_mtl.benchmark import worker, RESULT_TAG\n"
            "r = worker(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]))\n"
            "print(RESULT_TAG + json.dumps(r), flush=True)\n")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    with open(log_file, "w") as log:
        proc = subprocess.run([sys.executable, "-c", code, spec.text, dataset, json.dumps(config),
                               json.dumps(extra or {})],
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout, env=env)
        log.write(proc.stdout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = log_file.read_text()[-1500:]
        raise RunFailedError(f"{spec.text} failed (exit {proc.returncode}); log: {log_file}\n{tail}")
    return json.loads(lines[-1][len(RESULT_TAG):])


def select(rows: list[dict]) -> list[dict]:
    """Mark, for each (model, seed, fold), the learning rate with the best validation score."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["model"], int(row["seed"]), int(row["fold"])), []).append(row)
    for group in groups.values():
        smaller = group[0]["valid_metric"].lower() in SMALLER
        best = (min if smaller else max)(group, key=lambda r: float(r["valid_score"]))
        for row in group:
            row["selected"] = int(row is best)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(rows: list[dict], specs: list[ModelSpec]) -> dict:
    """``{task: {model: {metric: (mean, std, n)}}}`` over the selected runs."""
    out: dict = {t: {} for t in TASKS}
    for spec in specs:
        chosen = [r for r in rows if r["model"] == spec.text and int(r["selected"]) == 1]
        for task in spec.tasks:
            stats = {}
            for metric in TASK_METRICS[task]:
                values = [float(r[metric]) for r in chosen if r.get(metric) not in (None, "")]
                if values:
                    stats[metric] = (*_mean_std(values), len(values))
            if stats:
                out[task][spec.text] = stats
    return out


# The source article's claims (no definitions given there): accuracy, recall, F1 per task.
CLAIMS = {
    "interest": {"accuracy": 0.90, "recall": 0.80, "F1": 0.85},
    "category": {"accuracy": 0.92, "recall": 0.85, "F1": 0.88},
    "sequence": {"accuracy": 0.85, "recall": 0.75, "F1": 0.80},
}
#: Which measured metric stands for each claimed figure.
CLAIM_METRICS = {
    "interest": {"accuracy": "interest_accuracy", "recall": "interest_recall", "F1": "interest_f1"},
    "category": {"accuracy": "category_label_accuracy", "recall": "category_micro_recall", "F1": "category_micro_f1"},
    "sequence": {"accuracy": "hit@10", "recall": "recall@10", "F1": "f1@10"},
}
CLAIM_DEFINITIONS = [
    "interest: accuracy, recall and F1 of `rating >= 4` at probability 0.5 on each user's last interaction;",
    "category: accuracy = per-label accuracy over all (item, genre) pairs of the held-out items "
    "(exact-match accuracy, every genre right, is `category_accuracy` in the table above); recall and F1 "
    "micro-averaged over genres;",
    "sequence: accuracy = Hit@10 (the next item is among the top 10 of all items), recall = Recall@10 "
    "(equal to Hit@10 with one test item per user), F1 = F1@10 = 2PR/(P+R) from the averaged Precision@10 "
    "and Recall@10.",
]


def _f1_at_10(stats: dict) -> Optional[float]:
    if "precision@10" not in stats or "recall@10" not in stats:
        return None
    p, r = stats["precision@10"][0], stats["recall@10"][0]
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"


def markdown(summary: dict, rows: list[dict], specs: list[ModelSpec], command: str, args: argparse.Namespace,
             report: Optional[list[str]] = None) -> str:
    import recbole
    import torch

    versions = [f"torch {torch.__version__}", f"recbole {recbole.__version__}"]
    for package in ("torchrec", "fbgemm_gpu"):
        try:
            versions.append(f"{package} {__import__(package).__version__}")
        except Exception:  # noqa: BLE001 - a version string is optional
            pass
    lines = [
        f"# Benchmark on {args.dataset}", "",
        f"Produced by: `{command}`  ",
        f"Date: {date.today()}; {', '.join(versions)}; Python {platform.python_version()}; "
        f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPU cores.", "",
        f"Split: leave-one-out by time (each user's last interaction is the test case, the one before "
        f"it validation), the same for every model. Up to {args.epochs} epochs with early stopping "
        f"(stopping_step={args.stopping_step})"
        + (f" and at most {args.time_budget:g} minutes of training per run (--time_budget)"
           if getattr(args, "time_budget", 0) else "")
        + f", MAX_ITEM_LIST_LENGTH={args.max_len}, "
        + (f"each model tuned with {args.tune} Optuna trials on validation (below), its best configuration "
           f"run with every seed" if getattr(args, "tune", 0) else
           f"learning rate chosen on validation from {args.lr_grid} per model, seed and fold")
        + f"; seeds {args.seed_list}; sequence task: "
        + ("full ranking over all items" if getattr(args, "protocol", "full") == "full" else
           f"{args.protocol} (the test item among 100 sampled negatives, RecBole's eval_args mode)")
        + (f"; category task: {args.folds}-fold over items" if args.folds > 1 else "")
        + (f". Every run reads {', '.join(f'`{Path(f).name}`' for f in args.config_files.split())}; what a RecBole "
           "model needs beyond it (load_col, its label, no negatives for a CE loss) is derived from it"
           if args.config_files else "")
        + f". Every other setting is the model's default YAML. Values: mean ± std over the selected runs "
        "(seeds x folds); **bold**: best in the column. Every run: [`runs.csv`](runs.csv).", "",
    ]
    for task in TASKS:
        if not summary[task]:
            continue
        metrics = [m for m in TASK_METRICS[task] if any(m in s for s in summary[task].values())]
        best = {}
        for m in metrics:
            values = [(s[m][0], name) for name, s in summary[task].items() if m in s]
            best[m] = (min if m in SMALLER else max)(values)[1]
        lines += [f"## {task}", "", "| model | " + " | ".join(metrics)
                  + " | runs | time/epoch (s) | peak RSS (MB) | epochs run (best) | cut by the cap |",
                  "|---" * (len(metrics) + 6) + "|"]
        for name, stats in summary[task].items():
            cells = []
            for m in metrics:
                cell = _fmt(*stats[m]) if m in stats else "-"
                cells.append(f"**{cell}**" if best.get(m) == name else cell)
            chosen = [r for r in rows if r["model"] == name and int(r["selected"]) == 1]
            tpe = _mean_std([float(r["time_per_epoch_s"]) for r in chosen])[0]
            rss = max(float(r["peak_rss_mb"]) for r in chosen)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(chosen)} | {tpe:.1f} | {rss:.0f} | "
                         f"{_convergence(chosen, args.stopping_step)} |")
        lines.append("")
    mtl = [s.text for s in specs if s.plugin and len(s.tasks) > 1]
    if mtl:
        lines += ["## The source article's claims beside the measured figures", "",
                  "The article reports these figures without defining them. Measured here (test set), with "
                  "the definitions below:", "",
                  "| task | figure | article | " + " | ".join(mtl) + " |", "|---" * (3 + len(mtl)) + "|"]
        for task, claims in CLAIMS.items():
            for figure, claimed in claims.items():
                cells = []
                for name in mtl:
                    stats = summary[task].get(name, {})
                    metric = CLAIM_METRICS[task][figure]
                    value = _f1_at_10(stats) if metric == "f1@10" else (stats[metric][0] if metric in stats else None)
                    cells.append("-" if value is None else f"{value:.1%}")
                lines.append(f"| {task} | {figure} | >= {claimed:.0%} | " + " | ".join(cells) + " |")
        lines += [""] + [f"- {d}" for d in CLAIM_DEFINITIONS] + [""]
    lines += ["![main metrics per task](summary.png)", ""]
    lines += report or []
    return "\n".join(lines)


def cut_by_cap(row: dict, stopping_step: int) -> Optional[bool]:
    """Whether the epoch cap, not early stopping, ended the run: it trained every epoch and its best
    epoch lies within the last ``stopping_step`` ones (RecBole stops after ``stopping_step + 1``
    evaluations without improvement), so it may still have been improving. None when unknown."""
    if row.get("hit_cap") in (None, "") or row.get("best_epoch") in (None, ""):
        return None
    if row.get("hit_budget") not in (None, "") and int(float(row["hit_budget"])):
        return int(float(row["epochs_run"])) - int(float(row["best_epoch"])) <= stopping_step
    if not int(float(row["hit_cap"])):
        return False
    return int(float(row["epochs_run"])) - int(float(row["best_epoch"])) <= stopping_step


def _convergence(chosen: list[dict], stopping_step: int) -> str:
    """``"12, 9, 15 (best 8, 5, 11) | 1 of 3 (!)"``: epochs each run trained, its best epoch, how many
    runs the cap cut short."""
    runs = ", ".join(f"{r.get('epochs_run') or '?'}" for r in chosen)
    best = ", ".join(f"{r.get('best_epoch') or '?'}" for r in chosen)
    known = [c for c in (cut_by_cap(r, stopping_step) for r in chosen) if c is not None]
    cut = sum(known)
    flag = f"{cut} of {len(known)}" + (" (!)" if cut else "") if known else "-"
    return f"{runs} (best {best}) | {flag}"


def _curve(row: dict) -> list:
    try:
        return json.loads(row.get("curve") or "[]")
    except ValueError:
        return []


def curve_panels(rows: list[dict], specs: list[ModelSpec]) -> dict:
    """``{task or mtl_gain: [(spec, its selected rows with a curve)]}``, in task order: a model's
    curve goes to its first task's panel (whatever RecBole calls the metric: ``AUC`` for a CTR
    model, ``interest_auc`` for ours), or to ``mtl_gain``'s when it was validated on that."""
    panels: dict = {}
    for spec in specs:
        chosen = [r for r in rows if r["model"] == spec.text and int(r["selected"]) == 1 and _curve(r)]
        if chosen:
            key = MTL_GAIN if chosen[0].get("valid_metric") == MTL_GAIN else spec.tasks[0]
            panels.setdefault(key, []).append((spec, chosen))
    return {k: panels[k] for k in (*TASKS, MTL_GAIN) if k in panels}


def plot_curves(rows: list[dict], specs: list[ModelSpec], path: Path) -> None:
    """Validation metric against training time (wall clock, incl. validation), one panel per task
    (the models whose first task it is) and one for ``mtl_gain`` (the multi-task models tuned on all
    their tasks at once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curve_panels(rows, specs)
    if not panels:
        return
    order = list(panels)
    columns = 2 if len(order) > 3 else len(order)
    grid = -(-len(order) // columns)
    fig, axes = plt.subplots(grid, columns, figsize=(6 * columns, 4.4 * grid), squeeze=False)
    for ax, key in zip(axes.flat, order):
        metric = ""
        for k, (spec, chosen) in enumerate(panels[key]):
            for j, row in enumerate(chosen):
                curve = _curve(row)
                metric = metric or row.get("valid_metric", "")
                ax.plot([t for t, _ in curve], [v for _, v in curve], marker=".", color=f"C{k % 10}",
                        alpha=0.8, label=spec.text if j == 0 else None)
        ax.set_xlabel("training time, s (incl. validation; the machine may be shared)")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{key} (first task of each model)" if key != MTL_GAIN else
                     f"all tasks ({MTL_GAIN} over the single-task models)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` whole (a failure leaves any earlier file as it was) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


#: Metrics tested for significance per task: per-user means, or recomputed on resampled interactions.
SIGNIFICANCE = {"sequence": ["ndcg@10", "hit@10", "mrr@10"], "interest": ["interest_auc"],
                "category": ["category_micro_f1"]}
#: Per-run file arrays of a task tested per interaction / item: (units, values, labels).
_UNITS = {"interest": ("interest_users", "interest_prob", "interest_label"),
          "category": ("category_items", "category_pred", "category_label")}
#: Tasks whose test units depend on the seed (the category split is drawn per seed).
PER_SEED_UNITS = {"category"}


def _reference(specs: list[ModelSpec]) -> Optional[ModelSpec]:
    """The model every baseline is compared with: MTLRec if benchmarked, else the first multi-task spec."""
    multi = [s for s in specs if s.plugin and len(s.tasks) > 1]
    return next((s for s in multi if s.text == "MTLRec"), multi[0] if multi else None)


def significance(rows: list[dict], specs: list[ModelSpec], out: Path, n_boot: int, seed: int) -> list[str]:
    """The significance section: reference - baseline per task metric, 95% paired bootstrap interval."""
    import numpy as np

    from recbole_mtl import significance as sig

    ref = _reference(specs)
    if ref is None:
        return []

    def runs_of(spec: ModelSpec) -> dict[int, dict]:
        found = {}
        for r in rows:
            if r["model"] == spec.text and int(r["selected"]) == 1 and r.get("per_user") and int(r["fold"]) == 0:
                file = out / r["per_user"]
                if file.is_file():
                    found[int(r["seed"])] = sig.read_npz(file)
        return found

    ref_runs = runs_of(ref)
    lines = ["## Significance", "",
             f"{ref.text} minus each model on the same test cases: the mean difference over users (or test "
             f"interactions) and seeds, and its 95% interval by a paired bootstrap ({n_boot} replicates, seed {seed}) "
             "that resamples test users and seeds together, both models on the same draws (seed s of one model "
             "paired with seed s of the other). Top-k metrics are means of per-user values (RecBole's `metric_info`); "
             "AUC is not a mean over users, so each replicate recomputes it on the resampled test interactions, "
             "and the category task's micro-F1 on the resampled held-out test items (the same items for every "
             "model of a seed; each seed holds out its own items, so they are drawn within each drawn seed). "
             "*not significant*: the interval contains 0. Read from the per-run files under "
             "[`per_user/`](per_user/) named in runs.csv.", "",
             "| task | metric | compared with | difference | 95% interval | seeds | test cases | |",
             "|---|---|---|---|---|---|---|---|"]
    shown = 0
    verdicts: dict = {}  # task -> {"above"|"below"|"same": ["Model (+0.0123)"]}, for the task's first metric
    for task, metrics in SIGNIFICANCE.items():
        if task not in ref.tasks:
            continue
        for spec in specs:
            if spec.text == ref.text or task not in spec.tasks:
                continue
            other = runs_of(spec)
            seeds = sorted(set(ref_runs) & set(other))
            for metric in metrics:
                if task in _UNITS:
                    key, a_val, _ = _UNITS[task]
                    b_val = a_val
                else:
                    key, a_val, b_val = "users", metric, metric
                usable = [s for s in seeds if key in ref_runs[s] and key in other[s]
                          and a_val in ref_runs[s] and b_val in other[s]]
                if not usable:
                    continue
                # the category task's held-out items depend on the seed: matched within each seed
                align = sig.align_per_seed if task in PER_SEED_UNITS else sig.align
                a, b, n = align([ref_runs[s] for s in usable], [other[s] for s in usable], key, a_val)
                if (min(n) if isinstance(n, list) else n) == 0:
                    continue
                if task in _UNITS:
                    labels, _, _ = align([ref_runs[s] for s in usable], [other[s] for s in usable], key,
                                         _UNITS[task][2])
                    statistic = sig.auc_statistic if task == "interest" else sig.micro_f1_statistic
                    stat_a, stat_b = statistic(a, labels), statistic(b, labels)
                else:
                    stat_a, stat_b = sig.mean_statistic(a), sig.mean_statistic(b)
                interval = sig.paired_bootstrap(stat_a, stat_b, n, len(usable), n_boot=n_boot, seed=seed)
                verdict = "significant" if interval.significant else "*not significant*"
                cases = " / ".join(str(c) for c in n) + " (per seed)" if isinstance(n, list) else str(n)
                lines.append(f"| {task} | {metric} | {spec.text} | {interval.mean:+.4f} | "
                             f"[{interval.low:+.4f}, {interval.high:+.4f}] | {len(usable)} | {cases} | {verdict} |")
                shown += 1
                if metric == metrics[0]:
                    side = "same" if not interval.significant else ("above" if interval.mean > 0 else "below")
                    verdicts.setdefault(task, {}).setdefault(side, []).append(f"{spec.text} ({interval.mean:+.4f})")
    if not shown:
        return []
    lines += ["", f"In words ({ref.text} against each model, on each task's first metric above):", ""]
    for task, sides in verdicts.items():
        parts = [f"significantly above {', '.join(sides['above'])}" if sides.get("above") else "",
                 f"significantly below {', '.join(sides['below'])}" if sides.get("below") else "",
                 f"not significantly different from {', '.join(sides['same'])}" if sides.get("same") else ""]
        lines.append(f"- {task} ({SIGNIFICANCE[task][0]}): {ref.text} is " + "; ".join(p for p in parts if p) + ".")
    return lines + [""]


def tuning_section(studies: dict, args: argparse.Namespace) -> list[str]:
    if not studies:
        return []
    from recbole_mtl.tuning import STUDY_FILE, describe

    lines = ["## Tuning", "",
             f"{args.tune} trials per model (Optuna TPE seeded with {args.seed}, median pruning on the per-epoch "
             f"validation metric), on seed {args.seed_list[0]}'s validation set; the search spaces are "
             "`properties/search/<Model>.yaml` (`default.yaml` for a model without its own file); the studies are in "
             f"`{STUDY_FILE}` (SQLite, one study per model, named dataset/model/digest of its space). Each model's "
             "best configuration was then run with every seed on the test set (its parameters are in runs.csv, "
             f"column `params`); for seed {args.seed_list[0]} that run is the best trial itself (column `trial`), "
             "which was tested when it ended and is not trained again. Failed: a trial whose run ended with an "
             "error (it counts towards the budget); a trial cut off by a killed benchmark is not counted, and its "
             "configuration ran again as a new trial (the number in brackets).", "",
             "| model | study | trials complete / pruned / failed | objective | best validation | best configuration |",
             "|---|---|---|---|---|---|"]
    references = {}
    for name, st in studies.items():
        objective = st.get("objective") or ""
        if st.get("reference"):
            references[name] = st["reference"]
        cut = f" ({st['interrupted']} cut off, run again)" if st.get("interrupted") else ""
        lines.append(f"| {name} | `{st['study']}` | {st['complete']} / {st['pruned']} / {st['failed']}{cut} | "
                     f"{objective} | {st['best_value']:.4f} | {describe(st['best'])} |")
    if references:
        lines += ["", f"`{MTL_GAIN}` (`--tune_objective {MTL_GAIN}`): a multi-task model's trials, and its runs' early "
                  "stopping and best checkpoint, use the mean over its tasks of (validation value - reference) / "
                  f"reference, the references being the best validation values of the tuned {GAIN_REFERENCE_MODEL}@<task> "
                  "studies above: " + "; ".join(
                      f"{name}: " + ", ".join(f"{m} {v:.4f}" for m, v in ref.items()) for name, ref in references.items())
                  + ". 0 is on par with the single-task models on average; a model's other columns are test values."]
    return lines + [""]


def extra_sections(rows: list[dict], specs: list[ModelSpec], out: Path, studies: dict,
                   args: argparse.Namespace) -> list[str]:
    """Convergence note, tuning, significance and the learning curves, below the tables."""
    capped = sorted({r["model"] for r in rows if int(r["selected"]) == 1 and cut_by_cap(r, args.stopping_step)})
    lines = ["## Convergence", "",
             f"Every run trains until its validation metric has not improved for {args.stopping_step} + 1 "
             f"evaluations (early stopping) or until {args.epochs} epochs (the cap)"
             + (f" or {args.time_budget:g} minutes of training (--time_budget: the budget counts as the cap here)"
                if getattr(args, "time_budget", 0) else "")
             + "; the tables give each run's epochs "
             "and its best epoch, and how many runs the cap cut short (they trained every epoch and their best epoch "
             f"is among the last {args.stopping_step}: they may still have been improving). "
             + (f"**Cut short by the cap (may not have converged; rerun with a larger --epochs): {', '.join(capped)}.**"
                if capped else "The cap cut no run short: every run stopped early."), "",
             "![validation metric against training time](curves.png)", ""]
    # the order of --models, not the order in which the studies ended (which varies with --jobs)
    order = {spec.text: i for i, spec in enumerate(specs)}
    studies = dict(sorted(studies.items(), key=lambda item: order.get(item[0], len(order))))
    lines += tuning_section(studies, args)
    lines += significance(rows, specs, out, getattr(args, "bootstrap", 1000), args.seed)
    return lines


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(t, PLOTTED[t]) for t in TASKS if summary[t]]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4.2), squeeze=False)
    for ax, (task, metrics) in zip(axes[0], shown):
        names = list(summary[task])
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            means = [summary[task][n].get(metric, (0, 0, 0))[0] for n in names]
            stds = [summary[task][n].get(metric, (0, 0, 0))[1] for n in names]
            ax.bar([i + j * width for i in range(len(names))], means, width, yerr=stds, capsize=3, label=metric)
        ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(task)
        ax.legend(fontsize=8)
    _save_png(fig, path)


#: More seeds than this is taken for a seed value given as a count (``--seeds 2020``).
MAX_SEEDS = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl benchmark",
        description="Train every model on the same split and seeds, record each run, and write a CSV, "
        "a markdown table and a chart under results/<dataset>/.",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--models", default="default",
                        help="comma-separated model specs (Model, Model@task+task, Model:balance, CategoryMLP, "
                        f"CategoryMLP+text) or a preset: {', '.join(f'{k} = {v}' for k, v in PRESETS.items())}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (2020, 2021, ...)")
    parser.add_argument("--seed", type=int, default=2020, help="first seed")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs per run")
    parser.add_argument("--stopping_step", type=int, default=3, help="early-stopping patience (evaluations)")
    parser.add_argument("--lr_grid", default="0.001", help="comma-separated learning rates, chosen on validation")
    parser.add_argument("--tune", type=int, default=0,
                        help="N: tune every model with N Optuna trials (TPE, median pruning) on validation over "
                        "properties/search/<Model>.yaml, then run the best configuration with every seed")
    parser.add_argument("--tune_objective", default="mtl_gain", choices=OBJECTIVES,
                        help="what a multi-task model is tuned (and stopped early) on: mtl_gain, the mean relative "
                        f"gain of its tasks' validation metrics over the tuned {GAIN_REFERENCE_MODEL}@<task> "
                        "models (list them in --models), or first_task, its first task's metric")
    parser.add_argument("--protocol", default="full", choices=PROTOCOLS,
                        help="sequence task: full ranking, or 100 sampled negatives (uniform / by popularity)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the significance tests")
    parser.add_argument("--folds", type=int, default=1, help="K-fold over items for the category task (K >= 2)")
    parser.add_argument("--max_len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH of every sequential model")
    parser.add_argument("--label_field", default=None,
                        help="interest label field for the CTR baselines (default: the dataset's interest_label_field, "
                        "the multi-task models' interest label)")
    parser.add_argument("--label_threshold", type=float, default=None,
                        help="label = field >= threshold (default: the dataset's interest_threshold)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's)")
    parser.add_argument("--config_files", default=None,
                        help='YAML files read by every run, space separated, e.g. the dataset config that convert '
                        'writes: --config_files=dataset/NAME/NAME.yaml')
    parser.add_argument("--out", default=None, help="output folder (default: results/<dataset>)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs (trials and final runs) in parallel, each in its own process; with N cores, "
                        "N runs of OMP_NUM_THREADS=1")
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds one run may take")
    parser.add_argument("--time_budget", type=float, default=0,
                        help="minutes of training (validation included) per run: training stops at the first "
                             "evaluation past it and the best checkpoint so far is tested (0: no budget)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.epilog = "Any other --key=value is a config override applied to every run (e.g. --category_field=class)."
    return parser


def _label(spec: ModelSpec, seed: int, fold: int, lr: float, params: str) -> str:
    tag = f"-p{hashlib.sha256(params.encode()).hexdigest()[:8]}" if params else ""
    return f"{spec.text.replace(':', '_').replace('@', '_').replace('+', '_')}-s{seed}-f{fold}-lr{lr:g}{tag}"


@dataclass
class _Job:
    """One run of the benchmark: a tuning trial (``trial`` set) or a final run (``key`` set)."""

    spec: ModelSpec
    name: str
    config: dict
    log: Path
    extra: dict
    trial: object = None
    key: tuple = ()
    started: float = 0.0


class _Runner:
    """Runs the benchmark's runs, ``args.jobs`` processes at a time, in the order of ``--models``.

    For each model: its tuning trials (``--tune N``), then, once its study is done, its final runs
    (every seed with the best configuration; the grid of ``--lr_grid`` without tuning). The best
    trial already is seed ``--seed``'s final run (same configuration, same seed; it was tested and
    kept its per-user values), so that run is taken from the trial, not trained again. A free process
    moves on to the next model while a model's last trials finish. Every study and ``runs.csv``
    update happens in this process, as each run ends, so a killed benchmark loses only the runs
    that were in flight."""

    def __init__(self, specs: list[ModelSpec], args: argparse.Namespace, base: dict, out: Path):
        self.specs, self.args, self.base, self.out = specs, args, base, out
        self.runs_csv = out / "runs.csv"
        self.rows = read_runs(self.runs_csv)
        self.done = {_key(r) for r in self.rows}
        self.studies: dict = {}   # spec text -> summary of its finished study
        self._tuning: dict = {}   # spec text -> {"study", "name", "space", "defaults", "distributions", "running"}
        self._started: set = set()
        self._failure: Optional[BaseException] = None
        self.recorded = 0  # final runs recorded by this process (trained, or taken from their best trial)
        self.trials = 0    # tuning trials run by this process

    # -- what to run ----------------------------------------------------------------------------
    def plan(self, spec: ModelSpec) -> list[tuple]:
        """The final runs of ``spec``: (spec, seed, fold, learning rate, tuned params as JSON)."""
        args = self.args
        study = self.studies.get(spec.text, {})
        tuned = study.get("params")
        folds = range(args.folds) if _item_tasks(spec) and args.folds > 1 else [0]
        lrs = [float(tuned.get("learning_rate", args.lrs[0]))] if tuned is not None else args.lrs
        # the objective's keys too: the same configuration stopped early on another metric is another run
        params = json.dumps({**tuned, **study.get("objective_config", {})}, sort_keys=True) if tuned is not None else ""
        return [(spec, seed, fold, lr, params) for seed in args.seed_list for fold in folds for lr in lrs]

    def _next(self) -> Optional[_Job]:
        from recbole_mtl import tuning

        closed = True
        while closed:  # a study closed in this pass may let an earlier spec (waiting for it) start
            closed = False
            for spec in self.specs:
                if self.args.tune and spec.text not in self.studies:
                    state = self._open(spec)
                    if state is None:
                        continue  # its mtl_gain references are still being tuned
                    if len(tuning.counted(state["study"])) + state["running"] < self.args.tune:
                        return self._trial_job(spec, state)
                    if state["running"]:
                        continue  # its final runs wait for its last trials
                    self.studies[spec.text] = self._close(spec, state)
                    closed = True
                for key in self.plan(spec):
                    k = (key[0].text, *key[1:])
                    if k not in self.done and k not in self._started:
                        self._started.add(k)
                        return self._final_job(key)
        return None

    def _objective(self, spec: ModelSpec) -> Optional[dict]:
        """The validation keys of a multi-task spec tuned on ``mtl_gain`` (``{}`` for the others);
        ``None`` while a reference's study is still open."""
        if not (spec.multi_task and self.args.tune_objective == "mtl_gain"):
            return {}
        reference = {}
        for ref, task in zip(spec.gain_references(), spec.tasks):
            if ref not in self.studies:
                return None
            reference[VALID_METRIC[task]] = round(float(self.studies[ref]["best_value"]), 6)
        return {"valid_metric": MTL_GAIN, "mtl_gain_reference": reference}

    def _open(self, spec: ModelSpec) -> Optional[dict]:
        """The spec's study state (created or loaded); ``None`` while its objective waits for references."""
        from recbole_mtl import tuning

        if spec.text in self._tuning:
            return self._tuning[spec.text]
        objective = self._objective(spec)
        if objective is None:
            return None
        space = tuning.load_space(tuning.space_path(spec.model.split("+")[0]))
        conditions = {k: self.base.get(k) for k in ("epochs", "stopping_step", "max_len", "protocol", "overrides",
                                                     "label_field", "label_threshold")}
        if objective:
            conditions["objective"] = objective  # new references (a re-tuned ablation): a new study
        name = tuning.study_name(self.args.dataset, spec.text, space, conditions)
        path = self.out / tuning.STUDY_FILE
        metric = objective.get("valid_metric", spec.valid_metric)
        study = tuning.open_study(path, name, metric.lower() not in SMALLER, self.args.seed)
        requeued = tuning.recover(study)
        print(f"tune {spec.text}: study '{name}' in {path}: {len(tuning.counted(study))} of {self.args.tune} trials "
              "done" + (f", {requeued} interrupted trial(s) queued again" if requeued else "")
              + (f"; objective {MTL_GAIN} over {objective['mtl_gain_reference']}" if objective else ""), flush=True)
        # a spec that names its balancing method (MMoE:pcgrad) keeps it
        distributions = {k: d for k, d in space.distributions().items() if not (spec.balance and k == "loss_balance")}
        state = {"study": study, "name": name, "space": space, "defaults": tuning.model_defaults(spec.model),
                 "distributions": distributions, "running": 0, "path": path, "objective": objective}
        self._tuning[spec.text] = state
        return state

    def _trial_job(self, spec: ModelSpec, state: dict) -> _Job:
        from recbole_mtl import tuning

        trial = state["study"].ask(state["distributions"])
        state["running"] += 1
        params = state["space"].overrides(trial.params, state["defaults"])
        config = run_config(spec, self.args.seed_list[0], 0, 1, float(params.get("learning_rate", self.args.lrs[0])),
                            self.base, {**params, **state["objective"]})
        name = self._trial_name(spec, trial.number)
        logs = self.out / "logs" / "tuning"
        config["checkpoint_dir"] = str(self.out / "checkpoints" / "tuning" / name)
        extra = {"tune": {"storage": tuning.storage_url(state["path"]), "study": state["name"],
                          "trial_id": trial._trial_id},
                 "per_user": str(logs / f"{name}.npz")}
        return _Job(spec, name, config, logs / f"{name}.log", extra, trial=trial)

    def _trial_name(self, spec: ModelSpec, number: int) -> str:
        """The name of a trial's log, per-user file and checkpoint folder (with its study's digest:
        trial N of another study of the model, e.g. under another objective, has its own files)."""
        digest = self._tuning[spec.text]["name"].rsplit("/", 1)[-1]
        return f"{_label(spec, self.args.seed_list[0], 0, 0, '')}-{digest}-t{number}"

    def _final_job(self, key: tuple) -> _Job:
        spec, seed, fold, lr, params = key
        args = self.args
        config = run_config(spec, seed, fold, args.folds if _item_tasks(spec) else 1, lr, self.base,
                            json.loads(params) if params else None)
        name = _label(spec, seed, fold, lr, params)
        config["checkpoint_dir"] = str(self.out / "checkpoints" / name)
        return _Job(spec, name, config, self.out / "logs" / f"{name}.log",
                    {"per_user": str(self.out / "per_user" / f"{name}.npz")}, key=key)

    def _close(self, spec: ModelSpec, state: dict) -> dict:
        """The study's summary; the best trial becomes seed ``--seed``'s final run when it can."""
        from recbole_mtl import tuning

        study, space = state["study"], state["space"]
        best = tuning.best_params(study)
        if best is None:
            raise RunFailedError(f"tuning {spec.text}: no trial of study '{state['name']}' completed (see the logs "
                                 f"under {self.out / 'logs' / 'tuning'}); check the search space {space.path}.")
        trials = study.get_trials(deepcopy=False)
        states = [t.state.name for t in trials]
        failed = [t for t in trials if t.state.name == "FAIL"]
        params = space.overrides(best, state["defaults"])
        objective = state["objective"]
        summary = {"study": state["name"], "space": str(space.path), "params": params, "best": best,
                   "best_value": float(study.best_value), "complete": states.count("COMPLETE"),
                   "pruned": states.count("PRUNED"), "failed": sum(tuning.ERROR in t.user_attrs for t in failed),  # as tuning.counted counts them
                   "interrupted": sum(bool(t.user_attrs.get(tuning.INTERRUPTED)) for t in failed),
                   "trial": study.best_trial.number,
                   "objective": objective.get("valid_metric", spec.valid_metric),
                   "reference": objective.get("mtl_gain_reference"), "objective_config": objective}
        self.studies[spec.text] = summary
        self._drop_superseded(spec)
        self._adopt_best_trial(spec, study.best_trial)
        return summary

    def _drop_superseded(self, spec: ModelSpec) -> None:
        """Remove from ``runs.csv`` (and ``per_user/``) the final runs of ``spec`` made with another
        configuration than its study's best (an earlier study, e.g. under another objective)."""
        params = {key[4] for key in self.plan(spec)}
        stale = [r for r in self.rows if r["model"] == spec.text and (r.get("params") or "") not in params]
        if not stale:
            return
        for row in stale:
            self.rows.remove(row)
            self.done.discard(_key(row))
            if row.get("per_user"):
                (self.out / row["per_user"]).unlink(missing_ok=True)
        write_runs(self.runs_csv, select(self.rows))
        print(f"  {spec.text}: {len(stale)} final run(s) of an earlier configuration removed from {self.runs_csv}",
              flush=True)

    def _adopt_best_trial(self, spec: ModelSpec, trial) -> None:
        """Record the best trial as seed ``--seed``'s final run (fold 0) if it holds a tested result
        and the final run would have the same configuration (one fold)."""
        result = trial.user_attrs.get(TRIAL_RESULT)
        key = next((k for k in self.plan(spec) if k[1] == self.args.seed_list[0] and k[2] == 0), None)
        if not result or not result.get("test") or key is None or (_item_tasks(spec) and self.args.folds > 1):
            return
        k = (key[0].text, *key[1:])
        if k in self.done:
            return
        name = _label(*key)
        source = self.out / "logs" / "tuning" / f"{self._trial_name(spec, trial.number)}.npz"
        per_user = Path("per_user") / f"{name}.npz"
        if source.is_file():
            (self.out / per_user).parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.out / per_user, "wb") as f:
                f.write(source.read_bytes())
        elif result.get("per_user_written"):
            return  # its per-user values are gone (another machine's logs): train the run again
        self._record(key, self._final_job(key).config, result, per_user if (self.out / per_user).is_file() else None,
                     trial=trial.number)
        print(f"  {spec.text} seed={key[1]}: the best trial ({trial.number}) is this run "
              f"({TASK_METRICS[spec.tasks[0]][0]} {result['test'].get(TASK_METRICS[spec.tasks[0]][0], float('nan')):.4f})",
              flush=True)

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> dict:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        running: dict = {}
        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            while True:
                while len(running) < self.args.jobs and self._failure is None:
                    try:
                        job = self._next()
                    except Exception as e:  # noqa: BLE001 - runs in flight are recorded first
                        self._failure = e
                        break
                    if job is None:
                        break
                    job.started = time.perf_counter()
                    what = f"trial {job.trial.number}" if job.trial is not None else \
                        f"seed={job.key[1]}" + (f" fold={job.key[2]}" if self.args.folds > 1 else "") + \
                        f" lr={job.key[3]:g}" + (" (tuned)" if job.key[4] else "")
                    print(f"start {job.spec.text} {what}: log {job.log}", flush=True)
                    running[pool.submit(_run_one, job.spec, self.args.dataset, job.config, job.log,
                                        self.args.timeout, job.extra)] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    if job.trial is not None:
                        self._trial_ended(job, future)
                    else:
                        self._final_ended(job, future)
        if self._failure is not None:
            raise self._failure
        return self.studies

    def _trial_ended(self, job: _Job, future) -> None:
        from recbole_mtl import tuning

        state = self._tuning[job.spec.text]
        state["running"] -= 1
        self.trials += 1
        study, trial = state["study"], job.trial
        seconds = time.perf_counter() - job.started
        try:
            result = future.result()
        except (RunFailedError, subprocess.TimeoutExpired) as e:
            trial.set_user_attr(tuning.ERROR, str(e)[:500])
            study.tell(trial, state=optuna_state("FAIL"))
            print(f"  {job.spec.text} trial {trial.number} failed ({type(e).__name__}); log: {job.log}", flush=True)
            return
        if "pruned" in result:
            study.tell(trial, state=optuna_state("PRUNED"))
            outcome = "pruned"
        else:
            kept = {k: result.get(k) for k in ("test", "valid_score", "epochs_run", "best_epoch", "epoch_cap",
                                              "hit_cap", "hit_budget", "time_per_epoch_s", "train_time_s", "peak_rss_mb", "split",
                                              "curve")}
            kept["per_user_written"] = Path(job.extra["per_user"]).is_file()
            trial.set_user_attr(TRIAL_RESULT, kept)
            study.tell(trial, float(result["valid_score"]))
            outcome = f"{job.config.get('valid_metric', job.spec.valid_metric)} {float(result['valid_score']):.4f}"
        print(f"  {job.spec.text} trial {trial.number}: {tuning.describe(trial.params)}: {outcome} ({seconds:.0f} s)",
              flush=True)

    def _final_ended(self, job: _Job, future) -> None:
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - the others in flight are still recorded
            self._failure = self._failure or e
            return
        per_user = Path("per_user") / f"{job.name}.npz"
        self._record(job.key, job.config, result, per_user if (self.out / per_user).exists() else None)
        main_metric = TASK_METRICS[job.spec.tasks[0]][0]
        print(f"  {job.spec.text} seed={job.key[1]} done in {time.perf_counter() - job.started:.0f} s "
              f"({main_metric} {result['test'].get(main_metric, float('nan')):.4f})", flush=True)

    def _record(self, key: tuple, config: dict, result: dict, per_user: Optional[Path], trial=None) -> None:
        spec, seed, fold, lr, params = key
        row = {"model": spec.text, "seed": seed, "fold": fold, "learning_rate": lr, "params": params,
               "tasks": "+".join(spec.tasks), "selected": 0, "protocol": self.args.protocol,
               "valid_metric": config.get("valid_metric", spec.valid_metric),
               "per_user": per_user.as_posix() if per_user else "", "trial": "" if trial is None else trial,
               **{k: result.get(k, "") for k in ("valid_score", "epochs_run", "best_epoch", "epoch_cap", "hit_cap",
                                                "hit_budget", "time_per_epoch_s", "train_time_s", "peak_rss_mb", "split", "curve")},
               **result["test"]}
        self.rows.append(row)
        self.done.add(_key(row))
        self.recorded += 1
        write_runs(self.runs_csv, select(self.rows))


def optuna_state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[ModelSpec], dict, Path]:
    """The command line: its arguments, model specs, the settings every run shares, the output folder."""
    from recbole_mtl.hardening import literal_convert

    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv))
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised argument(s) {bad}: config overrides take the form --key=value")
    overrides = literal_convert(dict(a[2:].split("=", 1) for a in unknown))
    models = ",".join(PRESETS.get(m.strip(), m.strip()) for m in args.models.split(","))
    try:
        specs = [parse_spec(s.strip()) for s in models.split(",") if s.strip()]
        lrs = [float(x) for x in args.lr_grid.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--lr_grid must be comma-separated numbers, e.g. 0.001,0.003 ({e}).") from None
    if args.time_budget < 0:
        raise ConfigError(f"--time_budget is minutes of training per run, 0 for none; got {args.time_budget:g}.")
    if args.seeds < 1 or args.folds < 1 or args.epochs < 1 or args.tune < 0 or args.jobs < 1:
        raise ConfigError("--seeds, --folds, --epochs and --jobs must be at least 1, --tune at least 0.")
    if args.seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds is how many seeds to run ({args.seed}, {args.seed + 1}, ...), at most {MAX_SEEDS}; "
                          f"got {args.seeds}. To start from another seed, set --seed={args.seeds} --seeds=3.")
    if args.tune and args.tune_objective == "mtl_gain":
        texts = {s.text for s in specs}
        for spec in (s for s in specs if s.multi_task):
            missing = [r for r in spec.gain_references() if r not in texts]
            if missing:
                raise ConfigError(f"--tune_objective mtl_gain: {spec.text} is tuned on its tasks' gain over the tuned "
                                  f"single-task models {spec.gain_references()}; add {','.join(missing)} to --models "
                                  "(or tune on the first task's metric: --tune_objective first_task).")
    args.lrs = lrs
    args.seed_list = [args.seed + i for i in range(args.seeds)]
    out = Path(args.out or Path("results") / args.dataset)
    base = {"epochs": args.epochs, "stopping_step": args.stopping_step, "max_len": args.max_len,
            "checkpoint_dir": str(out / "checkpoints"), "label_field": args.label_field,
            "label_threshold": args.label_threshold, "data_path": args.data_path, "overrides": overrides,
            "config_files": [str(Path(f).resolve()) for f in (args.config_files or "").split() if f],
            "protocol": args.protocol, "time_budget": args.time_budget}
    return args, specs, base, out


def main(argv: Sequence[str]) -> dict:
    """Run (or resume) the benchmark; returns the summary."""
    args, specs, base, out = parse(argv)
    runs_csv = out / "runs.csv"
    runner = _Runner(specs, args, base, out)
    print(f"benchmark {args.dataset}: {len(specs)} model(s)"
          + (f", {args.tune} tuning trial(s) each, then the best configuration" if args.tune else "")
          + f" with {args.seeds} seed(s); {args.jobs} run(s) at a time; what {runs_csv}"
          + (f" and {out / 'tuning.db'}" if args.tune else "") + " already hold is skipped", flush=True)
    studies = runner.run()
    plan = [p for spec in specs for p in runner.plan(spec)]
    planned = {(spec.text, seed, fold, lr, params) for spec, seed, fold, lr, params in plan}
    print(f"benchmark {args.dataset}: {len(planned)} final run(s): {len(planned) - runner.recorded} already in "
          f"{runs_csv}, {runner.recorded} recorded now ({runner.trials} tuning trial(s) run now)", flush=True)
    rows = select([r for r in read_runs(runs_csv) if _key(r) in planned])
    summary = summarise(rows, specs)
    command = "python run_recbole_mtl.py benchmark " + " ".join(argv)
    report = extra_sections(rows, specs, out, studies, args)
    atomic_write_text(out / "summary.md", markdown(summary, rows, specs, command.strip(), args, report))
    plot(summary, out / "summary.png")
    plot_curves(rows, specs, out / "curves.png")
    print(f"wrote {runs_csv}, {out / 'summary.md'}, {out / 'summary.png'}, {out / 'curves.png'}")
    return summary
