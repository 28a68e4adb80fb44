"""Training time per epoch: MTLRec (three tasks) beside SASRec, same data and shapes, one run.

    python benchmarks/epoch_time.py [--epochs 2] [--max_len 50] [--batch 2048] [--hidden 64]

Every model trains on RecBole's ml-100k sequential split with the same MAX_ITEM_LIST_LENGTH, hidden
size (embedding_size), Transformer depth and dropout: RecBole's SASRec (per-prefix rows,
train_batch_size of them a batch); MTLRec as it trains by default (one causal pass over each window
of a user's history, every position a target of every task, ``train_positions: all``); MTLRec on
RecBole's per-prefix rows (``train_positions: last``, the ablation); and MTLRec with the HSTU
encoder. Prints a table and writes it, with the command, versions and date, to results/epoch_time.md.
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


VARIANTS = {  # name -> (model, extra config, tasks shown)
    "SASRec": ("SASRec", {"train_neg_sample_args": None}, "sequence"),
    "MTLRec": ("MTLRec", {}, "sequence, interest, category"),
    "MTLRec (train_positions: last)": ("MTLRec", {"train_positions": "last"}, "sequence, interest, category"),
    "MTLRec (encoder: hstu)": ("MTLRec", {"encoder": "hstu"}, "sequence, interest, category"),
}


def time_model(name: str, shared: dict, epochs: int) -> list[float]:
    model, extra, _ = VARIANTS[name]
    config = Config(model=model, dataset="ml-100k", cmd_args=[],
                    config_dict={"show_progress": False, "state": "WARNING", **shared, **extra})
    built = build(config)
    trainer = built.trainer
    loader = trainer.training_loader(built.train_data) if hasattr(trainer, "training_loader") else built.train_data
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        trainer._train_epoch(loader, epoch)
        times.append(time.perf_counter() - start)
        print(f"{name}: epoch {epoch} {times[-1]:.1f}s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "results" / "epoch_time.md"))
    args = parser.parse_args()
    shared = {"MAX_ITEM_LIST_LENGTH": args.max_len, "train_batch_size": args.batch, "hidden_size": args.hidden,
              "embedding_size": args.hidden, "n_layers": 2, "n_heads": 2, "inner_size": 256,
              "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "seed": 2020}
    results = {name: time_model(name, shared, args.epochs) for name in VARIANTS}
    medians = {name: statistics.median(times) for name, times in results.items()}
    sas = medians["SASRec"]
    lines = [
        "# Training time per epoch: MTLRec vs SASRec (ml-100k)",
        "",
        f"Command: `python benchmarks/epoch_time.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Date: {date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; MAX_ITEM_LIST_LENGTH={args.max_len}, train_batch_size={args.batch} "
        f"(SASRec and train_positions: last; MTLRec's windows: window_batch_size from its YAML), "
        f"hidden={args.hidden}, 2 layers, dropout 0.2, {args.epochs} epochs each (median). Training only "
        "(no evaluation); every variant sees every training target once an epoch.",
        "",
        "| model | tasks | seconds per epoch (median) | / SASRec | all epochs |",
        "|---|---|---|---|---|",
    ]
    for name, times in results.items():
        lines.append(f"| {name} | {VARIANTS[name][2]} | {medians[name]:.1f} | {medians[name] / sas:.3f}x | "
                     f"{', '.join(f'{t:.1f}' for t in times)} |")
    ratio = medians["MTLRec"] / sas
    lines += ["", f"MTLRec / SASRec time per epoch: **{ratio:.3f}x** (target: <= 0.05x; "
              f"{'met' if ratio <= 0.05 else 'missed'}).", ""]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
