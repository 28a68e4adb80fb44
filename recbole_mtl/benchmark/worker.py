"""One benchmark run in its own process: the config every model gets (:func:`run_config`), the
:func:`worker` that trains and tests one configuration, and :func:`_run_one`, which launches it in a
fresh Python process and reads its result back."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from recbole_mtl.benchmark.specs import CATEGORY_MLP, CATEGORY_MLP_TEXT, ModelSpec, parse_spec
from recbole_mtl.derive import split_of
from recbole_mtl.errors import RunFailedError, TimeBudgetSpent

LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}
RESULT_TAG = "BENCHMARK_RESULT "
#: The run config's key (seconds) of ``--time_budget``: the worker stops training after the first
#: evaluation past it and tests the best checkpoint so far.
TIME_BUDGET_KEY = "benchmark_time_budget_s"


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
            raise TimeBudgetSpent(epoch_idx)

    hit_budget = 0
    try:
        best_valid_score, _ = trainer.fit(built.train_data, built.valid_data, saved=True, show_progress=False,
                                          callback_fn=record)
    except TimeBudgetSpent:
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


def _run_one(spec: ModelSpec, dataset: str, config: dict, log_file: Path, timeout: int,
             extra: Optional[dict] = None) -> dict:
    """Run :func:`worker` in a fresh Python process; its output goes to ``log_file``."""
    code = ("import json, sys\nfrom recbole_mtl.benchmark import worker, RESULT_TAG\n"
            "r = worker(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]))\n"
            "print(RESULT_TAG + json.dumps(r), flush=True)\n")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
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
