"""Training speed of RecBole 1.2.1 as it is and with the compatibility layer's two speed fixes, per
model, in one process.

    OMP_NUM_THREADS=1 python benchmarks/compat_speed.py [--batches 8] [--rounds 2] [--models SASRec,...]

The fixes (``recbole_mtl/compat.py``, docs/compatibility.md):

* **anomaly mode**: RecBole's ``sequential_recommender/sine.py`` calls
  ``torch.autograd.set_detect_anomaly(True)`` when it is imported (importing any of RecBole's
  sequential models imports it), so every model of the process trained in anomaly mode;
  ``_import_model_zoo_keeping_anomaly_mode`` puts the mode back.
* **gelu**: RecBole's ``FeedForward.gelu`` (the Transformer models' feed-forward activation) composes
  ``x * 0.5 * (1 + erf(x / sqrt(2)))`` from five element-wise ops, each with its own backward;
  ``_fused_gelu`` computes the same function with ``torch.nn.functional.gelu`` (one kernel each way).

For each model this builds the run the benchmark builds (``recbole_mtl.benchmark.run_config``:
ml-100k, leave-one-out, ``MAX_ITEM_LIST_LENGTH`` 20 unless ``--max_len``) and times training batches in alternating
blocks, one block per setting (RecBole as it is: anomaly mode on and RecBole's gelu; anomaly mode
off; anomaly mode off and the fused gelu), ``--rounds`` times, after warm-up batches, so the settings
share the machine's state. Writes results/compat_speed.md (the command, versions, date and machine
with the table).
"""

from __future__ import annotations

import argparse
import itertools
import os
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
from recbole_mtl import compat  # noqa: E402
from recbole_mtl.benchmark import parse, parse_spec, run_config  # noqa: E402
from recbole_mtl.checkpoint import atomic_write_text  # noqa: E402

MODELS = "MTLRec,DeepFM,DCNV2,GRU4Rec,DIN,SASRec,LightSANs,BERT4Rec"
SETTINGS = ("as is", "anomaly off", "anomaly off + fused gelu")


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


def _set(model: torch.nn.Module, setting: str) -> None:
    """Put the process and ``model`` in ``setting``."""
    from recbole.model.layers import FeedForward

    torch.autograd.set_detect_anomaly(setting == "as is")
    for module in model.modules():
        if isinstance(module, FeedForward):
            fused = setting.endswith("fused gelu")
            if module.intermediate_act_fn.__name__ in ("gelu", "_fused_gelu", "recbole_gelu"):
                recbole_gelu = compat.recbole_gelu.__get__(module)
                module.intermediate_act_fn = compat._fused_gelu.__get__(module) if fused else recbole_gelu


def time_model(spec_text: str, batches: int, rounds: int, max_len: int = 20) -> dict:
    from recbole.utils import init_seed

    from recbole_mtl import pipeline
    from recbole_mtl.config import Config

    spec = parse_spec(spec_text)
    _, _, base, _ = parse(["--dataset=ml-100k", f"--max_len={max_len}"])
    config_dict = run_config(spec, 2020, 0, 1, 0.001, base)
    config_dict.update({"state": "WARNING"})
    config_dict.pop("config_files", None)
    config = Config(model=spec.model, dataset="ml-100k", config_dict=config_dict, cmd_args=[])
    init_seed(2020, True)
    built = pipeline.build(config)
    trainer = built.trainer
    built_mode = torch.is_anomaly_enabled()  # what the model trains with in a benchmark run now
    loader = trainer.training_loader(built.train_data) if hasattr(trainer, "training_loader") else built.train_data
    total = len(loader)
    trainer._train_epoch(_Batches(loader, 2), 0)  # warm-up
    seconds = {s: [] for s in SETTINGS}
    for _ in range(rounds):
        for setting in SETTINGS:
            _set(trainer.model, setting)
            start = time.perf_counter()
            trainer._train_epoch(_Batches(loader, batches), 0)
            seconds[setting].append((time.perf_counter() - start) / batches)
    _set(trainer.model, SETTINGS[-1])
    med = {s: statistics.median(v) for s, v in seconds.items()}
    print(f"{spec_text}: " + ", ".join(f"{s} {med[s]:.3f} s" for s in SETTINGS) + f" a batch; {total} batches an epoch",
          flush=True)
    return {"model": spec_text, "seconds": med, "batches": total, "built_mode": built_mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--batches", type=int, default=8, help="batches timed per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per setting, alternating")
    parser.add_argument("--max_len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH of the sequential models")
    parser.add_argument("--out", default=str(REPO / "results" / "compat_speed.md"))
    args = parser.parse_args()
    rows = [time_model(m.strip(), args.batches, args.rounds, args.max_len) for m in args.models.split(",") if m.strip()]
    import recbole

    before, mid, after = SETTINGS
    lines = [
        "# RecBole 1.2.1's training speed as it is and with the compatibility layer's speed fixes", "",
        "Command: `" + (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get("OMP_NUM_THREADS") else "")
        + "python benchmarks/compat_speed.py " + " ".join(sys.argv[1:]) + "`", "",
        f"Date {date.today().isoformat()}; {platform.machine()} `{platform.processor() or platform.platform()}`, "
        f"{torch.get_num_threads()} thread(s); torch {torch.__version__}, RecBole {recbole.__version__}.", "",
        "*as is*: RecBole 1.2.1 as its import leaves it, autograd's anomaly mode on (its `sine.py` turns it on) "
        "and its `FeedForward.gelu` composed of element-wise ops. *anomaly off*: `recbole_mtl.compat` puts the "
        "mode back. *fused gelu*: `compat` computes the same gelu with `torch.nn.functional.gelu` (RecBole's "
        "Transformer models and MTLRec's Transformer encoder; the other models have no `FeedForward`). Each "
        f"model is built as `benchmark` builds it (ml-100k, leave-one-out, `MAX_ITEM_LIST_LENGTH` {args.max_len}) and "
        f"trains {args.batches} batches per block, one block per setting, {args.rounds} rounds after 2 warm-up "
        "batches, in one process; the figures are the medians of the blocks' seconds per batch. An epoch is "
        "the batches column times the seconds per batch (plus validation). The last column is the anomaly "
        "mode a model is built with now.", "",
        f"| model | s/batch, {before} | {mid} | {after} | after / before | batches an epoch | "
        "epoch s, before -> after | anomaly mode once built |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(f"| {r['model']} | {s[before]:.3f} | {s[mid]:.3f} | {s[after]:.3f} | {s[after] / s[before]:.2f}x | "
                     f"{r['batches']} | {s[before] * r['batches']:.0f} -> {s[after] * r['batches']:.0f} | "
                     f"{'on' if r['built_mode'] else 'off'} |")
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
