"""Compatibility sweep: every model RecBole 1.2.1 ships, trained through this plugin on today's stack.

    python benchmarks/recbole_models.py                      # every model, writes results/recbole_models.md
    python benchmarks/recbole_models.py --models LightGCN,SASRec --out /tmp/some.md

The model list is read from RecBole itself: every module of ``recbole.model.<kind>_recommender``
(general, context-aware, sequential, knowledge-aware, and the external-library wrappers) whose
class has the module's name, as RecBole's ``get_model`` finds it. Each model is trained for one
epoch on a slice of the bundled ml-100k (the first ``--users`` users, with their items, users and
knowledge-graph triples) with ``saved=True`` through the plugin's entry point
(``recbole_mtl.cli.main``, what ``python run_recbole_mtl.py --model=X --dataset=D`` runs); then
its best checkpoint is reloaded with ``torch.load(..., weights_only=True)`` through
``load_data_and_model`` and tested again. A model passes when it trains, saves, reloads and the
reloaded model's test result equals the one the run reported.

Each model runs in its own process, with a time limit (``--timeout``) and a memory cap
(``--max_mem_mb``, resident memory of the process tree, checked every 0.2 s), so one bad model
cannot take the sweep down. The report (``--out``) is written whole and atomically at the end:
the command line, versions, date, one row per model (status, seconds, peak memory, the error line)
and, for each failure, its cause.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import pkgutil
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("general", "context_aware", "sequential", "knowledge_aware", "exlib")
SLICE_NAME = "ml-100k-slice"

# Settings every run gets: one epoch, quiet, a fixed seed; the rest is each model's RecBole default.
BASE_CONFIG: dict[str, Any] = {
    "epochs": 1,
    "eval_step": 1,
    "seed": 2020,
    "reproducibility": True,
    "show_progress": False,
    "state": "WARNING",
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},  # RecBole's ml-100k.yaml
}


# ---------------------------------------------------------------------------------------------
# The models, read from RecBole
# ---------------------------------------------------------------------------------------------


def discover_models(kinds: tuple[str, ...] = KINDS) -> list[tuple[str, str]]:
    """``[(kind, ModelName), ...]`` for every model module RecBole ships, in RecBole's order.

    A module ``foo.py`` of ``recbole.model.<kind>_recommender`` holds model ``Foo`` (the class
    whose lower-cased name is the module's), the convention RecBole's ``get_model`` relies on.
    The class name is read from the module's source, so a kind whose package cannot be imported
    here (``exlib`` needs xgboost and lightgbm) is listed too and fails in its own run.
    """
    models = []
    for kind in kinds:
        spec = importlib.util.find_spec(f"recbole.model.{kind}_recommender")
        for module in pkgutil.iter_modules(spec.submodule_search_locations):
            if module.name.startswith("_"):
                continue
            source = Path(spec.submodule_search_locations[0], module.name + ".py").read_text(encoding="utf-8")
            for name in re.findall(r"^class (\w+)\(", source, flags=re.M):
                if name.lower() == module.name:
                    models.append((kind, name))
    return models


# ---------------------------------------------------------------------------------------------
# What each model needs: one table, keyed by what RecBole says about the model
# ---------------------------------------------------------------------------------------------


def _recbole_yaml(relative: str) -> dict:
    import yaml

    import recbole

    path = Path(recbole.__file__).parent / "properties" / relative
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _is_context(model_class, model_yaml) -> bool:
    from recbole.utils import ModelType

    return model_class.type in (ModelType.CONTEXT, ModelType.DECISIONTREE)


def _is_sequential(model_class, model_yaml) -> bool:
    from recbole.utils import ModelType

    return model_class.type == ModelType.SEQUENTIAL


def _is_pointwise_sequential(model_class, model_yaml) -> bool:
    from recbole.utils import InputType, ModelType

    return model_class.type == ModelType.SEQUENTIAL and getattr(model_class, "input_type", None) == InputType.POINTWISE


def _is_ce_sequential(model_class, model_yaml) -> bool:
    from recbole.utils import ModelType

    return model_class.type == ModelType.SEQUENTIAL and model_yaml.get("loss_type") == "CE"


def _reads_item_features(model_class, model_yaml) -> bool:
    return "selected_features" in model_yaml or "item_attribute" in model_yaml


def _is_knowledge(model_class, model_yaml) -> bool:
    from recbole.utils import ModelType

    return model_class.type == ModelType.KNOWLEDGE


def _uses_pretrained_kg_embeddings(model_class, model_yaml) -> bool:
    return "freeze_kg" in model_yaml


def _samples_ids_per_batch(model_class, model_yaml) -> bool:
    return "cor_weight" in model_yaml


def _pretrains(model_class, model_yaml) -> bool:
    return "pretrain_epochs" in model_yaml


# (condition on the model class and its YAML, config it needs, why). Later rows win. The ml-100k
# presets are RecBole's own (properties/quick_start_config), which RecBole's Config applies only
# when the dataset is literally named ml-100k, so the slice gets them here.
NEEDS: list[tuple[Any, Any, str]] = [
    (_is_sequential, lambda: {"MAX_ITEM_LIST_LENGTH": 20},
     "sequential: histories of the last 20 items (RecBole's default 50 costs about 3x the time on 2 cores)"),
    (_is_context, lambda: _recbole_yaml("quick_start_config/context-aware_ml-100k.yaml"),
     "context-aware: a label (rating >= 4) and user/item features, RecBole's ml-100k preset"),
    (_is_pointwise_sequential, lambda: _recbole_yaml("quick_start_config/sequential_DIN_on_ml-100k.yaml"),
     "point-wise sequential (DIN, DIEN, ...): user/item features, RecBole's ml-100k preset"),
    (_reads_item_features, lambda: _recbole_yaml("quick_start_config/special_sequential_on_ml-100k.yaml"),
     "names item fields (selected_features / item_attribute): load them, RecBole's ml-100k preset"),
    (_is_knowledge, lambda: _recbole_yaml("quick_start_config/knowledge_base.yaml"),
     "knowledge-aware: load the .kg and .link files, RecBole's preset (the slice's load_col would hide it)"),
    (_uses_pretrained_kg_embeddings, lambda: _recbole_yaml("quick_start_config/sequential_embedding_model.yaml"),
     "pre-trained knowledge embeddings (freeze_kg): load <dataset>.ent, RecBole's preset"),
    (_is_ce_sequential, lambda: {"train_neg_sample_args": None},
     "sequential with loss_type CE: RecBole refuses negative sampling"),
    (_samples_ids_per_batch, lambda: {"train_batch_size": 512},
     "samples max(users, items) / batches distinct ids per batch (DGCF's correlation loss): more, smaller "
     "batches, so that a 100-user slice has enough users"),
    (_pretrains, lambda: {"pretrain_epochs": 1, "save_step": 1},
     "pre-training model: one pre-training epoch, saved"),
]


def model_config(name: str, data_path: str, workdir: str) -> tuple[dict, list[str]]:
    """The config a sweep run of ``name`` uses, and the reasons of the rows of ``NEEDS`` it took."""
    from recbole.utils import get_model

    model_class = get_model(name)
    model_yaml = _recbole_yaml(f"model/{name}.yaml")
    config = dict(BASE_CONFIG)
    config.update({"data_path": data_path, "checkpoint_dir": os.path.join(workdir, "saved")})
    reasons = []
    for condition, needed, why in NEEDS:
        if condition(model_class, model_yaml):
            config.update(needed())
            reasons.append(why)
    return config, reasons


# Causes of failures that are not the plugin's to fix: (pattern in the error line, cause; {0} is
# the pattern's first group).
KNOWN_CAUSES: list[tuple[str, str]] = [
    (r"No module named '(lightgbm|xgboost|faiss|dgl|torch_geometric|torch_scatter|torch_sparse)",
     "needs the optional package `{0}`, which RecBole imports inside the model and does not install "
     "(nor does this project's pinned stack); installing it is the user's choice, nothing to patch"),
    (r"\.ent\b|ent_id|ent_emb|additional_feat_suffix",
     "needs pretrained entity embeddings (<dataset>.ent, additional_feat_suffix: ent); ml-100k does not "
     "ship them: data the user must provide, not a compatibility problem"),
]


# Models that go over the sweep's limits by design of their RecBole code: (model, cause).
KNOWN_LIMITS: dict[str, str] = {
    "S3Rec": "its pre-training (RecBole's default stage) builds masked samples in Python, drawing each negative by "
             "membership in a list of the whole batch (quadratic in the batch size), and broadcasts the attribute "
             "scores to [B*L, attributes, H]; one pre-training epoch of this slice goes past the cap within a "
             "minute (with histories of 50 and a batch of 256 it ran over 250 s). RecBole's model code, not a "
             "compatibility problem",
}


def explain(record: dict) -> str:
    """Why a failed run failed, from :data:`KNOWN_CAUSES`; '' when the cause is not known."""
    if record["status"] in ("timeout", "memory") and record["model"] in KNOWN_LIMITS:
        return KNOWN_LIMITS[record["model"]]
    if record["status"] == "timeout":
        return f"did not finish within the {record['limit']} s limit of the sweep"
    if record["status"] == "memory":
        return f"went over the {record['limit']} MB memory cap of the sweep"
    for pattern, cause in KNOWN_CAUSES:
        match = re.search(pattern, record.get("error", ""))
        if match:
            return cause.format(*match.groups())
    return ""


# ---------------------------------------------------------------------------------------------
# Data: a slice of the bundled ml-100k
# ---------------------------------------------------------------------------------------------


def write_slice(root: Path, max_user: int = 100, name: str = SLICE_NAME) -> Path:
    """ml-100k restricted to users ``1..max_user``: their interactions, users, items, links, triples."""
    import recbole

    source = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)

    def lines(suffix):
        return (source / f"ml-100k.{suffix}").read_text(encoding="utf-8", errors="ignore").splitlines()

    def write(suffix, header, rows):
        (folder / f"{name}.{suffix}").write_text("\n".join([header] + rows) + "\n", encoding="utf-8")

    inter = lines("inter")
    kept = [row for row in inter[1:] if int(row.split("\t")[0]) <= max_user]
    items = {row.split("\t")[1] for row in kept}
    write("inter", inter[0], kept)
    user = lines("user")
    write("user", user[0], [row for row in user[1:] if int(row.split("\t")[0]) <= max_user])
    item = lines("item")
    write("item", item[0], [row for row in item[1:] if row.split("\t")[0] in items])
    link = lines("link")
    links = [row for row in link[1:] if row.split("\t")[0] in items]
    write("link", link[0], links)
    entities = {row.split("\t")[1] for row in links}
    kg = lines("kg")
    write("kg", kg[0], [row for row in kg[1:] if row.split("\t")[0] in entities or row.split("\t")[2] in entities])
    return folder


# ---------------------------------------------------------------------------------------------
# One model: train through the plugin's entry point, reload the checkpoint, test again
# ---------------------------------------------------------------------------------------------


def _plain(result: Any) -> dict:
    return {k: float(v) for k, v in dict(result or {}).items()}


def _seed_every_evaluation() -> None:
    """Seed the random generators at the start of every ``Trainer.evaluate``, in this process.

    Sampled evaluation (``uni100`` for DIN, DIEN) draws its negatives from numpy's global
    generator while it tests; seeded alike, the run's test and the reloaded model's test score the
    same candidates, so their results can be compared exactly. Full ranking is unaffected.
    """
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    evaluate = Trainer.evaluate
    if getattr(evaluate, "_seeded", False):
        return

    def seeded_evaluate(self, *args, **kwargs):
        init_seed(self.config["seed"], self.config["reproducibility"])
        return evaluate(self, *args, **kwargs)

    seeded_evaluate._seeded = True
    Trainer.evaluate = seeded_evaluate


def train_and_reload(name: str, data_path: str, workdir: str) -> dict:
    """Train ``name`` one epoch with ``saved=True``, reload its checkpoint safely, test it again.

    Runs in the current process, with ``workdir`` as the working directory (RecBole's ./log,
    ./log_tensorboard and the checkpoints land there).

    Returns:
        ``{"result": the run's result dict, "reloaded_test": the reloaded model's test result,
        "checkpoint": path, "reasons": the config rows used, "train_s", "reload_s"}``.
    """
    import torch
    import yaml

    from recbole_mtl.cli import main as run_recbole_mtl_cli
    from recbole_mtl.quick_start import load_data_and_model
    from recbole_mtl.utils import get_trainer

    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    config, reasons = model_config(name, data_path, workdir)
    config_file = os.path.join(workdir, f"{name}.yaml")
    Path(config_file).write_text(yaml.safe_dump(config, sort_keys=False))
    start = time.perf_counter()
    # exactly `python run_recbole_mtl.py --model=X --dataset=D --config_files=...` (saved=True)
    result = run_recbole_mtl_cli([f"--model={name}", f"--dataset={SLICE_NAME}", f"--config_files={config_file}",
                                  "--debug"])
    train_s = time.perf_counter() - start
    checkpoint = result["checkpoint"]
    start = time.perf_counter()
    torch.load(checkpoint, map_location="cpu", weights_only=True)  # the safe load, stated plainly
    loaded_config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    trainer = get_trainer(loaded_config["MODEL_TYPE"], loaded_config["model"])(loaded_config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    return {"result": result, "reloaded_test": reloaded, "checkpoint": checkpoint, "reasons": reasons,
            "train_s": train_s, "reload_s": time.perf_counter() - start}


def _error_line(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message[:300]}{where}"


def worker(name: str, data_path: str, workdir: str, result_file: str) -> int:
    """Child process: run :func:`train_and_reload` and write one JSON record to ``result_file``."""
    import resource

    import recbole_mtl  # noqa: F401  (the compatibility layer, as the command line has it)

    record: dict[str, Any] = {"model": name}
    _seed_every_evaluation()
    try:
        run = train_and_reload(name, data_path, workdir)
        test, reloaded = _plain(run["result"]["test_result"]), _plain(run["reloaded_test"])
        record.update(status="pass" if test == reloaded else "fail", test_result=test, reloaded_test=reloaded,
                      train_s=round(run["train_s"], 2), reload_s=round(run["reload_s"], 2), reasons=run["reasons"])
        if test != reloaded:
            record["error"] = f"the reloaded checkpoint tests differently: {reloaded} != {test}"
    except BaseException as e:  # noqa: BLE001  (every failure is a result here)
        record.update(status="fail", error=_error_line(e), traceback=traceback.format_exc()[-4000:])
    record["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    Path(result_file).write_text(json.dumps(record))
    return 0


# ---------------------------------------------------------------------------------------------
# The sweep: one process per model, with a time limit and a memory cap
# ---------------------------------------------------------------------------------------------


def _tree_rss_mb(process) -> float:
    import psutil

    try:
        procs = [process] + process.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def run_isolated(name: str, data_path: str, workdir: str, timeout: float, max_mem_mb: float,
                 threads: Optional[int] = None) -> dict:
    """Run :func:`worker` for ``name`` in a fresh process; kill it past ``timeout`` or ``max_mem_mb``."""
    import psutil

    os.makedirs(workdir, exist_ok=True)
    result_file = os.path.join(workdir, "record.json")
    log_file = os.path.join(workdir, "worker.log")
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data_path", data_path,
               "--workdir", workdir, "--result_file", result_file]
    start = time.perf_counter()
    peak, killed = 0.0, None
    with open(log_file, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                 start_new_session=True)
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            peak = max(peak, _tree_rss_mb(watched))
            if peak > max_mem_mb:
                killed = "memory"
            elif time.perf_counter() - start > timeout:
                killed = "timeout"
            if killed:
                os.killpg(child.pid, 9)  # the child's own process group: it and what it started
                child.wait()
                break
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    if killed:
        limit = max_mem_mb if killed == "memory" else timeout
        what = f"killed: over the memory cap ({peak:.0f} MB > {max_mem_mb:.0f} MB)" if killed == "memory" else \
            f"killed: still running after {timeout:.0f} s"
        record = {"model": name, "status": killed, "limit": int(limit), "error": what}
    elif os.path.isfile(result_file):
        record = json.loads(Path(result_file).read_text())
    else:
        tail = Path(log_file).read_text(errors="ignore").strip().splitlines()[-1:] or ["no output"]
        record = {"model": name, "status": "fail", "error": f"the process died (exit {child.returncode}): {tail[0][:300]}"}
    record["seconds"] = round(seconds, 1)
    record["peak_mb"] = round(max(peak, record.get("peak_mb", 0.0)), 1)
    return record


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for package in ("recbole", "torch", "torchrec", "fbgemm-gpu-cpu", "numpy", "scipy", "pandas"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    try:
        version("ray")
        parts.append("ray installed")
    except PackageNotFoundError:
        parts.append("ray not installed")
    return ", ".join(parts)


def _settings(args: argparse.Namespace) -> dict:
    """What makes two runs of a model comparable; records made with other settings are run again."""
    return {"users": args.users, "timeout": args.timeout, "max_mem_mb": args.max_mem_mb, "versions": _versions()}


def load_records(path: Path, settings: dict) -> dict[str, dict]:
    """The records of earlier runs in ``path`` (one JSON object a line) made with ``settings``."""
    records = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed sweep
                continue
            if record.get("settings") == settings:
                records[record["model"]] = record
    return records


def render(records: list[dict], kinds: dict[str, str], settings: dict, jobs: int, records_name: str) -> str:
    """The Markdown report."""
    passed = sum(r["status"] == "pass" for r in records)
    commands: dict[str, list[str]] = {}
    for r in records:
        commands.setdefault(r["command"], []).append(r["date"])
    written_by = "; ".join(f"`{c}` ({min(d)} to {max(d)} UTC)" if min(d) != max(d) else f"`{c}` ({d[0]} UTC)"
                           for c, d in commands.items())
    total_s = sum(r.get("seconds", 0.0) for r in records)
    lines = [
        "# Every RecBole 1.2.1 model through recbole-mtl",
        "",
        f"Written by `benchmarks/recbole_models.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC from the runs of {written_by}; {total_s / 60:.1f} min of model runs ({os.cpu_count()} CPU cores, "
        f"{jobs} model(s) at a time). One JSON record per model: `{records_name}` beside this file.",
        "",
        f"Versions: {settings['versions']}.",
        "",
        f"Each model: 1 epoch on the first {settings['users']} users of ml-100k (`{SLICE_NAME}`: their "
        "interactions, users, items, item links and knowledge-graph triples) with `saved=True` through "
        "`run_recbole_mtl.py`'s entry point, then the best checkpoint reloaded with "
        "`torch.load(..., weights_only=True)` by `load_data_and_model` and tested again. "
        f"Each in its own process, limited to {settings['timeout']:.0f} s and {settings['max_mem_mb']:.0f} MB. "
        "Pass: trained, saved, reloaded, and the reloaded model's test result equals the run's (every "
        "test is seeded alike, so sampled evaluation scores the same candidates).",
        "",
        f"**{passed} of {len(records)} pass, {len(records) - passed} fail.**",
        "",
        "| kind | model | result | seconds | peak MB | error |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in records:
        error = r.get("error", "").replace("|", "\\|")
        lines.append(f"| {kinds[r['model']]} | {r['model']} | {r['status']} | {r.get('seconds', '')} | "
                     f"{r.get('peak_mb', '')} | {error} |")
    failures = [r for r in records if r["status"] != "pass"]
    if failures:
        lines += ["", "## Failures and their causes", ""]
        for r in failures:
            cause = explain(r) or "not explained yet: a compatibility problem to look into"
            lines.append(f"- **{r['model']}**: {cause}.")
    needs = sorted({reason for r in records for reason in r.get("reasons", [])})
    if needs:
        lines += ["", "## Config given beyond one epoch (the sweep's `NEEDS` table, from RecBole's model attributes)",
                  ""] + [f"- {reason}" for reason in needs]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=str, default=None,
                        help="comma-separated names to run (default: every model; with --resume, those not recorded)")
    parser.add_argument("--kinds", type=str, default=",".join(KINDS), help=f"model kinds (default: {','.join(KINDS)})")
    parser.add_argument("--users", type=int, default=100, help="users of ml-100k in the slice (default: 100)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one model may take (default: 300)")
    parser.add_argument("--max_mem_mb", type=float, default=4096.0, help="memory cap of one model (default: 4096)")
    parser.add_argument("--jobs", type=int, default=1, help="models run at a time (default: 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per model (default: torch's)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the records of earlier runs with the same settings (the .jsonl beside --out)")
    parser.add_argument("--rerun", type=str, default=None,
                        help="with --resume: comma-separated models to run again although recorded")
    parser.add_argument("--out", type=str, default=str(ROOT / "results" / "recbole_models.md"))
    parser.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data_path", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result_file", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.data_path, args.workdir, args.result_file)

    command = "python benchmarks/recbole_models.py" + "".join(
        " " + shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    models = discover_models(tuple(k.strip() for k in args.kinds.split(",") if k.strip()))
    kinds = {name: kind for kind, name in models}
    settings = _settings(args)
    records_file = Path(args.out).with_suffix(".jsonl")
    records = load_records(records_file, settings) if args.resume else {}
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(kinds))
        if unknown:
            parser.error(f"not RecBole models: {', '.join(unknown)}")
        to_run = [name for _, name in models if name in wanted]
    else:
        rerun = {m.strip() for m in (args.rerun or "").split(",") if m.strip()}
        unknown = sorted(rerun - set(kinds))
        if unknown:
            parser.error(f"--rerun: not RecBole models: {', '.join(unknown)}")
        to_run = [name for _, name in models if name not in records or name in rerun]
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from recbole_mtl.checkpoint import atomic_write_text

    start = time.perf_counter()
    records_file.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        records_file.write_text("")
    with tempfile.TemporaryDirectory(prefix="recbole-sweep-") as tmp:
        data_path = str(Path(tmp) / "data")
        write_slice(Path(data_path), args.users)
        print(f"{len(to_run)} models to run ({len(records)} recorded before), 1 epoch each on {SLICE_NAME} "
              f"({args.users} users); limits {args.timeout:.0f} s, {args.max_mem_mb:.0f} MB", flush=True)

        def one(name: str) -> dict:
            return run_isolated(name, data_path, str(Path(tmp) / "runs" / name), args.timeout, args.max_mem_mb,
                                args.threads)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(one, name) for name in to_run]
            for done, future in enumerate(as_completed(futures), start=1):
                record = future.result()
                record.pop("traceback", None)
                record.update(command=command, settings=settings,
                              date=f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}")
                records[record["model"]] = record
                with open(records_file, "a") as f:  # kept as each model finishes: --resume continues here
                    f.write(json.dumps(record) + "\n")
                note = f"  {record.get('error', '')[:120]}" if record["status"] != "pass" else ""
                print(f"[{done}/{len(to_run)}] {record['model']:<12} {record['status']:<7} "
                      f"{record['seconds']:>6.1f} s {record['peak_mb']:>7.0f} MB{note}", flush=True)
    ordered = [records[name] for _, name in models if name in records]
    atomic_write_text(records_file, "".join(json.dumps(r) + "\n" for r in ordered))
    atomic_write_text(args.out, render(ordered, kinds, settings, args.jobs, records_file.name))
    passed = sum(r["status"] == "pass" for r in ordered)
    print(f"{passed}/{len(ordered)} pass; this run {(time.perf_counter() - start) / 60:.1f} min; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
