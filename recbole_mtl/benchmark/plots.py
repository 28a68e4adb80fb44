"""The benchmark's charts: the main metrics per task (``summary.png``) and the validation curves
against training time (``curves.png``), each PNG written whole or not at all."""

from __future__ import annotations

import io
import json
from pathlib import Path

from recbole_mtl.benchmark.specs import PLOTTED, TASKS, ModelSpec
from recbole_mtl.checkpoint import atomic_open
from recbole_mtl.trainer import MTL_GAIN


def _curve(row: dict) -> list:
    try:
        return json.loads(row.get("curve") or "[]")
    except ValueError:
        return []


def curve_panels(rows: list[dict], specs: list[ModelSpec]) -> dict:
    """``{task or mtl_gain: [(spec, its selected rows with a curve)]}``, in task order: a model's
    curve goes to its first task's panel (whatever RecBole calls the metric: ``AUC`` for a CTR
    model, ``interest_auc`` for ours), or to ``mtl_gain``'s when it was validated on that."""
    panels: dict = {}
    for spec in specs:
        chosen = [r for r in rows if r["model"] == spec.text and int(r["selected"]) == 1 and _curve(r)]
        if chosen:
            key = MTL_GAIN if chosen[0].get("valid_metric") == MTL_GAIN else spec.tasks[0]
            panels.setdefault(key, []).append((spec, chosen))
    return {k: panels[k] for k in (*TASKS, MTL_GAIN) if k in panels}


def plot_curves(rows: list[dict], specs: list[ModelSpec], path: Path) -> None:
    """Validation metric against training time (wall clock, incl. validation), one panel per task
    (the models whose first task it is) and one for ``mtl_gain`` (the multi-task models tuned on all
    their tasks at once)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = curve_panels(rows, specs)
    if not panels:
        return
    order = list(panels)
    columns = 2 if len(order) > 3 else len(order)
    grid = -(-len(order) // columns)
    fig, axes = plt.subplots(grid, columns, figsize=(6 * columns, 4.4 * grid), squeeze=False)
    for ax, key in zip(axes.flat, order):
        metric = ""
        for k, (spec, chosen) in enumerate(panels[key]):
            for j, row in enumerate(chosen):
                curve = _curve(row)
                metric = metric or row.get("valid_metric", "")
                ax.plot([t for t, _ in curve], [v for _, v in curve], marker=".", color=f"C{k % 10}",
                        alpha=0.8, label=spec.text if j == 0 else None)
        ax.set_xlabel("training time, s (incl. validation; the machine may be shared)")
        ax.set_ylabel(f"validation {metric}")
        ax.set_title(f"{key} (first task of each model)" if key != MTL_GAIN else
                     f"all tasks ({MTL_GAIN} over the single-task models)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(order):]:
        ax.set_visible(False)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` whole (a failure leaves any earlier file as it was) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(t, PLOTTED[t]) for t in TASKS if summary[t]]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4.2), squeeze=False)
    for ax, (task, metrics) in zip(axes[0], shown):
        names = list(summary[task])
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            means = [summary[task][n].get(metric, (0, 0, 0))[0] for n in names]
            stds = [summary[task][n].get(metric, (0, 0, 0))[1] for n in names]
            ax.bar([i + j * width for i in range(len(names))], means, width, yerr=stds, capsize=3, label=metric)
        ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(names))])
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(task)
        ax.legend(fontsize=8)
    _save_png(fig, path)
