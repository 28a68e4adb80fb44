"""How long the atomic-file check takes, fast path and line by line, beside RecBole's own read.

    python benchmarks/validate_speed.py --rows 2000000 [--item dataset/x/x.item] [--no-slow]

Writes a synthetic ``.inter`` (user, item, rating, timestamp) of ``--rows`` rows to a temp folder,
then times, each in a fresh process (so each peak memory is its own): (1)
``recbole_mtl.data.validate.check_file`` with its fast path, (2) the same with ``fast=False``
(line by line only), (3) the ``pandas.read_csv`` call RecBole's ``Dataset._load_feat`` makes (on
pandas' C parser, as ``recbole_mtl.compat`` patches it). With ``--item``, also times both paths of
``check_file`` on that ``.item`` file with the rules ``validate_dataset`` uses when ``load_col``
loads only ``item_id`` from it. Prints the figures (seconds, MB/s, peak RSS) and writes them to
``results/validate_speed.md`` with the command (the whole file).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_inter(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            pd.DataFrame({"u": rng.integers(0, 50000, n), "i": rng.integers(0, 20000, n),
                          "r": rng.integers(1, 6, n), "t": 880000000 + np.arange(start, start + n)}).to_csv(
                f, sep="\t", header=False, index=False)


def rules_for(kind: str):
    from recbole_mtl.data.validate import FileRules

    if kind == "inter":
        return FileRules(required_fields={"user_id": "", "item_id": ""}, required_values={"rating", "timestamp"},
                         nonempty_tokens={"user_id", "item_id"}, collect_ids={"user_id", "item_id"}, need_rows=True)
    # what validate_dataset checks in an .item file when load_col loads only item_id from it
    return FileRules(required_fields={"item_id": "identifies each row of the .item file."},
                     nonempty_tokens={"item_id"}, collect_ids={"item_id"}, load_col={"item_id"}, unique_ids="item_id")


def measure(what: str, path: str, kind: str) -> dict:
    """One timing, in this process: ``what`` is fast, slow or read."""
    import recbole_mtl  # noqa: F401  (the compat patches, as in a run)
    from recbole_mtl.data.validate import check_file

    start = time.perf_counter()
    if what == "read":
        from recbole.data.dataset import dataset as rb_dataset

        usecols = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
        frame = rb_dataset.pd.read_csv(path, delimiter="\t", usecols=usecols, engine="python", dtype={
            "user_id:token": str, "item_id:token": str, "rating:float": np.float64, "timestamp:float": np.float64})
        rows, fast = len(frame), None
    else:
        report = check_file(Path(path), rules_for(kind), fast=what == "fast")
        rows, fast = report.rows, report.fast
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": rows, "fast": fast,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(what: str, path: Path, kind: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, __file__, "--measure", what, str(path), kind], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def describe(label: str, result: dict, size_mb: float) -> str:
    return (f"{label}: {result['seconds']:.2f} s ({size_mb / result['seconds']:.1f} MB/s), "
            f"peak RSS {result['peak_mb']:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--item", type=str, default=None, help="also time both paths on this .item file")
    parser.add_argument("--no-slow", action="store_true", help="skip the line-by-line timings (huge files)")
    parser.add_argument("--out", type=str, default="results/validate_speed.md")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.inter"
        write_inter(path, args.rows, args.seed)
        size_mb = os.path.getsize(path) / 1e6
        lines.append(f"`.inter`: {args.rows:,} rows ({size_mb:.1f} MB), synthetic (user, item, rating, timestamp)")
        fast = run("fast", path, "inter")
        assert fast["rows"] == args.rows and fast["fast"], fast
        lines.append(describe("  check_file, fast path", fast, size_mb))
        if not args.no_slow:
            slow = run("slow", path, "inter")
            assert slow["rows"] == args.rows and not slow["fast"], slow
            lines.append(describe("  check_file, line by line (fast=False)", slow, size_mb))
            lines.append(f"  line by line / fast path: {slow['seconds'] / fast['seconds']:.1f}x")
        read = run("read", path, "inter")
        assert read["rows"] == args.rows
        lines.append(describe("  RecBole's read (pandas.read_csv on the C parser)", read, size_mb))
        lines.append(f"  fast path / read: {fast['seconds'] / read['seconds']:.2f}x")
    if args.item:
        item = Path(args.item)
        size_mb = os.path.getsize(item) / 1e6
        lines.append(f"`{item.name}`: {size_mb:.1f} MB, rules of an `.item` whose load_col is [item_id]")
        fast = run("fast", item, "item")
        assert fast["fast"], fast
        lines.append(f"  rows: {fast['rows']:,}")
        lines.append(describe("  check_file, fast path", fast, size_mb))
        if not args.no_slow:
            slow = run("slow", item, "item")
            assert slow["rows"] == fast["rows"] and not slow["fast"], slow
            lines.append(describe("  check_file, line by line (fast=False)", slow, size_mb))
            lines.append(f"  line by line / fast path: {slow['seconds'] / fast['seconds']:.1f}x")

    print("\n".join(lines))
    command = "python benchmarks/validate_speed.py " + " ".join(sys.argv[1:])
    from recbole_mtl.checkpoint import atomic_write_text

    body = "\n".join(f"- {l.strip()}" if not l.startswith("  ") else f"  - {l.strip()}" for l in lines)
    atomic_write_text(Path(args.out), f"# Atomic-file check speed\n\n## {datetime.date.today()}\n\n"
                                      f"`{command.strip()}`\n\n{body}\n")


if __name__ == "__main__":
    main()
