"""How much one encoder pass per user saves in sampled evaluation (uni100) against RecBole's way.

    python benchmarks/sampled_eval.py [--dataset ml-100k] [--max_len 50] [--repeats 3] [--out results/sampled_eval.md]

RecBole's sampled evaluation repeats each test user's history once per candidate (the test item
and 100 sampled negatives: 101 rows per user). ``sampled_scoring: repeated`` encodes every row,
as RecBole does; ``one_pass`` (the default) encodes each history once and scores the user's 101
candidates from that state. Both score the same sampled candidates, so the metrics must be equal;
the script checks it and prints the test evaluation's wall time of each (an untrained MTLRec: the
time does not depend on the weights), the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date

import recbole_mtl  # noqa: F401
from recbole_mtl import pipeline
from recbole_mtl.checkpoint import atomic_write_text
from recbole_mtl.config import Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/sampled_eval.md")
    args = parser.parse_args()
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                 "mode": {"valid": "uni100", "test": "uni100"}}
    seconds, results = {}, {}
    for way in ("repeated", "one_pass"):
        config = Config(model="MTLRec", dataset=args.dataset, cmd_args=[], config_dict={
            "eval_args": eval_args, "sampled_scoring": way, "MAX_ITEM_LIST_LENGTH": args.max_len,
            "show_progress": False, "state": "WARNING", "seed": 2020})
        built = pipeline.build(config)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            results[way] = built.trainer.evaluate(built.test_data, load_best_model=False)
            times.append(time.perf_counter() - start)
        seconds[way] = min(times)
        print(f"{way}: {seconds[way]:.2f} s (test evaluation, best of {args.repeats}); "
              f"ndcg@10 {results[way]['ndcg@10']:.4f}, hit@10 {results[way]['hit@10']:.4f}", flush=True)
    same = all(results["repeated"][k] == results["one_pass"][k] for k in results["repeated"] if "@" in k)
    speedup = seconds["repeated"] / seconds["one_pass"]
    print(f"speed-up {speedup:.1f}x; ranking metrics equal: {same}")
    import torch

    metrics = [k for k in results["one_pass"] if "@" in k]
    lines = [
        "# Sampled evaluation (uni100): one encoder pass per user against one per candidate", "",
        f"Produced by: `python benchmarks/sampled_eval.py {' '.join(sys.argv[1:])}`  ",
        f"Date: {date.today()}; torch {torch.__version__}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPU cores (the machine may be shared: times indicative).", "",
        f"MTLRec (untrained, MAX_ITEM_LIST_LENGTH {args.max_len}) on {args.dataset}, leave-one-out by time, test set "
        "scored with RecBole's `eval_args: mode: {test: uni100}`: each user's test item among 100 uniformly "
        f"sampled negatives. Wall time of the whole test evaluation, best of {args.repeats}.", "",
        "| sampled_scoring | test evaluation (s) | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for way in ("repeated", "one_pass"):
        lines.append(f"| {way} | {seconds[way]:.2f} | " + " | ".join(f"{results[way][m]:.4f}" for m in metrics) + " |")
    lines += ["", f"Speed-up: **{speedup:.0f}x**; every ranking metric equal: **{same}**.", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
