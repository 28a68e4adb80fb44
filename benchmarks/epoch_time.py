"""Training time per epoch: MTLRec (three tasks) beside SASRec, same data and shapes, one run.

    python benchmarks/epoch_time.py [--epochs 2] [--max_len 20] [--batch 2048] [--hidden 64]

Both models train on RecBole's ml-100k sequential split with the same MAX_ITEM_LIST_LENGTH,
train_batch_size, hidden size (embedding_size), Transformer depth and dropout. Prints a table and
writes it, with the command, versions and date, to results/epoch_time.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

import recbole_mtl  # noqa: F401
from recbole_mtl.checkpoint import atomic_write_text
from recbole_mtl.config import Config
from recbole_mtl.pipeline import build

REPO = Path(__file__).resolve().parents[1]


def time_model(model: str, shared: dict, epochs: int) -> list[float]:
    extra = {"train_neg_sample_args": None} if model == "SASRec" else {}
    config = Config(model=model, dataset="ml-100k", cmd_args=[],
                    config_dict={"show_progress": False, "state": "WARNING", **shared, **extra})
    built = build(config)
    trainer, train_data = built.trainer, built.train_data
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch)
        times.append(time.perf_counter() - start)
        print(f"{model}: epoch {epoch} {times[-1]:.1f}s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_len", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "results" / "epoch_time.md"))
    args = parser.parse_args()
    shared = {"MAX_ITEM_LIST_LENGTH": args.max_len, "train_batch_size": args.batch, "hidden_size": args.hidden,
              "embedding_size": args.hidden, "n_layers": 2, "n_heads": 2, "inner_size": 256,
              "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "seed": 2020}
    torch.set_num_threads(torch.get_num_threads())
    results = {m: time_model(m, shared, args.epochs) for m in ("SASRec", "MTLRec")}
    sas, mtl = (statistics.median(results[m]) for m in ("SASRec", "MTLRec"))
    lines = [
        "# Training time per epoch: MTLRec vs SASRec (ml-100k)",
        "",
        f"Command: `python benchmarks/epoch_time.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Date: {date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; MAX_ITEM_LIST_LENGTH={args.max_len}, train_batch_size={args.batch}, "
        f"hidden={args.hidden}, 2 Transformer layers, dropout 0.2, {args.epochs} epochs each (median).",
        "",
        "| model | tasks | seconds per epoch (median) | all epochs |",
        "|---|---|---|---|",
        f"| SASRec | sequence | {sas:.1f} | {', '.join(f'{t:.1f}' for t in results['SASRec'])} |",
        f"| MTLRec | sequence, interest, category | {mtl:.1f} | {', '.join(f'{t:.1f}' for t in results['MTLRec'])} |",
        "",
        f"MTLRec / SASRec time per epoch: **{mtl / sas:.2f}x** (target: <= 1.5x).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
