"""Why DIN is below DeepFM on the interest task: DeepFM without the user side.

    OMP_NUM_THREADS=1 python benchmarks/din_gap.py [--dataset ml-100k] [--runs results/ml-100k/runs.csv]

RecBole 1.2.1's ``DIN.forward`` builds its user feature table but never reads it: its MLP sees the
attention-pooled item history, the target item and their product, all item features. DeepFM reads
the user id and the user's attributes too. If the gap comes from that, DeepFM without the user side
should fall to about DIN's level.

This trains DeepFM with the configuration the tuned benchmark chose for it (its ``params`` and
learning rate in ``runs.csv``), through the benchmark's own run (``recbole_mtl.benchmark.run_config``,
each run in its own process, the same split, seeds, epochs and early stopping), in two variants:

* without the user attributes (the ``.user`` file not loaded; the user id kept);
* without the user id as well (RecBole's ``unused_col`` drops it after the split, so the
  leave-one-out split per user is unchanged): the target item's features only, DIN's inputs less
  the history.

It prints and writes ``results/din_gap.md`` (the command, versions, date and machine), with the
benchmark's own DeepFM and DIN rows of ``runs.csv`` beside them (not trained again): test interest
AUC, mean and standard deviation over the seeds, and each seed's value.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_mtl import benchmark  # noqa: E402
from recbole_mtl.checkpoint import atomic_write_text  # noqa: E402
from recbole_mtl.derive import headers  # noqa: E402
from recbole_mtl.errors import ConfigError  # noqa: E402

VARIANTS = {
    "no user attributes": "the user id, the item and its attributes (no `.user` file)",
    "no user side": "the item and its attributes only (no `.user` file, `unused_col` drops the user id)",
}


def variant_config(config: dict, variant: str, dataset: str) -> dict:
    """``config`` with the user side removed as ``variant`` says."""
    found = headers(config, dataset)
    if not found["inter"]:
        raise ConfigError(f"{dataset}: no readable .inter header; check --dataset and --data_path.")
    load_col = {"inter": list(found["inter"])}
    if found["item"]:
        load_col["item"] = list(found["item"])
    out = {**config, "load_col": load_col}
    if variant == "no user side":
        out["unused_col"] = {"inter": [config.get("USER_ID_FIELD", "user_id")]}
    return out


def rows_of(path: Path, model: str) -> list[dict]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["model"] == model and r.get("selected", "1") == "1"]


def describe(values: list[float]) -> str:
    if not values:
        return "not run yet"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f} ({', '.join(f'{v:.4f}' for v in values)})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--runs", default=None, help="the tuned benchmark's runs.csv (default results/<dataset>/runs.csv)")
    parser.add_argument("--out", default="results/din_gap.md")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--stopping_step", type=int, default=5)
    parser.add_argument("--max_len", type=int, default=20)
    parser.add_argument("--data_path", default=None)
    args = parser.parse_args(argv)
    runs = Path(args.runs or Path("results") / args.dataset / "runs.csv")
    deepfm = rows_of(runs, "DeepFM") if runs.is_file() else []
    if not deepfm:
        raise ConfigError(f"{runs}: no DeepFM rows; run the tuned benchmark first (docs/benchmark.md), or pass "
                          "--runs with its runs.csv.")
    base = {"epochs": args.epochs, "stopping_step": args.stopping_step, "max_len": args.max_len,
            "checkpoint_dir": "saved/din_gap", "data_path": args.data_path, "overrides": {}, "protocol": "full"}
    spec = benchmark.parse_spec("DeepFM")
    results: dict = {"DeepFM (benchmark)": [float(r["interest_auc"]) for r in deepfm]}
    for variant in VARIANTS:
        results[f"DeepFM, {variant}"] = []
        for row in deepfm:
            seed = int(row["seed"])
            params = json.loads(row["params"]) if row.get("params") else None
            config = variant_config(benchmark.run_config(spec, seed, 0, 1, float(row["learning_rate"]), base, params),
                                    variant, args.dataset)
            name = f"DeepFM-{variant.replace(' ', '_')}-s{seed}"
            config["checkpoint_dir"] = str(Path("saved/din_gap") / name)  # its own, as in the benchmark
            log = Path("saved/din_gap") / f"{name}.log"
            result = benchmark._run_one(spec, args.dataset, config, log, 6 * 3600)
            auc = float(result["test"]["interest_auc"])
            results[f"DeepFM, {variant}"].append(auc)
            print(f"DeepFM, {variant}, seed {seed}: interest AUC {auc:.4f} ({result['epochs_run']} epochs; log {log})",
                  flush=True)
    din = rows_of(runs, "DIN")
    results["DIN (benchmark)"] = [float(r["interest_auc"]) for r in din]

    command = "python benchmarks/din_gap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    import recbole
    import torch

    lines = [f"# DIN against DeepFM: DeepFM without the user side ({args.dataset})", "",
             f"Command: `{command.strip()}` (with `OMP_NUM_THREADS=1`)  ",
             f"Date {date.today().isoformat()}; {platform.machine()}, {platform.system()}; python "
             f"{platform.python_version()}, torch {torch.__version__}, recbole {recbole.__version__}.", "",
             f"DeepFM with the configuration the tuned benchmark chose for it (`{runs}`: its learning rate and "
             "`params`), the same split, seeds, epoch cap and early stopping; only the user side removed. The "
             "benchmark's own DeepFM and DIN rows are read from the same file. Test interest AUC, mean ± std over "
             "the seeds (each seed's value in brackets):", "",
             "| model | inputs | interest AUC |", "|---|---|---|",
             f"| DeepFM (benchmark) | user id, user attributes, item id, item attributes | "
             f"{describe(results['DeepFM (benchmark)'])} |"]
    for variant, inputs in VARIANTS.items():
        lines.append(f"| DeepFM, {variant} | {inputs} | {describe(results[f'DeepFM, {variant}'])} |")
    lines.append(f"| DIN (benchmark) | item history (items and attributes), target item (RecBole 1.2.1 builds "
                 f"but never reads the user features) | {describe(results['DIN (benchmark)'])} |")
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
