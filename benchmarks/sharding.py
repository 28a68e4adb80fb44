"""Scale-out figures: training throughput and peak memory per rank, 1 vs 2 processes, fused vs nn tables.

    python benchmarks/sharding.py [--items 10000000] [--small_items 1000000] [--users 5000] \
        [--interactions 50000] [--epochs 1] [--only fused-big,fused-big-2proc]

Synthetic data (``dataset/make_synthetic.py``, written once under ``--data_dir``) with an item
table of ``--items`` rows (every item has a ``.item`` row, so the table has that many rows) and
``--small_items`` for the smaller comparison. MTLRec (sequence + interest tasks, sampled softmax
over ``num_negatives`` items, embedding_size 64, one Transformer layer) trains ``--epochs``
epoch(s) through RecBole's loader and the plugin's trainer in each configuration:

* fused TorchRec tables, 1 process and 2 processes (torchrun, gloo; the item table row-wise
  sharded, half of it on each rank), at ``--items`` rows;
* fused TorchRec tables vs plain ``nn.Embedding`` tables (``embedding_backend: nn``), 1 process,
  at ``--small_items`` and ``--items`` rows.

Each configuration runs in fresh processes with a set number of threads per process (torchrun's
default is 1; a lone process is measured with 1 and with 2 threads, on this 2-core machine); the
figures are interactions per second over the whole epoch (all ranks together) and the peak
resident memory of each rank (``ru_maxrss``, which includes loading the data and building the
tables). Results go to ``results/sharding.md`` and
``results/sharding.png``, with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def model_config(data_path: Path, dataset: str, backend: str, sharded: bool) -> dict:
    config = {
        "data_path": str(data_path), "dataset": dataset, "seed": 2020, "state": "WARNING", "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id"], "user": ["user_id"]},
        "tasks": ["sequence", "interest"], "sequence_loss": "sampled", "num_negatives": 1000,
        "MAX_ITEM_LIST_LENGTH": 20, "embedding_size": 64, "n_layers": 1, "n_heads": 2, "inner_size": 128,
        "train_batch_size": 1024, "embedding_backend": backend,
        "embedding_optimizer": "sgd", "embedding_learning_rate": 0.5,  # one optimizer both backends have
        "checkpoint_dir": str(REPO / "saved" / "bench"),
    }
    if sharded:
        config["sharding_types"] = {"item_id": "row_wise"}
    return config


def worker(spec: dict) -> None:
    """One measured run (this process is one rank, or the only process)."""
    sys.path.insert(0, str(REPO))
    import torch

    import recbole_mtl  # noqa: F401
    from recbole_mtl import distributed
    from recbole_mtl.config import Config
    from recbole_mtl.pipeline import build_data_and_model
    from recbole_mtl.utils import get_trainer

    torch.set_num_threads(spec["label"]["threads"])
    config = Config(model="MTLRec", dataset=spec["config"]["dataset"], config_dict=spec["config"], cmd_args=[])
    distributed.init_from_env(config)
    start = time.perf_counter()
    _, train_data, _, _, model = build_data_and_model(config)
    build_s = time.perf_counter() - start
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    n_train = len(train_data._dataset)
    seconds = []
    for epoch in range(spec["epochs"]):
        distributed.barrier()
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=distributed.rank() == 0)
        distributed.barrier()
        seconds.append(time.perf_counter() - start)
    import gc

    import psutil

    gc.collect()
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, psutil.Process().memory_info().rss / 2**30)
    per_rank = [rss]
    if distributed.is_distributed():
        per_rank = [None] * distributed.world_size()
        torch.distributed.all_gather_object(per_rank, rss)
    if distributed.rank() == 0:
        row = {**spec["label"], "world_size": distributed.world_size(), "n_train": n_train,
               "item_rows": int(model.n_items), "epoch_s": seconds, "build_s": build_s,
               "interactions_per_s": n_train / min(seconds), "peak_rss_gib": [r[0] for r in per_rank],
               "rss_after_gib": [r[1] for r in per_rank]}
        with open(spec["out"], "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def ensure_data(data_dir: Path, name: str, items: int, users: int, interactions: int) -> None:
    folder = data_dir / name
    if (folder / f"{name}.inter").is_file() and (folder / f"{name}.item").is_file():
        return
    subprocess.run([sys.executable, str(REPO / "dataset" / "make_synthetic.py"), "--users", str(users),
                    "--items", str(items), "--interactions", str(interactions), "--seed", "7",
                    "--out", str(folder)], check=True)


def run(config: dict, label: dict, nproc: int, threads: int, epochs: int, out: Path) -> None:
    label = {**label, "threads": threads}
    spec = json.dumps({"config": config, "label": label, "epochs": epochs, "out": str(out)})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", spec]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *cmd[1:]]
    print(f"== {label} x {nproc} process(es)", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env)


def report(rows: list[dict], command: str, out_md: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def fmt(row):
        return (f"| {row['backend']} | {row['item_rows']:,} | {row['world_size']} x {row['threads']} | "
                f"{row['interactions_per_s']:,.0f} | {min(row['epoch_s']):.1f} | "
                f"{' / '.join(f'{r:.2f}' for r in row['peak_rss_gib'])} | "
                f"{' / '.join(f'{r:.2f}' for r in row.get('rss_after_gib', [])) or 'not measured'} |")

    lines = [
        "# Scale-out: throughput and memory per rank",
        "",
        f"Command: `{command}` ({date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}, CPU only: gloo + FBGEMM CPU kernels).",
        "",
        "Synthetic data from `dataset/make_synthetic.py`; MTLRec with sequence + interest tasks, sampled softmax "
        "over 1000 items, embedding_size 64, 1 Transformer layer, MAX_ITEM_LIST_LENGTH 20, batch 1024 "
        "(split over the ranks), SGD on the tables. Throughput = training interactions of one epoch / its "
        "wall time (all ranks together); peak RSS per rank includes loading the data (RecBole reads the whole "
        ".item file on every rank) and building the tables (each rank first builds the whole table, so that "
        "its shard starts from the values one process would have); RSS after the epoch is what a rank holds "
        "while training.",
        "",
        "| tables | item rows | processes x threads | interactions/s | epoch s | peak RSS per rank (GiB) "
        "| RSS after the epoch per rank (GiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [fmt(r) for r in rows]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = [f"{r['backend']}\n{r['item_rows'] / 1e6:.0f}M rows\n{r['world_size']}p x {r['threads']}t" for r in rows]
    axes[0].bar(names, [r["interactions_per_s"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("training interactions / s")
    axes[1].bar(names, [max(r["peak_rss_gib"]) for r in rows], color="tab:orange")
    axes[1].set_ylabel("peak RSS of the largest rank (GiB)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("MTLRec on synthetic data, 2-core CPU")
    fig.tight_layout()
    fig.savefig(out_md.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000_000, help="rows of the big item table")
    parser.add_argument("--small_items", type=int, default=1_000_000, help="rows of the small item table")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--interactions", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data_dir", type=Path, default=REPO / "dataset" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "sharding.md")
    parser.add_argument("--only", default=None, help="comma-separated run names (default: all)")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one measured run
    args = parser.parse_args()
    if args.measure:
        return worker(json.loads(args.measure))
    big, small = f"synth-{args.items}", f"synth-{args.small_items}"
    ensure_data(args.data_dir, big, args.items, args.users, args.interactions)
    ensure_data(args.data_dir, small, args.small_items, args.users, args.interactions)
    jsonl = args.out.with_suffix(".jsonl")
    # name: (dataset, backend, processes, threads per process)
    runs = {
        "fused-small": (small, "fused", 1, 1), "nn-small": (small, "nn", 1, 1),
        "fused-big": (big, "fused", 1, 1), "nn-big": (big, "nn", 1, 1),
        "fused-big-2threads": (big, "fused", 1, 2), "fused-big-2proc": (big, "fused", 2, 1),
    }
    wanted = args.only.split(",") if args.only else list(runs)
    if jsonl.exists():  # keep earlier rows of the runs not repeated now
        kept = [line for line in jsonl.read_text().splitlines()
                if line.strip() and args.only and json.loads(line)["name"] not in wanted]
        jsonl.write_text("".join(line + "\n" for line in kept))
    for name in wanted:
        dataset, backend, nproc, threads = runs[name]
        config = model_config(args.data_dir, dataset, backend, sharded=nproc > 1)
        run(config, {"name": name, "backend": backend}, nproc, threads, args.epochs, jsonl)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    order = {n: i for i, n in enumerate(runs)}
    rows.sort(key=lambda r: order.get(r["name"], 99))
    report(rows, "python benchmarks/sharding.py" + "".join(" " + a for a in sys.argv[1:]), args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
