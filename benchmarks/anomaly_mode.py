"""Training speed with autograd's anomaly mode on (as RecBole 1.2.1 leaves it) and off (as
``recbole_mtl.compat`` restores it), per model, in one process.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_mode.py [--batches 8] [--rounds 2] [--models SASRec,...]

RecBole 1.2.1's ``recbole/model/sequential_recommender/sine.py`` calls
``torch.autograd.set_detect_anomaly(True)`` when it is imported, and importing any of RecBole's
sequential models imports it, so every model of the process trained in anomaly mode (a stack trace
recorded for every op of the forward pass, every gradient of the backward pass checked for NaN).
For each model this builds the run the benchmark builds (``recbole_mtl.benchmark.run_config``: ml-100k,
leave-one-out, ``MAX_ITEM_LIST_LENGTH`` 20) and times training batches in alternating blocks, mode
on then off, ``--rounds`` times, after warm-up batches; the two modes therefore share the machine's
state. Writes results/anomaly_mode.md (the command, versions, date and machine with the table).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import recbole_mtl  # noqa: E402,F401
from recbole_mtl.benchmark import parse, parse_spec, run_config  # noqa: E402
from recbole_mtl.checkpoint import atomic_write_text  # noqa: E402

MODELS = "MTLRec,DeepFM,DCNV2,GRU4Rec,DIN,SASRec,LightSANs,BERT4Rec"


class _Batches:
    """The first ``n`` batches of a loader, as a loader (the trainer's epoch loop reads ``len``)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def time_model(spec_text: str, batches: int, rounds: int) -> dict:
    from recbole.utils import init_seed

    from recbole_mtl import pipeline
    from recbole_mtl.config import Config

    spec = parse_spec(spec_text)
    _, _, base, _ = parse(["--dataset=ml-100k", "--max_len=20"])
    config_dict = run_config(spec, 2020, 0, 1, 0.001, base)
    config_dict.update({"state": "WARNING"})
    config_dict.pop("config_files", None)
    config = Config(model=spec.model, dataset="ml-100k", config_dict=config_dict, cmd_args=[])
    init_seed(2020, True)
    built = pipeline.build(config)
    trainer = built.trainer
    built_mode = torch.is_anomaly_enabled()  # what the model trains with in a benchmark run
    loader = trainer.training_loader(built.train_data) if hasattr(trainer, "training_loader") else built.train_data
    total = len(loader)
    trainer._train_epoch(_Batches(loader, 2), 0)  # warm-up
    seconds = {True: [], False: []}
    for _ in range(rounds):
        for mode in (True, False):
            torch.autograd.set_detect_anomaly(mode)
            start = time.perf_counter()
            trainer._train_epoch(_Batches(loader, batches), 0)
            seconds[mode].append((time.perf_counter() - start) / batches)
    torch.autograd.set_detect_anomaly(False)
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    print(f"{spec_text}: {on:.3f} s a batch in anomaly mode, {off:.3f} s without ({off / on:.2f}x); "
          f"{total} batches an epoch", flush=True)
    return {"model": spec_text, "on": on, "off": off, "batches": total, "built_mode": built_mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--batches", type=int, default=8, help="batches timed per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per mode, alternating")
    parser.add_argument("--out", default=str(REPO / "results" / "anomaly_mode.md"))
    args = parser.parse_args()
    rows = [time_model(m.strip(), args.batches, args.rounds) for m in args.models.split(",") if m.strip()]
    import recbole

    lines = [
        "# Training with autograd's anomaly mode on (RecBole 1.2.1's import) and off", "",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/anomaly_mode.py " + " ".join(sys.argv[1:]) + "`", "",
        f"Date {date.today().isoformat()}; {platform.machine()} `{platform.processor() or platform.platform()}`, "
        f"{torch.get_num_threads()} thread(s); torch {torch.__version__}, RecBole {recbole.__version__}.", "",
        "RecBole 1.2.1's `sine.py` turns anomaly mode on for the whole process when it is imported, which "
        "happens with any of its sequential models. `recbole_mtl.compat` restores the mode the process had "
        "before (off unless the user set it). Each model is built as `benchmark` builds it (ml-100k, "
        f"leave-one-out, `MAX_ITEM_LIST_LENGTH` 20) and trains {args.batches} batches per block, mode on then "
        f"off, {args.rounds} rounds after 2 warm-up batches, in one process; the figures are the medians of "
        "the blocks' seconds per batch. An epoch is the batches column times the seconds per batch (plus "
        "validation).", "",
        "| model | s/batch, anomaly mode on (before) | off (after) | after / before | batches an epoch | "
        "epoch s, before -> after | mode once built (now) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['on']:.3f} | {r['off']:.3f} | {r['off'] / r['on']:.2f}x | {r['batches']} | "
                     f"{r['on'] * r['batches']:.0f} -> {r['off'] * r['batches']:.0f} | {'on' if r['built_mode'] else 'off'} |")
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
