"""MTLRec's next-item task against RecBole's SASRec and GRU4Rec on a public benchmark, under its papers' protocol.

    python benchmarks/published_protocol.py --dataset beauty --data_path DATA \\
        --config_files DATA/beauty/beauty.yaml [--seeds 3] [--baseline_seeds 1] [--epochs 60] \\
        [--stopping_step 5] [--jobs 2] [--target 0.045] [--reference 0.0403] [--out results/beauty] [--report_only]

``DATA`` is the folder ``convert --format sequences`` wrote; its dataset YAML holds the protocol
(leave-one-out, full ranking with each user's earlier items masked, HR and NDCG at 5, 10, 20) and
the settings chosen for this family of data (docs/training.md). Every model runs through the
``benchmark`` command on the same split (``<out>/runs.csv``, ``summary.md`` with paired-bootstrap
significance, resumable): ``MTLRec@sequence`` with ``--seeds`` seeds, SASRec and GRU4Rec with
``--baseline_seeds`` (the first seeds of the same list), each to early stopping on validation
NDCG@10. Then writes ``<out>/report.md``: the targets (test NDCG@10 against ``--target`` and the
published ``--reference``, training time, time to SASRec's best validation NDCG@10), test HR and
NDCG at 5, 10, 20 per model, seconds per epoch, and ``<out>/curves.png`` (validation NDCG@10
against training time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
from datetime import date
from pathlib import Path

import torch

import recbole_mtl  # noqa: F401
from recbole_mtl import benchmark
from recbole_mtl.checkpoint import atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sequence_recipe import _cell, _stats  # noqa: E402  (the same table cells)

REPO = Path(__file__).resolve().parents[1]
MODEL = "MTLRec@sequence"
BASELINES = ("SASRec", "GRU4Rec")
METRICS = ["ndcg@10", "hit@10", "ndcg@20", "hit@20", "ndcg@5", "hit@5"]


def common_args(args, seeds: int) -> list[str]:
    out = ["--dataset", args.dataset, "--max_len", str(args.max_len), "--epochs", str(args.epochs),
           "--stopping_step", str(args.stopping_step), "--seeds", str(seeds), "--jobs", str(args.jobs),
           "--out", args.out, "--topk=[5,10,20]", "--time_budget", str(args.time_budget)]
    if args.data_path:
        out += ["--data_path", args.data_path]
    if args.config_files:
        out += ["--config_files", args.config_files]
    return out + list(args.overrides)


def _rows(out: Path) -> list[dict]:
    return [r for r in benchmark.read_runs(out / "runs.csv") if int(r["selected"]) == 1]


def _curve(row: dict) -> list[tuple[float, float]]:
    return [tuple(p) for p in json.loads(row.get("curve") or "[]")]


def time_to_quality(rows: list[dict]) -> tuple[list[str], dict]:
    """Per run, the training time (seconds, validation included) to its best validation NDCG@10 and,
    for MTLRec, to SASRec's best."""
    sasrec = [r for r in rows if r["model"] == "SASRec" and _curve(r)]
    mtl = [r for r in rows if r["model"] == MODEL and _curve(r)]
    lines = ["| run | best valid NDCG@10 | time to its best (s) | time to SASRec's best valid NDCG@10 (s) |",
             "|---|---|---|---|"]
    figures: dict = {}
    target = max((max(s for _, s in _curve(r)) for r in sasrec), default=None)
    for r in sasrec + mtl + [r for r in rows if r["model"] not in ("SASRec", MODEL) and _curve(r)]:
        curve = _curve(r)
        best = max(range(len(curve)), key=lambda i: curve[i][1])
        reach = None if target is None else next((t for t, s in curve if s >= target), None)
        figures.setdefault(r["model"], []).append({"best": curve[best][1], "to_best": curve[best][0], "reach": reach})
        lines.append(f"| {r['model']} seed {r['seed']} | {curve[best][1]:.4f} | {curve[best][0]:.0f} | "
                     + ("-" if target is None else "never" if reach is None else f"{reach:.0f}") + " |")
    return lines, figures


def significance_row(out: Path, rows: list[dict], baseline: str, metric: str = "ndcg@10") -> str:
    """One table row: MTLRec against ``baseline`` on the seeds both ran (ratio, paired bootstrap)."""
    from recbole_mtl.significance import align, mean_statistic, paired_bootstrap, read_npz

    def runs(model: str) -> dict[int, dict]:
        return {int(r["seed"]): r for r in rows if r["model"] == model}

    mine, theirs = runs(MODEL), runs(baseline)
    seeds = sorted(s for s in set(mine) & set(theirs) if mine[s].get("per_user") and theirs[s].get("per_user"))
    if not seeds:
        return ""
    ratio = sum(float(mine[s][metric]) for s in seeds) / sum(float(theirs[s][metric]) for s in seeds)
    a, b, n = align([read_npz(out / mine[s]["per_user"]) for s in seeds],
                    [read_npz(out / theirs[s]["per_user"]) for s in seeds], "users", metric)
    interval = paired_bootstrap(mean_statistic(a), mean_statistic(b), n, len(seeds))
    verdict = "significant" if interval.significant else "not significant"
    return (f"| {baseline} | {', '.join(map(str, seeds))} | {ratio:.2f}x | {interval.mean:+.4f} "
            f"[{interval.low:+.4f}, {interval.high:+.4f}] | {verdict} |")


def report(args) -> str:
    out = Path(args.out)
    rows = _rows(out)
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    command = threads + "python benchmarks/published_protocol.py " + " ".join(
        a for a in sys.argv[1:] if a != "--report_only")
    report_command = "python benchmarks/published_protocol.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if not a.startswith("--recorded_by"))
    models = [MODEL] + list(BASELINES)
    values = {m: {k: [float(r[k]) for r in rows if r["model"] == m and r.get(k) not in (None, "")] for k in METRICS}
              for m in models}
    tq_lines, tq = time_to_quality(rows)
    lines = [
        f"# {args.dataset}: MTLRec's next-item task against SASRec and GRU4Rec, the papers' protocol",
        "",
        *([f"Command: `{command.strip()}` (runs missing from runs.csv are run, the rest are read)  "]
          if not args.recorded_by else
          [f"Runs recorded by: {args.recorded_by}; this report written by `{report_command}`  "]),
        f"Date: {date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; runs {args.jobs} at a time. The dataset YAML's protocol "
        f"(`{args.config_files}`): leave-one-out by time, full ranking over all items with each user's earlier "
        f"items masked (`eval_mask_history: True`), HR and NDCG at 5, 10, 20; MAX_ITEM_LIST_LENGTH={args.max_len}; "
        f"each run to early stopping on validation NDCG@10 (stopping_step={args.stopping_step}, at most "
        f"{args.epochs} epochs"
        + (f", and at most {args.time_budget:g} minutes of training: `--time_budget` stops a run at its first "
           "evaluation past it and tests its best checkpoint so far" if args.time_budget else "")
        + "; the table says what stopped each run), learning rate 0.001, every other setting the model's YAML and "
        "the dataset's. "
        "Values: mean ± std (runs). Every run, with its validation curve: [`runs.csv`](runs.csv); paired-bootstrap "
        "significance: [`summary.md`](summary.md).",
        "",
        "## Targets",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
    ]
    ndcg = values[MODEL]["ndcg@10"]
    if ndcg:
        mean = _stats(ndcg)[0]
        lines.append(f"| test NDCG@10 of {MODEL} (the published ICLRec checkpoints: {args.reference}) | "
                     f"{mean:.4f} ({len(ndcg)} seed(s); {mean - args.target:+.4f} from the goal) | >= {args.target} | "
                     f"{'yes' if mean >= args.target else '**no**'} |")
        longest = max(float(r["train_time_s"]) for r in rows if r["model"] == MODEL)
        lines.append(f"| training time of one {MODEL} run (longest seed, validation included) | {longest / 60:.1f} min | "
                     f"<= 30 min | {'yes' if longest <= 1800 else '**no**'} |")
    sas_reach = [f["to_best"] for f in tq.get("SASRec", [])]
    mtl_reach = [f["reach"] for f in tq.get(MODEL, [])]
    if sas_reach and mtl_reach:
        if all(r is not None for r in mtl_reach):
            ratio = max(mtl_reach) / min(sas_reach)
            cut = any(benchmark.stopped_by(r) != "early stopping" for r in rows if r["model"] == "SASRec")
            lines.append(f"| time until {MODEL}'s validation NDCG@10 reaches SASRec's best (slowest seed) / SASRec's "
                         f"time to its best | {ratio:.3f}x | <= 0.1x | {'yes' if ratio <= 0.1 else '**no**'}"
                         + (" (SASRec's best within its budget or cap: it was still improving)" if cut else "") + " |")
        else:
            lines.append(f"| time until {MODEL}'s validation NDCG@10 reaches SASRec's best / SASRec's | never reached "
                         "by some seed | <= 0.1x | **no** |")
    lines += ["", "## Test quality", "",
              "| model | " + " | ".join(METRICS) + " | best epoch | epochs run | stopped by | s/epoch incl. validation |",
              "|---" * (len(METRICS) + 5) + "|"]
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        if not mine:
            lines.append(f"| {m} | " + " | ".join("not run" for _ in METRICS) + " | - | - | - | - |")
            continue
        per_epoch = _stats([float(r["time_per_epoch_s"]) for r in mine])[0]
        lines.append(f"| {m} | " + " | ".join(_cell(values[m][k]) for k in METRICS)
                     + f" | {', '.join(r['best_epoch'] for r in mine)} | {', '.join(r['epochs_run'] for r in mine)} | "
                     f"{', '.join(benchmark.stopped_by(r) for r in mine)} | {per_epoch:.1f} |")
    lines += ["", f"## {MODEL} against each baseline", "",
              "Test NDCG@10 on the seeds both ran, paired by seed; the interval is a 95% paired bootstrap over "
              "test users (and seeds) of the per-user values (`per_user/`).", "",
              f"| baseline | seeds | {MODEL} / baseline | {MODEL} minus baseline [95% interval] | |", "|---|---|---|---|---|"]
    for b in BASELINES:
        pairs = significance_row(out, rows, b)
        if pairs:
            lines.append(pairs)
    lines += ["", "## Time to quality", "",
              "From each run's validation curve (training and validation time since training started; runs shared "
              f"the machine {args.jobs} at a time).", ""] + tq_lines
    lines += ["", "![validation NDCG@10 against training time](curves.png)", ""]
    return "\n".join(lines)


def plot(args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in _rows(Path(args.out)):
        curve = _curve(r)
        if curve:
            ax.plot([t / 60 for t, _ in curve], [s for _, s in curve], marker=".", label=f"{r['model']} seed {r['seed']}")
    ax.set_xlabel("training time, minutes (training and validation)")
    ax.set_ylabel("validation NDCG@10 (history masked)")
    ax.set_title(f"{args.dataset}: leave-one-out, full ranking, earlier items masked")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    benchmark._save_png(fig, path)  # whole or not at all, as the benchmark's own plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--baseline_seeds", type=int, default=1, help="seeds of SASRec and GRU4Rec (0: none)")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--time_budget", type=float, default=30,
                        help="minutes of training per run (the benchmark's --time_budget; 0: none)")
    parser.add_argument("--target", type=float, default=0.045, help="the test NDCG@10 goal")
    parser.add_argument("--reference", type=float, default=0.0403, help="the strongest published test NDCG@10")
    parser.add_argument("--out", default=None, help="default: results/<dataset>")
    parser.add_argument("--report_only", action="store_true", help="only rewrite the report from the runs on disk")
    parser.add_argument("--recorded_by", default="", help="with --report_only: the commands that recorded the runs, "
                        "when they were not this script's (said in the report's header)")
    args, unknown = parser.parse_known_args()
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised argument(s) {bad}: config overrides take the form --key=value")
    args.overrides = unknown
    args.out = args.out or str(REPO / "results" / args.dataset)
    if not args.report_only:
        if args.baseline_seeds and args.baselines:
            benchmark.main(common_args(args, args.baseline_seeds) + ["--models", args.baselines])
        benchmark.main(common_args(args, args.seeds) + ["--models", MODEL])
    text = report(args)
    plot(args, Path(args.out) / "curves.png")
    atomic_write_text(Path(args.out) / "report.md", text)
    print(text)


if __name__ == "__main__":
    main()
