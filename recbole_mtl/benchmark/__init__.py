"""``run_recbole_mtl.py benchmark``: the multi-task models against RecBole baselines, fairly.

Every model is scored on the tasks it competes on, on one split and the same test cases:

* **sequence** (next item): leave-one-out by time (each user's last interaction is the test case,
  the one before it the validation case), full ranking over all items with RecBole's metrics.
  Competitors: RecBole's sequential and general recommenders (SASRec, GRU4Rec, BERT4Rec, BPR, ...)
  and the multi-task models' sequence head.
* **interest** (rating >= 4): the same last interactions with their labels. Competitors: RecBole's
  context-aware models and point-wise sequential models (DeepFM, DIN, ...) and the multi-task
  models' interest head; every one is scored by the same code (``InterestTask.metrics``: RecBole's
  AUC/LogLoss plus accuracy, precision, recall, F1 at 0.5).
* **category** (multi-label): the held-out items of the category split (fixed by seed, or K folds
  with ``--folds``). Competitors: the multi-task models, a single-task variant (``MTLRec@category``)
  and ``CategoryMLP``, a plain classifier on the same item features.

Each (model, seed, fold, learning rate) run happens in its own process (so its peak memory is its
own) and is appended to ``results/<dataset>/runs.csv`` as soon as it finishes; a rerun of the same
command skips the runs already there. For each (model, seed, fold) the learning rate with the best
validation score is selected; the summary reports the mean +- std of the selected runs.

Model specs: ``Model`` | ``Model@task+task`` (only those tasks) | ``Model:balance`` (``loss_balance``),
e.g. ``MTLRec@category``, ``MMoE:uncertainty``, ``PLE@sequence+interest:pcgrad``.

The modules, one concern each: :mod:`~recbole_mtl.benchmark.specs` (the model specs and their
parser), :mod:`~recbole_mtl.benchmark.worker` (one run in its own process),
:mod:`~recbole_mtl.benchmark.runs` (``runs.csv`` and the selection),
:mod:`~recbole_mtl.benchmark.runner` (jobs, studies, resume), :mod:`~recbole_mtl.benchmark.report`
(the summary and ``summary.md``'s sections), :mod:`~recbole_mtl.benchmark.plots` (the charts) and
:mod:`~recbole_mtl.benchmark.command` (the command line and :func:`main`). Their names are
importable from here.
"""

from __future__ import annotations

from recbole_mtl.benchmark.command import MAX_SEEDS, build_parser, main, parse
from recbole_mtl.benchmark.plots import _save_png, curve_panels, plot, plot_curves
from recbole_mtl.benchmark.report import (CLAIM_DEFINITIONS, CLAIM_METRICS, CLAIMS, PER_SEED_UNITS, SIGNIFICANCE,
                                          cut_by_cap, extra_sections, markdown, significance, summarise,
                                          tuning_section)
from recbole_mtl.benchmark.runner import TRIAL_RESULT, _Runner, optuna_state
from recbole_mtl.benchmark.runs import FIELDS, read_runs, select, stopped_by, write_runs
from recbole_mtl.benchmark.specs import (CATEGORY_MLP, CATEGORY_MLP_TEXT, GAIN_REFERENCE_MODEL, OBJECTIVES, PLOTTED,
                                         PRESETS, PROTOCOLS, SMALLER, TASK_METRICS, TASKS, VALID_METRIC, ModelSpec,
                                         parse_spec)
from recbole_mtl.benchmark.worker import (LEAVE_ONE_OUT, RESULT_TAG, TIME_BUDGET_KEY, _interest_metrics_of_baseline,
                                          _per_user, _run_one, _TestRecorder, run_config, worker)

__all__ = ["CATEGORY_MLP", "CATEGORY_MLP_TEXT", "CLAIMS", "CLAIM_DEFINITIONS", "CLAIM_METRICS", "FIELDS",
           "GAIN_REFERENCE_MODEL", "LEAVE_ONE_OUT", "MAX_SEEDS", "OBJECTIVES", "PER_SEED_UNITS", "PLOTTED", "PRESETS",
           "PROTOCOLS", "RESULT_TAG", "SIGNIFICANCE", "SMALLER", "TASKS", "TASK_METRICS", "TIME_BUDGET_KEY",
           "TRIAL_RESULT", "VALID_METRIC", "ModelSpec", "_Runner", "_TestRecorder", "_interest_metrics_of_baseline",
           "_per_user", "_run_one", "_save_png", "build_parser", "curve_panels", "cut_by_cap", "extra_sections",
           "main", "markdown", "optuna_state", "parse", "parse_spec", "plot", "plot_curves", "read_runs", "run_config",
           "select", "significance", "stopped_by", "summarise", "tuning_section", "worker", "write_runs"]
