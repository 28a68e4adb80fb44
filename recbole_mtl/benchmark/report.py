"""``summary.md``: the summary of the selected runs, its tables, and the sections below them
(the article's claims, convergence, tuning, significance)."""

from __future__ import annotations

import argparse
import math
import os
import platform
from datetime import date
from pathlib import Path
from typing import Optional

from recbole_mtl.benchmark.specs import GAIN_REFERENCE_MODEL, SMALLER, TASK_METRICS, TASKS, ModelSpec
from recbole_mtl.trainer import MTL_GAIN


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
