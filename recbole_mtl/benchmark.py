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
import io
import json
import math
import os
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
FIELDS = ["model", "seed", "fold", "learning_rate", "tasks", "selected", "valid_metric", "valid_score",
          "epochs_run", "best_epoch", "time_per_epoch_s", "train_time_s", "peak_rss_mb", "split", "curve"]


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


def parse_spec(text: str) -> ModelSpec:
    """``Model[@task+task][:balance]`` -> :class:`ModelSpec`, with the model's competing tasks."""
    from recbole.utils import ModelType

    from recbole_mtl.utils import get_model, plugin_model_names

    rest, _, balance = text.partition(":")
    name, _, task_text = rest.partition("@")
    if name == CATEGORY_MLP:
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
def run_config(spec: ModelSpec, seed: int, fold: int, folds: int, learning_rate: float, args: dict) -> dict:
    """The config dict of one run: the same split, seed, epochs and patience for every model."""
    config = {
        "seed": seed, "epochs": args["epochs"], "stopping_step": args["stopping_step"], "learning_rate": learning_rate,
        "show_progress": False, "state": "INFO", "checkpoint_dir": args["checkpoint_dir"],
        "MAX_ITEM_LIST_LENGTH": args["max_len"], "eval_args": dict(LEAVE_ONE_OUT),
    }
    if not _files_set(args.get("config_files"), "load_col"):
        config["load_col"] = None  # every column: the models read the features they use
    if args.get("data_path"):
        config["data_path"] = args["data_path"]
    if args.get("config_files"):
        config["config_files"] = list(args["config_files"])  # the dataset config: each run reads it
    if spec.plugin or spec.model == CATEGORY_MLP:
        config.update({"tasks": list(spec.tasks), "valid_metric": spec.valid_metric,
                       "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision"], "topk": [10]})
        config["eval_args"]["mode"] = "full"
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
        config["eval_args"]["mode"] = "full"
    config.update(args.get("overrides") or {})  # the user's --key=value, for every model
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


def _interest_metrics_of_baseline(trainer, test_data, config) -> dict:
    """Score a CTR baseline's test predictions with the multi-task models' interest metrics."""
    import torch

    from recbole.evaluator.metrics import AUC, LogLoss

    from recbole_mtl.tasks.interest import interest_metrics

    probs, labels = [], []
    trainer.model.eval()
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0] if isinstance(batch, tuple) else batch
            interaction = interaction.to(config["device"])
            probs.append(trainer.model.predict(interaction).detach().cpu().float())
            labels.append(interaction[config["LABEL_FIELD"]].detach().cpu().float())
    return interest_metrics(torch.cat(probs), torch.cat(labels), AUC(config), LogLoss(config),
                            int(config["metric_decimal_place"] or 4))


def worker(spec_text: str, dataset: str, config_dict: dict) -> dict:
    """Train and test one model; returns its test metrics, time per epoch and peak memory."""
    from recbole.utils import init_logger, init_seed

    from recbole_mtl import pipeline
    from recbole_mtl.config import Config
    from recbole_mtl.utils import peak_rss_mb

    spec = parse_spec(spec_text)
    config_dict = dict(config_dict)
    config_files = config_dict.pop("config_files", None)
    if spec.model == CATEGORY_MLP:
        from recbole_mtl.baselines import train_category_mlp

        return train_category_mlp(dataset, config_dict, config_files)
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

    best_valid_score, _ = trainer.fit(built.train_data, built.valid_data, saved=True, show_progress=False,
                                      callback_fn=record)
    train_time = time.perf_counter() - start
    epochs_run = max(1, len(trainer.train_loss_dict))
    result = dict(trainer.evaluate(test_data, load_best_model=True))
    if spec.tasks == ("interest",) and not spec.plugin:
        result = _interest_metrics_of_baseline(trainer, test_data, config)
    return {
        "test": {k: float(v) for k, v in result.items()},
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
    return (row["model"], int(row["seed"]), int(row["fold"]), float(row["learning_rate"]))


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


def _run_one(spec: ModelSpec, dataset: str, config: dict, log_file: Path, timeout: int) -> dict:
    """Run :func:`worker` in a fresh Python process; its output goes to ``log_file``."""
    code = ("import json, sys\nfrom recbole_mtl.benchmark import worker, RESULT_TAG\n"
            "r = worker(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))\nprint(RESULT_TAG + json.dumps(r), flush=True)\n")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    with open(log_file, "w") as log:
        proc = subprocess.run([sys.executable, "-c", code, spec.text, dataset, json.dumps(config)],
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


def markdown(summary: dict, rows: list[dict], specs: list[ModelSpec], command: str, args: argparse.Namespace) -> str:
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
        f"Date: {date.today()}; {', '.join(versions)}; {os.cpu_count()} CPU cores.", "",
        f"Split: leave-one-out by time (each user's last interaction is the test case, the one before "
        f"it validation), the same for every model. Up to {args.epochs} epochs with early stopping "
        f"(stopping_step={args.stopping_step}), MAX_ITEM_LIST_LENGTH={args.max_len}, learning rate chosen on "
        f"validation from {args.lr_grid} per model, seed and fold; seeds {args.seed_list}"
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
        lines += [f"## {task}", "", "| model | " + " | ".join(metrics) + " | runs | time/epoch (s) | peak RSS (MB) |",
                  "|---" * (len(metrics) + 4) + "|"]
        for name, stats in summary[task].items():
            cells = []
            for m in metrics:
                cell = _fmt(*stats[m]) if m in stats else "-"
                cells.append(f"**{cell}**" if best.get(m) == name else cell)
            chosen = [r for r in rows if r["model"] == name and int(r["selected"]) == 1]
            tpe = _mean_std([float(r["time_per_epoch_s"]) for r in chosen])[0]
            rss = max(float(r["peak_rss_mb"]) for r in chosen)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(chosen)} | {tpe:.1f} | {rss:.0f} |")
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
    return "\n".join(lines)


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
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)

    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl benchmark",
        description="Train every model on the same split and seeds, record each run, and write a CSV, "
        "a markdown table and a chart under results/<dataset>/.",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--models", default="MTLRec,SASRec,GRU4Rec,DeepFM,MTLRec@category,CategoryMLP",
                        help="comma-separated model specs: Model, Model@task+task, Model:balance, CategoryMLP")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (2020, 2021, ...)")
    parser.add_argument("--seed", type=int, default=2020, help="first seed")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs per run")
    parser.add_argument("--stopping_step", type=int, default=3, help="early-stopping patience (evaluations)")
    parser.add_argument("--lr_grid", default="0.001", help="comma-separated learning rates, chosen on validation")
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
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds one run may take")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.epilog = "Any other --key=value is a config override applied to every run (e.g. --category_field=class)."
    return parser


def main(argv: Sequence[str]) -> dict:
    """Run (or resume) the benchmark; returns the summary."""
    from recbole_mtl.hardening import literal_convert

    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv))
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised argument(s) {bad}: config overrides take the form --key=value")
    overrides = literal_convert(dict(a[2:].split("=", 1) for a in unknown))
    try:
        specs = [parse_spec(s.strip()) for s in args.models.split(",") if s.strip()]
        lrs = [float(x) for x in args.lr_grid.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--lr_grid must be comma-separated numbers, e.g. 0.001,0.003 ({e}).") from None
    if args.seeds < 1 or args.folds < 1 or args.epochs < 1:
        raise ConfigError("--seeds, --folds and --epochs must be at least 1.")
    args.seed_list = [args.seed + i for i in range(args.seeds)]
    out = Path(args.out or Path("results") / args.dataset)
    runs_csv = out / "runs.csv"
    rows = read_runs(runs_csv)
    done = {_key(r) for r in rows}
    base = {"epochs": args.epochs, "stopping_step": args.stopping_step, "max_len": args.max_len,
            "checkpoint_dir": str(out / "checkpoints"), "label_field": args.label_field,
            "label_threshold": args.label_threshold, "data_path": args.data_path, "overrides": overrides,
            "config_files": [str(Path(f).resolve()) for f in (args.config_files or "").split() if f]}
    plan = []
    for seed in args.seed_list:
        for spec in specs:
            folds = range(args.folds) if _item_tasks(spec) and args.folds > 1 else [0]
            for fold in folds:
                for lr in lrs:
                    plan.append((spec, seed, fold, lr))
    todo = [p for p in plan if (p[0].text, p[1], p[2], p[3]) not in done]
    print(f"benchmark {args.dataset}: {len(plan)} runs, {len(plan) - len(todo)} already in {runs_csv}, "
          f"{len(todo)} to go", flush=True)
    started = time.perf_counter()
    for i, (spec, seed, fold, lr) in enumerate(todo, start=1):
        label = f"{spec.text} seed={seed}" + (f" fold={fold}" if args.folds > 1 else "") + f" lr={lr:g}"
        print(f"[{i}/{len(todo)}] {label} ...", end=" ", flush=True)
        config = run_config(spec, seed, fold, args.folds if _item_tasks(spec) else 1, lr, base)
        t0 = time.perf_counter()
        log = out / "logs" / f"{spec.text.replace(':', '_').replace('@', '_')}-s{seed}-f{fold}-lr{lr:g}.log"
        result = _run_one(spec, args.dataset, config, log, args.timeout)
        row = {"model": spec.text, "seed": seed, "fold": fold, "learning_rate": lr, "tasks": "+".join(spec.tasks),
               "selected": 0, "valid_metric": config.get("valid_metric", spec.valid_metric),
               **{k: result.get(k, "") for k in ("valid_score", "epochs_run", "best_epoch", "time_per_epoch_s",
                                                "train_time_s", "peak_rss_mb", "split", "curve")},
               **result["test"]}
        rows.append(row)
        write_runs(runs_csv, select(rows))
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(todo) - i)
        main_metric = TASK_METRICS[spec.tasks[0]][0]
        print(f"done in {time.perf_counter() - t0:.0f} s ({main_metric} {result['test'].get(main_metric, float('nan')):.4f}); "
              f"about {eta / 60:.0f} min left", flush=True)
    rows = select(read_runs(runs_csv))
    planned = {(spec.text, seed, fold, lr) for spec, seed, fold, lr in plan}
    rows = [r for r in rows if _key(r) in planned]
    summary = summarise(rows, specs)
    command = "python run_recbole_mtl.py benchmark " + " ".join(argv)
    atomic_write_text(out / "summary.md", markdown(summary, rows, specs, command.strip(), args))
    plot(summary, out / "summary.png")
    print(f"wrote {runs_csv}, {out / 'summary.md'}, {out / 'summary.png'}")
    return summary
