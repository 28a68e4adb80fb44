"""MMoE and PLE with each loss-balancing method: one run of the command line per combination.

    python benchmarks/mtl_balancing.py [--epochs 1] [--max_len 20] [--threads 1] [--run_dir runs/mtl_balancing]

Each combination runs
``run_recbole_mtl.py --model=M --dataset=ml-100k --epochs=E --loss_balance=B --MAX_ITEM_LIST_LENGTH=L``
in its own process (output in ``run_dir/<M>_<B>.out``; a combination whose output already holds a
test result is read, not rerun, so an interrupted run resumes). Writes every task's test metrics,
the training time and the balanced task weights after the last epoch to results/mtl_balancing.md,
and a bar chart of NDCG@10, interest AUC and category micro-F1 to results/mtl_balancing.png.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_mtl.balancing import BALANCING_METHODS  # noqa: E402
from recbole_mtl.checkpoint import atomic_write_text  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLUMNS = [("ndcg@10", "NDCG@10"), ("hit@10", "Hit@10"), ("mrr@10", "MRR@10"), ("interest_auc", "AUC"),
           ("interest_logloss", "LogLoss"), ("interest_f1", "interest F1"), ("category_micro_f1", "cat. micro-F1"),
           ("category_macro_f1", "cat. macro-F1"), ("category_label_accuracy", "cat. label acc.")]


def command(model: str, method: str, args) -> list[str]:
    return [sys.executable, str(REPO / "run_recbole_mtl.py"), f"--model={model}", "--dataset=ml-100k",
            f"--epochs={args.epochs}", f"--loss_balance={method}", f"--MAX_ITEM_LIST_LENGTH={args.max_len}",
            "--show_progress=False", f"--checkpoint_dir={Path(args.run_dir).resolve() / 'saved'}"]


def parse(text: str) -> dict | None:
    """Test result, training seconds and last balance line of one run's output (None: unfinished)."""
    text = ANSI.sub("", text)
    test = re.search(r"test result: OrderedDict\((\[.*?\])\)", text)
    if not test:
        return None
    times = [float(t) for t in re.findall(r"epoch \d+ training \[time: ([0-9.]+)s", text)]
    balance = re.findall(r"epoch \d+ balance \(\w+\) \[(.*?)\]", text)
    weights = dict(re.findall(r"weight/(\w+): ([0-9.]+)", balance[-1])) if balance else {}
    return {"test": dict(ast.literal_eval(test.group(1))), "train_s": sum(times), "weights": weights}


def run_all(args) -> list[tuple[str, str, dict]]:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    combos = [(m, b) for m in args.models for b in args.methods]
    rows = []
    for i, (model, method) in enumerate(combos, 1):
        out = run_dir / f"{model}_{method}.out"
        parsed = parse(out.read_text(errors="ignore")) if out.is_file() else None
        if parsed is None:
            print(f"[{i}/{len(combos)}] {model} {method}: running ...", flush=True)
            start = time.perf_counter()
            with open(out, "w") as f:
                env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
                rc = subprocess.call(command(model, method, args), stdout=f, stderr=subprocess.STDOUT, cwd=run_dir,
                                     env=env)
            parsed = parse(out.read_text(errors="ignore"))
            if rc or parsed is None:
                raise SystemExit(f"{model} {method} failed (exit {rc}); see {out}")
            print(f"[{i}/{len(combos)}] {model} {method}: {time.perf_counter() - start:.0f}s", flush=True)
        else:
            print(f"[{i}/{len(combos)}] {model} {method}: read from {out}", flush=True)
        rows.append((model, method, parsed))
    return rows


def write_report(rows, args) -> None:
    head = "| model | loss_balance | train s | " + " | ".join(c for _, c in COLUMNS) + " | weights after training |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for model, method, r in rows:
        weights = ", ".join(f"{t} {float(w):.3f}" for t, w in r["weights"].items())
        lines.append(f"| {model} | {method} | {r['train_s']:.0f} | "
                     + " | ".join(f"{r['test'].get(k, float('nan')):.4f}" for k, _ in COLUMNS) + f" | {weights} |")
    cmd = " ".join(["python benchmarks/mtl_balancing.py"] + [f"--{k} {v}" for k, v in
                    (("epochs", args.epochs), ("max_len", args.max_len), ("threads", args.threads)) if v])
    text = f"""# MMoE and PLE with each loss-balancing method

Measured {date.today().isoformat()} on this project's 2-core CPU machine (shared with other jobs, so
the training times are only indicative), produced by

```
{cmd}
```

which runs, per combination,
`{" ".join(["python run_recbole_mtl.py"] + command("<model>", "<method>", args)[2:-2])}`
(full bundled ml-100k, leave-one-out by time, seed 2020, every other key at its default:
`task_weights` sequence 1.0, interest 0.5, category 0.5; embedding_size 64; 2 Transformer layers).
Test set after {args.epochs} epoch(s), best validation checkpoint. `weights after training`: each task's
effective weight (`task_weights` x the balancer's weight) after the last epoch, from the log.

{chr(10).join(lines)}

![NDCG@10, interest AUC and category micro-F1 per model and balancing method](mtl_balancing.png)

One seed, {args.epochs} epoch(s): differences between methods this small are within what a seed
changes; `dwa` only departs from the fixed weights from the third epoch, so after 1 epoch it equals
`fixed` up to run-to-run noise.
"""
    atomic_write_text(REPO / "results" / "mtl_balancing.md", text)
    plot(rows)


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("ndcg@10", "NDCG@10"), ("interest_auc", "interest AUC"), ("category_micro_f1", "category micro-F1")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    labels = [f"{m}\n{b}" for m, b, _ in rows]
    colors = ["tab:blue" if m == "MMoE" else "tab:orange" for m, _, _ in rows]
    for ax, (key, title) in zip(axes, metrics):
        ax.bar(range(len(rows)), [r["test"][key] for _, _, r in rows], color=colors)
        ax.set_xticks(range(len(rows)), labels, rotation=90, fontsize=7)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(REPO / "results" / "mtl_balancing.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max_len", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of each run (0: torch's default)")
    parser.add_argument("--models", nargs="+", default=["MMoE", "PLE"])
    parser.add_argument("--methods", nargs="+", default=list(BALANCING_METHODS))
    parser.add_argument("--run_dir", default=os.path.join("runs", "mtl_balancing"))
    args = parser.parse_args()
    write_report(run_all(args), args)


if __name__ == "__main__":
    main()
