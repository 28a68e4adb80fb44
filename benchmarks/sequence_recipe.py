"""The next-item recipe, one key at a time: MTLRec's sequence task under the published protocol.

    python benchmarks/sequence_recipe.py --dataset beauty --data_path DATA \\
        --config_files DATA/beauty/beauty.yaml [--variants base,dropout,...] [--seeds 1] [--epochs 60] \\
        [--stopping_step 5] [--max_len 50] [--jobs 2] [--out results/sequence_recipe/beauty] [--report_only]

``DATA`` is the folder ``convert --format sequences`` wrote (docs/bring-your-own-data.md); the
dataset YAML carries the protocol (leave-one-out, full ranking with each user's earlier items
masked). Every variant is ``MTLRec@sequence`` (the sequence task alone) through the ``benchmark``
command on the same split and seeds, each in its own folder ``<out>/<variant>/`` (its runs.csv,
with each run's validation curve; resumable: a rerun skips finished runs). A variant is a set of
config keys (:data:`VARIANTS`, each said against ``base``, today's defaults). The report,
``<out>/report.md``, gives test HR and NDCG at 5, 10, 20, epochs, seconds per epoch (training and
validation) and each variant's change against the first one listed, paired by seed; ``<out>/curves.png`` the
validation curves.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from datetime import date
from pathlib import Path

import torch

import recbole_mtl  # noqa: F401
from recbole_mtl import benchmark
from recbole_mtl.checkpoint import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SPEC = "MTLRec@sequence"
DROPOUT = ["--hidden_dropout_prob=0.5", "--attn_dropout_prob=0.5"]
COSINE = ["--sequence_score=cosine", "--sequence_temperature=0.05"]
#: name -> (config keys, what it changes against ``base``)
SORTED = DROPOUT + COSINE + ["--window_sort_chunk=8"]
NO_USER_ID = DROPOUT + COSINE + ["--user_id_input=False"]
VARIANTS = {
    "base": ([], "today's defaults: dot-product scores, full softmax (`sequence_loss: ce`), dropout 0.2, "
                 "constant learning rate, 2 layers of width 64"),
    "dropout": (DROPOUT, "dropout 0.5 on the encoder's hidden states and attention (the SASRec paper's Amazon setting)"),
    "cosine": (DROPOUT + COSINE, "`dropout` + L2-normalised scores over a temperature of 0.05"),
    "sorted": (SORTED, "`cosine` + length-sorted batches (`window_sort_chunk: 8`, for speed)"),
    "no_user_id": (NO_USER_ID, "`cosine` without the user-id embedding in the shared bottom (the history alone, as SASRec)"),
    "cosine_learned": (NO_USER_ID + ["--learn_temperature=True"], "`no_user_id` with the temperature learned"),
    "sampled_uniform": (NO_USER_ID + ["--sequence_loss=sampled", "--num_negatives=128"],
                        "`no_user_id` with sampled softmax over 128 uniform negatives shared by the batch (HSTU's "
                        "setting)"),
    "sampled_popularity": (NO_USER_ID + ["--sequence_loss=sampled", "--negative_sampling=popularity",
                                         "--num_negatives=128"],
                           "`no_user_id` with 128 negatives drawn by popularity, log-Q corrected"),
    "sampled_in_batch": (NO_USER_ID + ["--sequence_loss=sampled", "--negative_sampling=in_batch"],
                         "`no_user_id` with the batch's targets as negatives, log-Q corrected"),
    "warmup_cosine_lr": (NO_USER_ID + ["--lr_warmup_steps=200", "--lr_scheduler=cosine"],
                         "`no_user_id` with 200 steps of learning-rate warm-up, then a cosine decay over the epochs"),
    "large": (SORTED + ["--embedding_size=128", "--n_layers=4", "--n_heads=4", "--inner_size=512"],
              "`sorted`, deeper and wider (4 layers of width 128, an HSTU-large-like setting)"),
    "embedding_lr": (NO_USER_ID + ["--embedding_learning_rate=0.01"],
                     "`no_user_id` with the tables' learning rate 0.01 instead of 0.05 (row-wise Adagrad)"),
    "hstu": (SORTED + ["--encoder=hstu"], "`sorted` with the HSTU encoder instead of the Transformer"),
}
METRICS = ["ndcg@10", "hit@10", "ndcg@20", "hit@20", "ndcg@5", "hit@5"]


def common_args(args) -> list[str]:
    out = ["--dataset", args.dataset, "--max_len", str(args.max_len), "--epochs", str(args.epochs),
           "--stopping_step", str(args.stopping_step), "--seeds", str(args.seeds), "--jobs", str(args.jobs),
           "--topk=[5,10,20]"]
    if args.data_path:
        out += ["--data_path", args.data_path]
    if args.config_files:
        out += ["--config_files", args.config_files]
    return out + list(args.overrides)


def run(args, names: list[str]) -> None:
    for name in names:
        keys, _ = VARIANTS[name]
        benchmark.main(common_args(args) + ["--models", SPEC, "--out", str(Path(args.out) / name)] + keys)


def _rows(out: Path, name: str) -> list[dict]:
    return [r for r in benchmark.read_runs(out / name / "runs.csv") if int(r["selected"]) == 1 and r["model"] == SPEC]


def _stats(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0), n


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std, n = _stats(values)
    return f"{mean:.4f} ± {std:.4f} ({n})" if n > 1 else f"{mean:.4f} (1)"


def report(args, names: list[str]) -> str:
    out = Path(args.out)
    runs = {name: _rows(out, name) for name in names}
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else ""
    command = threads + "python benchmarks/sequence_recipe.py " + " ".join(a for a in sys.argv[1:] if a != "--report_only")
    lines = [
        f"# The next-item recipe on {args.dataset}, one key at a time",
        "",
        f"Command: `{command.strip()}` (runs missing from the runs.csv files are run, the rest are read)  ",
        f"Date: {date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}. `{SPEC}` (the sequence task alone) through the `benchmark` command: the dataset "
        f"YAML's protocol (`{args.config_files or 'the dataset default'}`), MAX_ITEM_LIST_LENGTH={args.max_len}, "
        f"each run to early stopping on validation NDCG@10 (stopping_step={args.stopping_step}, at most "
        f"{args.epochs} epochs), learning rate 0.001, seeds from 2020. Test values: mean ± std (runs). Every run, "
        "with its validation curve: `<variant>/runs.csv`.",
        "",
        "| variant | what it changes | " + " | ".join(METRICS) + " | best epoch | epochs run | stopped by | "
        "s/epoch incl. validation |",
        "|---" * (len(METRICS) + 6) + "|",
    ]
    for name in names:
        rows = runs[name]
        if not rows:
            lines.append(f"| {name} | {VARIANTS[name][1]} | " + " | ".join("-" for _ in METRICS) + " | - | - | - | - |")
            continue
        cells = [_cell([float(r[m]) for r in rows if r.get(m) not in (None, "")]) for m in METRICS]
        per_epoch = _stats([float(r["time_per_epoch_s"]) for r in rows])[0]
        lines.append(f"| {name} | {VARIANTS[name][1]} | " + " | ".join(cells)
                     + f" | {', '.join(r['best_epoch'] for r in rows)} | {', '.join(r['epochs_run'] for r in rows)}"
                     f" | {', '.join(benchmark.stopped_by(r) for r in rows)} | {per_epoch:.1f} |")
    reference = names[0]  # the first variant listed: the one the others are compared with
    base = {int(r["seed"]): float(r["ndcg@10"]) for r in runs.get(reference, [])}
    if base:
        lines += ["", f"Change of test NDCG@10 against `{reference}` (the first variant listed), paired by seed "
                  "(mean over the seeds both have):", "",
                  f"| variant | NDCG@10 minus {reference} | ratio to {reference} |", "|---|---|---|"]
        for name in names[1:]:
            mine = {int(r["seed"]): float(r["ndcg@10"]) for r in runs[name]}
            seeds = sorted(set(mine) & set(base))
            if not seeds:
                continue
            diff = sum(mine[s] - base[s] for s in seeds) / len(seeds)
            ratio = sum(mine[s] for s in seeds) / sum(base[s] for s in seeds)
            lines.append(f"| {name} | {diff:+.4f} ({len(seeds)} seed(s)) | {ratio:.2f}x |")
    lines += ["", "![validation NDCG@10 against training time](curves.png)", ""]
    return "\n".join(lines)


def plot(args, names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name in names:
        for r in _rows(Path(args.out), name):
            curve = json.loads(r.get("curve") or "[]")
            if curve:
                ax.plot([t / 60 for t, _ in curve], [s for _, s in curve], marker=".", label=f"{name} seed {r['seed']}")
    ax.set_xlabel("training time, minutes (training and validation)")
    ax.set_ylabel("validation NDCG@10 (history masked)")
    ax.set_title(f"{args.dataset}: MTLRec's next-item recipe, one key at a time")
    ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    benchmark._save_png(fig, path)  # whole or not at all, as the benchmark's own plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--config_files", default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default=None, help="default: results/sequence_recipe/<dataset>")
    parser.add_argument("--report_only", action="store_true", help="only rewrite the report from the runs on disk")
    args, unknown = parser.parse_known_args()
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised argument(s) {bad}: config overrides take the form --key=value")
    args.overrides = unknown
    args.out = args.out or str(REPO / "results" / "sequence_recipe" / args.dataset)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown_names = [n for n in names if n not in VARIANTS]
    if unknown_names:
        parser.error(f"unknown variant(s) {unknown_names}; choose from {', '.join(VARIANTS)}")
    if not args.report_only:
        run(args, names)
    text = report(args, names)
    plot(args, names, Path(args.out) / "curves.png")
    atomic_write_text(Path(args.out) / "report.md", text)
    print(text)


if __name__ == "__main__":
    main()
