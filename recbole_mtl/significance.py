"""Per-user test values of a run and paired bootstrap intervals between two models.

* :func:`topk_per_user`: each test user's NDCG@K, Hit@K, MRR@K, Recall@K, Precision@K from
  RecBole's own metric classes (``metric_info``) on the data RecBole's evaluator collected, so the
  mean over users is the figure RecBole reports.
* :func:`auc`: the rank-based AUC RecBole computes, for resampled test interactions (AUC is not a
  mean over users, so the bootstrap recomputes it on each resample).
* :func:`micro_f1`: the category task's micro-F1, recomputed on resampled held-out items.
* :func:`paired_bootstrap`: the mean difference A - B of a metric and its percentile interval,
  resampling test units (users) and seeds together, both models on the same draws.

Example:
    >>> import numpy as np
    >>> a, b = [np.ones(50)], [np.zeros(50)]
    >>> paired_bootstrap(mean_statistic(a), mean_statistic(b), n_units=50, n_seeds=1).low
    1.0
"""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from recbole_mtl.checkpoint import atomic_open

#: A statistic of one model on one seed over the resampled test units ``idx`` ``[n]``.
Statistic = Callable[[int, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """``mean`` (A - B on every unit and seed) and its ``low``..``high`` bootstrap interval."""

    mean: float
    low: float
    high: float
    n_units: int
    n_seeds: int

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)


def mean_statistic(values: Sequence[np.ndarray]) -> Statistic:
    """The mean of per-unit ``values[seed]`` over the drawn units."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    return lambda seed, idx: float(arrays[seed][idx].mean())


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC by ranks with ties averaged (RecBole's ``AUC``); nan when one class is absent."""
    from scipy.stats import rankdata

    labels = np.asarray(labels) > 0.5
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_statistic(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Statistic:
    """The AUC of ``scores[seed]`` against ``labels[seed]`` over the drawn interactions."""
    return lambda seed, idx: auc(np.asarray(scores[seed])[idx], np.asarray(labels[seed])[idx])


def micro_f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """Micro-F1 of multi-label predictions ``[n, C]`` (bool) against labels ``[n, C]`` (the
    category task's ``category_micro_f1``); 0 when nothing is predicted or labelled."""
    preds, labels = np.asarray(preds, dtype=bool), np.asarray(labels, dtype=bool)
    tp = int((preds & labels).sum())
    fp, fn = int((preds & ~labels).sum()), int((~preds & labels).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def micro_f1_statistic(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> Statistic:
    """The micro-F1 of ``preds[seed]`` against ``labels[seed]`` over the drawn items (micro-F1 is
    not a mean over items, so each replicate recomputes it, as :func:`auc_statistic` does)."""
    return lambda seed, idx: micro_f1(np.asarray(preds[seed])[idx], np.asarray(labels[seed])[idx])


def paired_bootstrap(stat_a: Statistic, stat_b: Statistic, n_units: int, n_seeds: int, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> Interval:
    """Mean difference A - B and its percentile interval by a paired bootstrap over units and seeds.

    Each of ``n_boot`` replicates draws ``n_units`` test units and ``n_seeds`` seeds with
    replacement; both models are scored on the same draws (the pairing), the difference is averaged
    over the drawn seeds. Seed ``s`` of A is paired with seed ``s`` of B (same split and training
    seed). The point estimate uses every unit and seed once.

    Args:
        stat_a, stat_b: ``(seed index, unit indices [n]) -> metric`` of each model.
        n_units: test units (users, or interactions) shared by both models, the same in every seed;
            or a list, the units of each seed when seeds have their own (the category task's
            held-out items depend on the seed): a replicate then draws units within each drawn seed.
        n_seeds: seeds both models ran.
        n_boot: bootstrap replicates.
        seed: seed of the resampling (the same call gives the same interval).
        level: coverage of the interval.
    """
    per_seed = not isinstance(n_units, (int, np.integer))
    counts = [int(n) for n in n_units] if per_seed else [int(n_units)] * n_seeds
    if len(counts) != n_seeds or min(counts, default=0) < 1 or n_seeds < 1:
        raise ValueError(f"paired_bootstrap needs at least one unit and one seed (got {n_units}, {n_seeds}).")
    point = float(np.mean([stat_a(s, np.arange(counts[s])) - stat_b(s, np.arange(counts[s])) for s in range(n_seeds)]))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for r in range(n_boot):
        if per_seed:  # each seed has its own units (the category task's held-out items): drawn within it
            seeds = rng.integers(0, n_seeds, n_seeds)
            draws = [(int(s), rng.integers(0, counts[s], counts[s])) for s in seeds]
            diffs[r] = np.mean([stat_a(s, idx) - stat_b(s, idx) for s, idx in draws])
            continue
        idx = rng.integers(0, n_units, n_units)
        seeds = rng.integers(0, n_seeds, n_seeds)
        diffs[r] = np.mean([stat_a(int(s), idx) - stat_b(int(s), idx) for s in seeds])
    diffs = diffs[np.isfinite(diffs)]
    tail = (1.0 - level) / 2 * 100
    low, high = (np.percentile(diffs, [tail, 100 - tail]) if len(diffs) else (float("nan"), float("nan")))
    return Interval(point, float(low), float(high), n_units, n_seeds)


# -- per-user values of one run --------------------------------------------------------------
def topk_per_user(struct, config) -> dict[str, np.ndarray]:
    """``{"ndcg@10": [U], ...}``: each evaluated user's value of every top-k metric of ``config``.

    ``struct`` is the ``DataStruct`` RecBole's evaluator receives (``rec.topk``); the values come
    from each metric class's ``metric_info``, the step before RecBole averages them.
    """
    from recbole.evaluator.register import metrics_dict

    if "rec.topk" not in struct:
        return {}
    out: dict[str, np.ndarray] = {}
    for name in config["metrics"]:
        metric_class = metrics_dict.get(name.lower())
        if metric_class is None or getattr(metric_class, "metric_type", None) is None \
                or "rec.topk" not in getattr(metric_class, "metric_need", []):
            continue
        metric = metric_class(config)
        pos_index, pos_len = metric.used_info(struct)
        takes_len = len(inspect.signature(metric.metric_info).parameters) >= 2
        values = metric.metric_info(pos_index, pos_len) if takes_len else metric.metric_info(pos_index)
        for k in metric.topk:
            out[f"{name.lower()}@{k}"] = np.asarray(values[:, k - 1], dtype=np.float64)
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as one compressed ``.npz``, whole or not at all."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def align(runs_a: list[dict], runs_b: list[dict], key: str, value: str):
    """Values of ``value`` of both models on the units (``key``: user tokens) every run has, in one
    order per seed; ``([A per seed], [B per seed], n_units)``."""
    common = None
    for run in runs_a + runs_b:
        units = set(run[key].tolist())
        common = units if common is None else common & units
    order = sorted(common or [])
    return [_pick(r, key, value, order) for r in runs_a], [_pick(r, key, value, order) for r in runs_b], len(order)


def align_per_seed(runs_a: list[dict], runs_b: list[dict], key: str, value: str):
    """As :func:`align`, but the units are matched within each seed (run ``s`` of A with run ``s``
    of B): for units that depend on the seed, such as the category task's held-out items;
    ``([A per seed], [B per seed], [units per seed])``."""
    a, b, counts = [], [], []
    for run_a, run_b in zip(runs_a, runs_b):
        order = sorted(set(run_a[key].tolist()) & set(run_b[key].tolist()))
        a.append(_pick(run_a, key, value, order))
        b.append(_pick(run_b, key, value, order))
        counts.append(len(order))
    return a, b, counts


def _pick(run: dict, key: str, value: str, order: list) -> np.ndarray:
    position = {u: i for i, u in enumerate(run[key].tolist())}
    return np.asarray(run[value])[[position[u] for u in order]]
