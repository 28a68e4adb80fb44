"""``run_recbole_mtl.py benchmark``'s command line: its arguments, and :func:`main`, which runs
(or resumes) the benchmark and writes the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from recbole_mtl.benchmark.plots import plot, plot_curves
from recbole_mtl.benchmark.report import extra_sections, markdown, summarise
from recbole_mtl.benchmark.runner import _Runner
from recbole_mtl.benchmark.runs import _key, read_runs, select
from recbole_mtl.benchmark.specs import GAIN_REFERENCE_MODEL, OBJECTIVES, PRESETS, PROTOCOLS, ModelSpec, parse_spec
from recbole_mtl.checkpoint import atomic_write_text
from recbole_mtl.errors import ConfigError

#: More seeds than this is taken for a seed value given as a count (``--seeds 2020``).
MAX_SEEDS = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recbole-mtl benchmark",
        description="Train every model on the same split and seeds, record each run, and write a CSV, "
        "a markdown table and a chart under results/<dataset>/.",
    )
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--models", default="default",
                        help="comma-separated model specs (Model, Model@task+task, Model:balance, CategoryMLP, "
                        f"CategoryMLP+text) or a preset: {', '.join(f'{k} = {v}' for k, v in PRESETS.items())}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (2020, 2021, ...)")
    parser.add_argument("--seed", type=int, default=2020, help="first seed")
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs per run")
    parser.add_argument("--stopping_step", type=int, default=3, help="early-stopping patience (evaluations)")
    parser.add_argument("--lr_grid", default="0.001", help="comma-separated learning rates, chosen on validation")
    parser.add_argument("--tune", type=int, default=0,
                        help="N: tune every model with N Optuna trials (TPE, median pruning) on validation over "
                        "properties/search/<Model>.yaml, then run the best configuration with every seed")
    parser.add_argument("--tune_objective", default="mtl_gain", choices=OBJECTIVES,
                        help="what a multi-task model is tuned (and stopped early) on: mtl_gain, the mean relative "
                        f"gain of its tasks' validation metrics over the tuned {GAIN_REFERENCE_MODEL}@<task> "
                        "models (list them in --models), or first_task, its first task's metric")
    parser.add_argument("--protocol", default="full", choices=PROTOCOLS,
                        help="sequence task: full ranking, or 100 sampled negatives (uniform / by popularity)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of the significance tests")
    parser.add_argument("--folds", type=int, default=1, help="K-fold over items for the category task (K >= 2)")
    parser.add_argument("--max_len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH of every sequential model")
    parser.add_argument("--label_field", default=None,
                        help="interest label field for the CTR baselines (default: the dataset's interest_label_field, "
                        "the multi-task models' interest label)")
    parser.add_argument("--label_threshold", type=float, default=None,
                        help="label = field >= threshold (default: the dataset's interest_threshold)")
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (default: RecBole's)")
    parser.add_argument("--config_files", default=None,
                        help='YAML files read by every run, space separated, e.g. the dataset config that convert '
                        'writes: --config_files=dataset/NAME/NAME.yaml')
    parser.add_argument("--out", default=None, help="output folder (default: results/<dataset>)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs (trials and final runs) in parallel, each in its own process; with N cores, "
                        "N runs of OMP_NUM_THREADS=1")
    parser.add_argument("--timeout", type=int, default=6 * 3600, help="seconds one run may take")
    parser.add_argument("--time_budget", type=float, default=0,
                        help="minutes of training (validation included) per run: training stops at the first "
                             "evaluation past it and the best checkpoint so far is tested (0: no budget)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.epilog = "Any other --key=value is a config override applied to every run (e.g. --category_field=class)."
    return parser


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[ModelSpec], dict, Path]:
    """The command line: its arguments, model specs, the settings every run shares, the output folder."""
    from recbole_mtl.hardening import literal_convert

    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv))
    bad = [a for a in unknown if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognised argument(s) {bad}: config overrides take the form --key=value")
    overrides = literal_convert(dict(a[2:].split("=", 1) for a in unknown))
    models = ",".join(PRESETS.get(m.strip(), m.strip()) for m in args.models.split(","))
    try:
        specs = [parse_spec(s.strip()) for s in models.split(",") if s.strip()]
        lrs = [float(x) for x in args.lr_grid.split(",") if x.strip()]
    except ValueError as e:
        raise ConfigError(f"--lr_grid must be comma-separated numbers, e.g. 0.001,0.003 ({e}).") from None
    if args.time_budget < 0:
        raise ConfigError(f"--time_budget is minutes of training per run, 0 for none; got {args.time_budget:g}.")
    if args.seeds < 1 or args.folds < 1 or args.epochs < 1 or args.tune < 0 or args.jobs < 1:
        raise ConfigError("--seeds, --folds, --epochs and --jobs must be at least 1, --tune at least 0.")
    if args.seeds > MAX_SEEDS:
        raise ConfigError(f"--seeds is how many seeds to run ({args.seed}, {args.seed + 1}, ...), at most {MAX_SEEDS}; "
                          f"got {args.seeds}. To start from another seed, set --seed={args.seeds} --seeds=3.")
    if args.tune and args.tune_objective == "mtl_gain":
        texts = {s.text for s in specs}
        for spec in (s for s in specs if s.multi_task):
            missing = [r for r in spec.gain_references() if r not in texts]
            if missing:
                raise ConfigError(f"--tune_objective mtl_gain: {spec.text} is tuned on its tasks' gain over the tuned "
                                  f"single-task models {spec.gain_references()}; add {','.join(missing)} to --models "
                                  "(or tune on the first task's metric: --tune_objective first_task).")
    args.lrs = lrs
    args.seed_list = [args.seed + i for i in range(args.seeds)]
    out = Path(args.out or Path("results") / args.dataset)
    base = {"epochs": args.epochs, "stopping_step": args.stopping_step, "max_len": args.max_len,
            "checkpoint_dir": str(out / "checkpoints"), "label_field": args.label_field,
            "label_threshold": args.label_threshold, "data_path": args.data_path, "overrides": overrides,
            "config_files": [str(Path(f).resolve()) for f in (args.config_files or "").split() if f],
            "protocol": args.protocol, "time_budget": args.time_budget}
    return args, specs, base, out


def main(argv: Sequence[str]) -> dict:
    """Run (or resume) the benchmark; returns the summary."""
    args, specs, base, out = parse(argv)
    runs_csv = out / "runs.csv"
    runner = _Runner(specs, args, base, out)
    print(f"benchmark {args.dataset}: {len(specs)} model(s)"
          + (f", {args.tune} tuning trial(s) each, then the best configuration" if args.tune else "")
          + f" with {args.seeds} seed(s); {args.jobs} run(s) at a time; what {runs_csv}"
          + (f" and {out / 'tuning.db'}" if args.tune else "") + " already hold is skipped", flush=True)
    studies = runner.run()
    plan = [p for spec in specs for p in runner.plan(spec)]
    planned = {(spec.text, seed, fold, lr, params) for spec, seed, fold, lr, params in plan}
    print(f"benchmark {args.dataset}: {len(planned)} final run(s): {len(planned) - runner.recorded} already in "
          f"{runs_csv}, {runner.recorded} recorded now ({runner.trials} tuning trial(s) run now)", flush=True)
    rows = select([r for r in read_runs(runs_csv) if _key(r) in planned])
    summary = summarise(rows, specs)
    command = "python run_recbole_mtl.py benchmark " + " ".join(argv)
    report = extra_sections(rows, specs, out, studies, args)
    atomic_write_text(out / "summary.md", markdown(summary, rows, specs, command.strip(), args, report))
    plot(summary, out / "summary.png")
    plot_curves(rows, specs, out / "curves.png")
    print(f"wrote {runs_csv}, {out / 'summary.md'}, {out / 'summary.png'}, {out / 'curves.png'}")
    return summary
