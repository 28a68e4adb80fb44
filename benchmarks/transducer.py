"""Does training every position pay? MTLRec (sequence transducer) against SASRec, DeepFM and its ablations.

    python benchmarks/transducer.py [--seeds 3] [--baseline_seeds 1] [--max_len 50] [--epochs 200]
                                    [--stopping_step 5]

On ml-100k, leave-one-out by time, full ranking, one split for every model, through the
``benchmark`` command (each run in its own process, resumable: a rerun skips finished runs):

* ``results/transducer/runs.csv``: MTLRec, its single-task ablations (``MTLRec@sequence``,
  ``MTLRec@interest``, ``MTLRec@category``) and DeepFM with ``--seeds`` seeds, SASRec with
  ``--baseline_seeds`` (one SASRec run at ``MAX_ITEM_LIST_LENGTH`` 50 takes hours on 2 CPU cores);
  every run to early stopping (``--stopping_step`` evaluations without improvement, at most
  ``--epochs``), with its validation curve (seconds since training started, validation score);
* ``results/transducer/<variant>/runs.csv``: MTLRec with one change (``no_actions``:
  ``action_input: False``; ``mlp_category``: ``category_head: mlp``; ``hstu``: ``encoder: hstu``;
  ``item_labels``: ``item_label_features: True``), the same seeds.

Then writes ``results/transducer/report.md`` (targets, quality, "does multi-task pay", HSTU against
the Transformer, time to SASRec's best validation NDCG@10) and ``results/transducer/curves.png``
(validation NDCG@10 against training time). Epoch times are measured apart, on a quiet machine, by
``benchmarks/epoch_time.py`` (``results/epoch_time.md``): runs here may share the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
from datetime import date
from pathlib import Path

import torch

import recbole_mtl  # noqa: F401
from recbole_mtl import benchmark
from recbole_mtl.checkpoint import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
MAIN = ["MTLRec", "MTLRec@sequence", "MTLRec@interest", "MTLRec@category", "DeepFM"]
SHOWN = {"sequence": ["ndcg@10", "hit@10", "mrr@10"], "interest": ["interest_auc", "interest_logloss", "interest_f1"],
         "category": ["category_micro_f1", "category_macro_f1", "category_accuracy"]}
ABLATION = {"sequence": "MTLRec@sequence", "interest": "MTLRec@interest", "category": "MTLRec@category"}


#: MTLRec variants run apart (their own runs.csv under results/transducer/<name>/): name -> override.
VARIANTS = {"no_actions": "--action_input=False", "mlp_category": "--category_head=mlp",
            "hstu": "--encoder=hstu", "item_labels": "--item_label_features=True"}
#: what each variant changes, for the report
VARIANT_TEXT = {
    "no_actions": "`action_input: False` (the history carries item ids only, not whether each interaction was liked)",
    "mlp_category": "`category_head: mlp` (an MLP per item on the item tower instead of label attention over "
                    "the training items)",
    "hstu": "`encoder: hstu` instead of the Transformer",
    "item_labels": "`item_label_features: True` (the interest head also reads the true categories of training "
                   "items and the category head's predictions for the others)",
}


def run_benchmarks(args) -> Path:
    out = Path(args.out)
    common = ["--dataset", "ml-100k", "--max_len", str(args.max_len), "--epochs", str(args.epochs),
              "--stopping_step", str(args.stopping_step)]
    if args.baseline_seeds > 0:
        benchmark.main(common + ["--models", "SASRec", "--seeds", str(args.baseline_seeds), "--out", str(out)])
    benchmark.main(common + ["--models", ",".join(MAIN), "--seeds", str(args.seeds), "--out", str(out)])
    for name, override in VARIANTS.items():
        benchmark.main(common + ["--models", "MTLRec", "--seeds", str(args.seeds), "--out", str(out / name), override])
    return out


def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0), n


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std, n = _stats(values)
    return f"{mean:.4f} ± {std:.4f} ({n})"


def _values(rows: list[dict], model: str, metric: str) -> list[float]:
    return [float(r[metric]) for r in rows if r["model"] == model and r.get(metric) not in (None, "")]


def _by_seed(rows: list[dict], model: str, metric: str) -> dict[int, float]:
    return {int(r["seed"]): float(r[metric]) for r in rows if r["model"] == model and r.get(metric) not in (None, "")}


def _curve(row: dict) -> list[tuple[float, float]]:
    return [tuple(p) for p in json.loads(row.get("curve") or "[]")]


def _epoch_seconds() -> dict[str, float]:
    """Quiet-machine training seconds per epoch from results/epoch_time.md (model -> seconds)."""
    path = REPO / "results" / "epoch_time.md"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\| (.+?) \| .+? \| ([0-9.]+) \|", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def time_to_quality(rows: list[dict]) -> tuple[list[str], dict]:
    """Lines on the time each MTLRec seed needs to reach SASRec's best validation NDCG@10."""
    sasrec = [r for r in rows if r["model"] == "SASRec"]
    mtl = [r for r in rows if r["model"] == "MTLRec"]
    if not sasrec or not mtl:
        return ["(SASRec or MTLRec runs missing)"], {}
    epoch = _epoch_seconds()
    lines = ["| run | best valid NDCG@10 | epochs to reach SASRec's best | wall time to reach (s) | "
             "training time to reach at quiet-machine epoch times (s) |", "|---|---|---|---|---|"]
    figures = {}
    sas_best_epochs, sas_wall = [], []
    for r in sasrec:
        curve = _curve(r)
        best = max(range(len(curve)), key=lambda i: curve[i][1])
        sas_best_epochs.append(best + 1)
        sas_wall.append(curve[best][0])
        quiet = (best + 1) * epoch["SASRec"] if "SASRec" in epoch else float("nan")
        lines.append(f"| SASRec seed {r['seed']} | {curve[best][1]:.4f} | {best + 1} (its best) | {curve[best][0]:.0f} | "
                     f"{quiet:.0f} |")
        figures.setdefault("sasrec_best", []).append(curve[best][1])
        figures.setdefault("sasrec_quiet", []).append(quiet)
        figures.setdefault("sasrec_wall", []).append(curve[best][0])
    target = max(figures["sasrec_best"])
    for r in mtl:
        curve = _curve(r)
        own = max(range(len(curve)), key=lambda i: curve[i][1])
        figures.setdefault("mtl_best", []).append(curve[own][1])
        figures.setdefault("mtl_own_quiet", []).append((own + 1) * epoch.get("MTLRec", float("nan")))
        reach = next((i for i, (_, score) in enumerate(curve) if score >= target), None)
        if reach is None:
            lines.append(f"| MTLRec seed {r['seed']} | {max(s for _, s in curve):.4f} | never | - | - |")
            figures.setdefault("mtl_quiet", []).append(float("inf"))
            continue
        quiet = (reach + 1) * epoch.get("MTLRec", float("nan"))
        lines.append(f"| MTLRec seed {r['seed']} | {max(s for _, s in curve):.4f} | {reach + 1} | {curve[reach][0]:.0f} | "
                     f"{quiet:.1f} |")
        figures.setdefault("mtl_quiet", []).append(quiet)
        figures.setdefault("mtl_wall", []).append(curve[reach][0])
    return lines, figures


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        if r["model"] not in ("SASRec", "MTLRec"):
            continue
        curve = _curve(r)
        if curve:
            ax.plot([t / 60 for t, _ in curve], [s for _, s in curve], marker=".",
                    label=f"{r['model']} seed {r['seed']}", color="tab:red" if r["model"] == "SASRec" else None)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("training time, minutes (incl. validation; machine may be shared)")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("ml-100k, leave-one-out by time, full ranking")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def _selected(path: Path) -> list[dict]:
    return [r for r in benchmark.read_runs(path) if int(r["selected"]) == 1]


def report(args, out: Path) -> str:
    rows = _selected(out / "runs.csv")
    variants = {name: _selected(out / name / "runs.csv") for name in VARIANTS}
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    # the command that runs (or resumes) every run; --report_only rewrites this file from them
    command = threads + "python benchmarks/transducer.py " + " ".join(a for a in sys.argv[1:] if a != "--report_only")
    lines = [
        "# The sequence transducer on ml-100k: targets, quality, multi-task ablations, HSTU",
        "",
        f"Command: `{command.strip()}` (runs missing from the runs.csv files are run, the rest are read)  ",
        f"Date: {date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}. Leave-one-out by time, full ranking, the same split for every model; "
        f"MAX_ITEM_LIST_LENGTH={args.max_len}; every run to early stopping (stopping_step={args.stopping_step}, "
        f"at most {args.epochs} epochs); each model's YAML defaults, learning rate 0.001. Values: mean ± std "
        "(runs). Every run, with its validation curve: [`runs.csv`](runs.csv), "
        + ", ".join(f"[`{n}/runs.csv`]({n}/runs.csv)" for n in VARIANTS) + ".",
        "",
    ]
    ndcg_m, ndcg_s = _values(rows, "MTLRec", "ndcg@10"), _values(rows, "SASRec", "ndcg@10")
    auc_m, auc_d = _values(rows, "MTLRec", "interest_auc"), _values(rows, "DeepFM", "interest_auc")
    f1_m, f1_c = _values(rows, "MTLRec", "category_micro_f1"), _values(rows, "MTLRec@category", "category_micro_f1")
    epoch = _epoch_seconds()
    tq_lines, tq = time_to_quality(rows)
    targets = []
    if "MTLRec" in epoch and "SASRec" in epoch:
        ratio = epoch["MTLRec"] / epoch["SASRec"]
        targets.append(("time per epoch, MTLRec / SASRec (results/epoch_time.md)", f"{ratio:.3f}x", "<= 0.05x",
                        ratio <= 0.05))
    if tq.get("mtl_quiet") and tq.get("sasrec_quiet"):
        ratio = max(tq["mtl_quiet"]) / min(tq["sasrec_quiet"])
        measured = f"{ratio:.3f}x" if math.isfinite(ratio) else (
            f"never reached: MTLRec's best valid NDCG@10 {max(tq['mtl_best']):.4f} (best seed) < SASRec's "
            f"{max(tq['sasrec_best']):.4f}")
        targets.append(("training time to SASRec's best valid NDCG@10, MTLRec (slowest seed) / SASRec",
                        measured, "<= 0.1x", ratio <= 0.1))
        own = max(tq["mtl_own_quiet"]) / min(tq["sasrec_quiet"])
        targets.append(("(for reference, not a target) training time to each model's own best valid NDCG@10, "
                        "MTLRec (slowest seed) / SASRec, at quiet-machine epoch times", f"{own:.3f}x", "-", None))
    if not ndcg_s:
        targets.append(("test NDCG@10, MTLRec / SASRec", "not measured (no SASRec run)", ">= 1.3x", None))
        targets.append(("training time to SASRec's best valid NDCG@10, MTLRec / SASRec", "not measured (no SASRec run)",
                        "<= 0.1x", None))
    if ndcg_m and ndcg_s:
        ratio = _stats(ndcg_m)[0] / _stats(ndcg_s)[0]
        targets.append(("test NDCG@10, MTLRec / SASRec", f"{ratio:.2f}x", ">= 1.3x", ratio >= 1.3))
    if auc_m and auc_d:
        diff = _stats(auc_m)[0] - _stats(auc_d)[0]
        targets.append(("test interest AUC, MTLRec - DeepFM", f"{diff:+.4f}", ">= 0", diff >= 0))
    if f1_m and f1_c:
        diff = _stats(f1_m)[0] - _stats(f1_c)[0]
        targets.append(("test category micro-F1, MTLRec - MTLRec@category", f"{diff:+.4f}", ">= +0.03", diff >= 0.03))
    lines += ["## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {value} | {goal} | {'-' if ok is None else 'yes' if ok else '**no**'} |"
              for name, value, goal, ok in targets]
    lines += ["", "## Test quality", ""]
    models = ["MTLRec", "SASRec", "DeepFM", "MTLRec@sequence", "MTLRec@interest", "MTLRec@category"]
    metrics = [m for task in SHOWN.values() for m in task]
    lines += ["| model | " + " | ".join(metrics) + " | best epoch | epochs run |", "|---" * (len(metrics) + 3) + "|"]
    for model in models:
        if not any(r["model"] == model for r in rows):
            continue
        cells = [_cell(_values(rows, model, m)) for m in metrics]
        best = ", ".join(str(r.get("best_epoch", "")) for r in rows if r["model"] == model)
        run = ", ".join(str(r["epochs_run"]) for r in rows if r["model"] == model)
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {best} | {run} |")
    lines += ["", "## Does multi-task pay? MTLRec against its single-task ablations", "",
              "Per task, the difference MTLRec - MTLRec@task on that task's metric, paired by seed (mean ± std over "
              "seeds; an interval of ± 2 std/sqrt(n) that contains 0 is marked *not significant*).", "",
              "| task | metric | MTLRec | single-task | difference | |", "|---|---|---|---|---|---|"]
    for task, ablation in ABLATION.items():
        metric = SHOWN[task][0]
        a, b = _by_seed(rows, "MTLRec", metric), _by_seed(rows, ablation, metric)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        diffs = [a[s] - b[s] for s in seeds]
        mean, std, n = _stats(diffs)
        half = 2 * std / math.sqrt(n) if n > 1 else float("inf")
        verdict = "not significant" if abs(mean) <= half else ("multi-task better" if mean > 0 else "single-task better")
        lines.append(f"| {task} | {metric} | {_cell([a[s] for s in seeds])} | {_cell([b[s] for s in seeds])} | "
                     f"{mean:+.4f} ± {std:.4f} | {verdict} |")
    lines += ["", "## MTLRec variants (same seeds and settings, one change each)", "",
              "; ".join(f"`{name}`: {text}" for name, text in VARIANT_TEXT.items()) + ".", "",
              "| variant | " + " | ".join(metrics) + " | s/epoch incl. validation |", "|---" * (len(metrics) + 2) + "|"]
    for name, source in [("default", rows)] + list(variants.items()):
        runs_of = [r for r in source if r["model"] == "MTLRec"]
        if runs_of:
            per_epoch = _stats([float(r["time_per_epoch_s"]) for r in runs_of])[0]
            lines.append(f"| {name} | " + " | ".join(_cell(_values(source, "MTLRec", m)) for m in metrics)
                         + f" | {per_epoch:.1f} |")
    lines += ["", "## Time to SASRec's best validation NDCG@10", "",
              "Wall times come from each run's validation curve (training and validation, on a machine that may "
              "have been shared); the last column converts epochs with the quiet-machine training times of "
              "results/epoch_time.md.", ""] + tq_lines
    lines += ["", "![validation NDCG@10 against training time](curves.png)", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baseline_seeds", type=int, default=1,
                        help="seeds of SASRec (hours each at length 50 on 2 CPU cores; 0: none)")
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "results" / "transducer"))
    parser.add_argument("--report_only", action="store_true", help="only rewrite the report from the runs on disk")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.report_only:
        run_benchmarks(args)
    text = report(args, out)
    plot(_selected(out / "runs.csv"), out / "curves.png")
    atomic_write_text(out / "report.md", text)
    print(text)


if __name__ == "__main__":
    main()
