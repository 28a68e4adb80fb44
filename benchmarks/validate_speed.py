"""How long the atomic-file check takes beside RecBole's own read of the same file.

    python benchmarks/validate_speed.py --rows 2000000

Writes a synthetic ``.inter`` (user, item, rating, timestamp) of ``--rows`` rows to a temp folder,
then times (1) ``recbole_mtl.data.validate.check_file`` on it and (2) the ``pandas.read_csv``
call RecBole's ``Dataset._load_feat`` makes (python engine, the same dtypes). Prints both, their
ratio, MB/s, and appends the figures to ``results/validate_speed.md`` with the command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_mtl.checkpoint import atomic_write_text  # noqa: E402
from recbole_mtl.data.validate import FileRules, check_file  # noqa: E402


def write_inter(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for i in range(rows):
            f.write(f"{rng.randrange(50000)}\t{rng.randrange(20000)}\t{rng.randint(1, 5)}\t{880000000 + i}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=str, default="results/validate_speed.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.inter"
        write_inter(path, args.rows, args.seed)
        size_mb = os.path.getsize(path) / 1e6
        rules = FileRules(required_fields={"user_id": "", "item_id": ""}, required_values={"rating", "timestamp"},
                          nonempty_tokens={"user_id", "item_id"}, collect_ids={"user_id", "item_id"}, need_rows=True)
        start = time.perf_counter()
        report = check_file(path, rules)
        t_check = time.perf_counter() - start
        assert report.rows == args.rows
        start = time.perf_counter()
        usecols = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
        df = pd.read_csv(path, delimiter="\t", usecols=usecols, engine="python",
                         dtype={"user_id:token": str, "item_id:token": str, "rating:float": np.float64,
                                "timestamp:float": np.float64})
        t_read = time.perf_counter() - start
        assert len(df) == args.rows

    lines = [
        f"rows: {args.rows:,} ({size_mb:.1f} MB)",
        f"validate (check_file): {t_check:.2f} s ({size_mb / t_check:.1f} MB/s)",
        f"RecBole's read (pandas.read_csv, python engine): {t_read:.2f} s ({size_mb / t_read:.1f} MB/s)",
        f"validate / read: {t_check / t_read:.2f}x",
    ]
    print("\n".join(lines))
    command = "python benchmarks/validate_speed.py " + " ".join(sys.argv[1:])
    out = Path(args.out)
    previous = out.read_text() if out.exists() else "# Atomic-file check speed\n\n"
    entry = f"## {datetime.date.today()}\n\n`{command.strip()}`\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n"
    atomic_write_text(out, previous + entry)


if __name__ == "__main__":
    main()
