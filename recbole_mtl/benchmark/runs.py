"""``runs.csv``: one row per finished run (read, written whole), and the selection of each
(model, seed, fold)'s learning rate on validation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from recbole_mtl.benchmark.specs import SMALLER
from recbole_mtl.checkpoint import atomic_write_text

FIELDS = ["model", "seed", "fold", "learning_rate", "params", "tasks", "selected", "valid_metric", "valid_score",
          "epochs_run", "best_epoch", "epoch_cap", "hit_cap", "hit_budget", "protocol", "time_per_epoch_s",
          "train_time_s", "peak_rss_mb", "split", "per_user", "trial", "curve"]


def _key(row: dict) -> tuple:
    return (row["model"], int(row["seed"]), int(row["fold"]), float(row["learning_rate"]), row.get("params") or "")


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_runs(path: Path, rows: list[dict]) -> None:
    metrics = sorted({k for r in rows for k in r} - set(FIELDS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS + metrics, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def select(rows: list[dict]) -> list[dict]:
    """Mark, for each (model, seed, fold), the learning rate with the best validation score."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["model"], int(row["seed"]), int(row["fold"])), []).append(row)
    for group in groups.values():
        smaller = group[0]["valid_metric"].lower() in SMALLER
        best = (min if smaller else max)(group, key=lambda r: float(r["valid_score"]))
        for row in group:
            row["selected"] = int(row is best)
    return rows


def stopped_by(row: dict) -> str:
    """What ended a run of ``runs.csv``: ``time budget`` (``--time_budget``), ``epoch cap`` or
    ``early stopping``."""
    if row.get("hit_budget") not in (None, "") and int(float(row["hit_budget"])):
        return "time budget"
    return "epoch cap" if row.get("hit_cap") not in (None, "") and int(float(row["hit_cap"])) else "early stopping"
