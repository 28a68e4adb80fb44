"""Scale-out figures: data loading + table building, peak memory per rank, training and inference throughput.

    python benchmarks/sharding.py [--baseline_repo PATH] [--big_items 10000000] \
        [--scale 10000000,25000000,50000000] [--train_scale 10000000,50000000:2] [--only NAME,...] \
        [--mem_limit_gib 21]

Synthetic data from ``dataset/make_synthetic.py`` (written once under ``--data_dir``):

* ``big``: an item table of ``--big_items`` rows (every item has a ``.item`` row) and
  ``--big_interactions`` interactions of ``--big_users`` users: loading and building the tables
  dominate. Measured with this checkout (``after``) and, given ``--baseline_repo`` (another
  checkout of the project, e.g. the commit before a change), with that one (``before``), in the
  same run, 1 and 2 processes each; the 1-process model then saves a checkpoint and
  ``score`` / ``recommend`` (``recbole_mtl.inference``) answer from it. ``saved``: this checkout
  again, loading the dataset saved once by ``prepare`` (``recbole_mtl.data.saved``; the ``prepare``
  run itself is measured too).
* ``scale``: for each size S of ``--scale``, S items and S interactions (S / 50 users), saved by
  ``prepare`` and loaded by 1 and 2 processes, to find the largest size one process holds and what
  2 processes need per rank (sizes not in ``--train_scale`` only build: loading and tables, no epoch).

MTLRec (sequence + interest tasks, sampled softmax over 1000 items, embedding_size 64, one
Transformer layer, MAX_ITEM_LIST_LENGTH 20, 128 windows a batch split over the ranks, SGD on the
tables) trains one epoch in fresh processes (torchrun, gloo, the item table row-wise sharded, one
thread per process). ``build s`` is everything before the first step: checking the atomic files,
RecBole's loading and split, the training windows, and building the tables; ``peak RSS`` is each
rank's ``ru_maxrss``. A run whose processes together pass ``--mem_limit_gib`` of resident memory
is stopped and reported as not fitting (so that a run too big for the machine cannot take it down).
Results go to ``results/sharding.md`` / ``.jsonl`` / ``.png``, with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def model_config(data_path: Path, dataset: str, sharded: bool, checkpoint_dir: Path,
                 saved_to: Path | None = None) -> dict:
    """The measured MTLRec config; ``saved_to``: the saved dataset it loads (``prepare`` writes it)."""
    config = {
        "data_path": str(data_path), "dataset": dataset, "seed": 2020, "state": "WARNING", "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id"], "user": ["user_id"]},
        "tasks": ["sequence", "interest"], "sequence_loss": "sampled", "num_negatives": 1000,
        "MAX_ITEM_LIST_LENGTH": 20, "embedding_size": 64, "n_layers": 1, "n_heads": 2, "inner_size": 128,
        "train_batch_size": 1024, "window_batch_size": 128, "eval_batch_size": 256,
        "embedding_optimizer": "sgd", "embedding_learning_rate": 0.5,
        "checkpoint_dir": str(checkpoint_dir),
    }
    if sharded:
        config["sharding_types"] = {"item_id": "row_wise"}
    if saved_to is not None:
        config["dataset_save_path"] = str(saved_to)
    return config


def _rss() -> tuple[float, float]:
    import psutil

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, psutil.Process().memory_info().rss / 2**30


def worker(spec: dict) -> None:
    """One measured run (this process is one rank, or the only process), importing ``spec['repo']``."""
    sys.path.insert(0, spec["repo"])
    import torch

    import recbole_mtl  # noqa: F401
    from recbole_mtl import distributed
    from recbole_mtl.config import Config
    from recbole_mtl.pipeline import build_data_and_model
    from recbole_mtl.utils import get_trainer

    torch.set_num_threads(1)
    config = Config(model="MTLRec", dataset=spec["config"]["dataset"], config_dict=spec["config"], cmd_args=[])
    if spec.get("prepare"):
        from recbole_mtl.pipeline import obtain_dataset

        start = time.perf_counter()
        obtain_dataset(config, save=True)
        row = {**spec["label"], "world_size": 1, "prepare_s": time.perf_counter() - start,
               "peak_rss_gib": [_rss()[0]]}
        with open(spec["out"], "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return
    distributed.init_from_env(config)
    start = time.perf_counter()
    _, train_data, _, _, model = build_data_and_model(config)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    train_data = trainer.training_loader(train_data) if hasattr(trainer, "training_loader") else train_data
    build_s = time.perf_counter() - start
    build_rss = _rss()
    distributed.barrier()
    epoch_s = None
    if spec.get("train", True):
        start = time.perf_counter()
        trainer._train_epoch(train_data, 0, show_progress=distributed.rank() == 0)
        distributed.barrier()
        epoch_s = time.perf_counter() - start
    targets = len(train_data._dataset)  # training targets: one RecBole training row each
    per_rank = [(*build_rss, *_rss())]
    if distributed.is_distributed():
        per_rank = [None] * distributed.world_size()
        torch.distributed.all_gather_object(per_rank, (*build_rss, *_rss()))
    row = {**spec["label"], "world_size": distributed.world_size(), "targets": targets,
           "item_rows": int(model.n_items), "build_s": build_s, "epoch_s": epoch_s,
           "interactions_per_s": targets / epoch_s if epoch_s else None, "peak_rss_gib": [r[2] for r in per_rank],
           "build_peak_rss_gib": [r[0] for r in per_rank], "rss_after_gib": [r[3] for r in per_rank]}
    if spec.get("inference") and not distributed.is_distributed():
        row["inference"] = inference(trainer, spec)
    if distributed.rank() == 0:
        with open(spec["out"], "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def inference(trainer, spec: dict) -> dict:
    """Save the model, then time ``score`` (every interaction of the dataset as a pair) and
    ``recommend`` (``--recommend_users`` users, top 10 over the whole catalogue) from it."""
    from recbole_mtl import inference as serving

    trainer._save_checkpoint(0, verbose=False)
    path = trainer.saved_model_file
    data = Path(spec["config"]["data_path"]) / spec["config"]["dataset"]
    out = Path(spec["config"]["checkpoint_dir"])
    start = time.perf_counter()
    served = serving.load("score", path)
    load_s = time.perf_counter() - start
    pairs = serving.score(served, out / "score.tsv", str(data / f"{spec['config']['dataset']}.inter"),
                          progress=False)
    users_file = out / "users.txt"
    users_file.write_text("".join(f"{u}\n" for u in range(1, spec["inference"] + 1)))
    served = serving.load("recommend", path)
    top = serving.recommend(served, out / "recommend.tsv", str(users_file), topk=10, progress=False)
    for name in ("score.tsv", "recommend.tsv"):
        (out / name).unlink(missing_ok=True)
    Path(path).unlink(missing_ok=True)
    return {"load_s": load_s, "pairs": pairs.rows, "pairs_s": pairs.seconds, "users": top.rows,
            "users_s": top.seconds}


def ensure_data(data_dir: Path, name: str, items: int, users: int, interactions: int) -> None:
    folder = data_dir / name
    if (folder / f"{name}.inter").is_file() and (folder / f"{name}.item").is_file():
        return
    subprocess.run([sys.executable, str(REPO / "dataset" / "make_synthetic.py"), "--users", str(users),
                    "--items", str(items), "--interactions", str(interactions), "--seed", "7",
                    "--out", str(folder)], check=True)


def _watch(proc: subprocess.Popen, limit_gib: float, peak: list) -> None:
    """Stop ``proc`` (and its children) when together they pass ``limit_gib`` resident."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        total = 0
        try:
            for p in [parent] + parent.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            return
        peak[0] = max(peak[0], total / 2**30)
        if total / 2**30 > limit_gib:
            peak[1] = True
            for p in parent.children(recursive=True) + [parent]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            return
        time.sleep(0.5)


def run(spec: dict, nproc: int, limit_gib: float) -> bool:
    """One configuration in fresh processes; False when it was stopped for memory."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", json.dumps(spec)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd[1:]]
    print(f"== {spec['label']['name']}: {nproc} process(es), {spec['repo']}", flush=True)
    env = {**os.environ, "PYTHONPATH": spec["repo"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    peak = [0.0, False]
    watcher = threading.Thread(target=_watch, args=(proc, limit_gib, peak), daemon=True)
    watcher.start()
    code = proc.wait()
    watcher.join()
    if peak[1]:
        with open(spec["out"], "a") as f:
            f.write(json.dumps({**spec["label"], "world_size": nproc, "stopped_at_gib": limit_gib}) + "\n")
        print(f"   stopped: together past {limit_gib} GiB resident", flush=True)
        return False
    if code != 0:
        raise SystemExit(f"{spec['label']['name']} failed with exit status {code}")
    return True


def _train_plan(text: str | None, sizes: list[int]) -> dict[int, tuple[int, ...]]:
    """``--train_scale``: ``S`` (train with 1 and 2 processes) or ``S:W`` (with W processes only)."""
    if text is None:
        return {s: (1, 2) for s in sizes}
    plan: dict[int, tuple[int, ...]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        size, _, world = item.partition(":")
        plan[int(size)] = plan.get(int(size), ()) + ((int(world),) if world else (1, 2))
    return plan


def _known(name: str) -> bool:
    """A run name this script measures (rows of other names, from older versions of it, are dropped)."""
    return name in ("before", "after", "saved", "prepare") or \
        any(name.startswith(p) and name[len(p):].isdigit() for p in ("scale-", "prepare-"))


def _gib(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def report(rows: list[dict], command: str, args: argparse.Namespace, out_md: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    def find(name, world):
        return next((r for r in rows if r["name"] == name and r["world_size"] == world), None)

    lines = [
        "# Scale-out: loading, memory per rank, throughput",
        "",
        f"Command: `{command}` ({date.today()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, torch {torch.__version__}, "
        "CPU only: gloo + FBGEMM CPU kernels, one thread per process).",
        "",
        "MTLRec with sequence + interest tasks, sampled softmax over 1000 items, embedding_size 64, one "
        "Transformer layer, MAX_ITEM_LIST_LENGTH 20, 128 windows a batch (split over the ranks), SGD on the "
        "tables, one epoch. *build s*: checking the atomic files, RecBole's loading and split, the training "
        "windows and the tables, before the first step. *peak RSS*: each rank's `ru_maxrss` (*at build*: "
        "when the first step starts). Training throughput: training targets of the epoch / its wall time "
        "(all ranks together).",
        "",
    ]
    big = [(n, w) for n in ("before", "after", "saved") for w in (1, 2) if find(n, w)]
    if big:
        lines += [f"## {args.big_items:,}-row item table, {args.big_interactions:,} interactions: before and after",
                  "",
                  f"*before*: `{args.baseline_repo or '-'}` ({args.baseline_label or 'the baseline checkout'}); "
                  "*after*: this checkout, from the atomic files; *saved*: this checkout, loading the dataset "
                  "saved by `run_recbole_mtl.py prepare` (no file check, no parsing: the arrays are mapped).",
                  "",
                  "| code | processes | build s | peak RSS at build per rank (GiB) | peak RSS per rank (GiB) "
                  "| epoch s | interactions/s |",
                  "|---|---|---|---|---|---|---|"]
        for name, world in big:
            r = find(name, world)
            if "stopped_at_gib" in r:
                lines.append(f"| {name} | {world} | stopped: past {r['stopped_at_gib']} GiB together | | | | |")
                continue
            lines.append(f"| {name} | {world} | {r['build_s']:.1f} | {_gib(r['build_peak_rss_gib'])} | "
                         f"{_gib(r['peak_rss_gib'])} | {r['epoch_s']:.1f} | {r['interactions_per_s']:,.0f} |")
        prep = find("prepare", 1)
        if prep and "prepare_s" in prep:
            lines += ["", f"`prepare` (once, one process: file check, RecBole's loading and split, writing the "
                          f"arrays): {prep['prepare_s']:.1f} s, peak RSS {prep['peak_rss_gib'][0]:.2f} GiB."]
        for world in (1, 2):
            b = find("before", world)
            for name in ("after", "saved"):
                a = find(name, world)
                if a and b and "build_s" in a and "build_s" in b:
                    lines += ["", f"{world} process(es), {name}: build time {name} / before = "
                                  f"{a['build_s'] / b['build_s']:.2f}x; peak RSS per rank {name} / before = "
                                  f"{max(a['peak_rss_gib']) / max(b['peak_rss_gib']):.2f}x."]
        lines.append("")
    scale = sorted({r["size"] for r in rows if r["name"].startswith("scale")})
    if scale:
        lines += ["## Scale: S items and S training interactions (S / 50 users)", "",
                  "Each size is first saved by `prepare` (one process, from the atomic files); the runs load it.", "",
                  "| S | processes | build s | peak RSS per rank (GiB) | epoch s | interactions/s |",
                  "|---|---|---|---|---|---|"]
        fits = []
        for size in scale:
            prep = find(f"prepare-{size}", 1)
            if prep and "prepare_s" in prep:
                lines.append(f"| {size:,} | prepare | {prep['prepare_s']:.1f} | {prep['peak_rss_gib'][0]:.2f} | | |")
            elif prep:
                lines.append(f"| {size:,} | prepare | stopped: past {prep['stopped_at_gib']} GiB | | | |")
            for world in (1, 2):
                r = find(f"scale-{size}", world)
                if r is None:
                    continue
                if "stopped_at_gib" in r:
                    lines.append(f"| {size:,} | {world} | stopped: past {r['stopped_at_gib']} GiB together | | | |")
                    continue
                if world == 1:
                    fits.append(size)
                trained = (f"{r['epoch_s']:.1f} | {r['interactions_per_s']:,.0f}" if r["epoch_s"]
                           else "not trained (built only) | ")
                lines.append(f"| {size:,} | {world} | {r['build_s']:.1f} | {_gib(r['peak_rss_gib'])} | {trained} |")
        both = [size for size in fits if "peak_rss_gib" in (find(f"scale-{size}", 2) or {})]
        if fits:
            lines += ["", f"Largest size measured in one process: {max(fits):,}."]
        for size in fits:
            two = find(f"scale-{size}", 2)
            if two and "stopped_at_gib" in two:
                lines.append(f"At {size:,}, 2 processes did not fit: together past {two['stopped_at_gib']} GiB.")
        if both:
            one, two = find(f"scale-{max(both)}", 1), find(f"scale-{max(both)}", 2)
            note = "" if one["epoch_s"] else " (the 1-process run built its data and tables but trained no epoch, " \
                                              "so its peak is, if anything, low)"
            lines.append(f"Largest size measured with both: {max(both):,}; there the peak RSS per rank with 2 "
                         f"processes is {max(two['peak_rss_gib']) / max(one['peak_rss_gib']):.2f}x the 1-process "
                         f"peak{note}.")
        lines.append("")
    inf = find("after", 1)
    if inf and "inference" in inf:
        i = inf["inference"]
        lines += ["## Inference from the 1-process checkpoint of the big case", "",
                  f"- `score`: {i['pairs']:,} (user, item) pairs in {i['pairs_s']:.2f} s = "
                  f"{i['pairs'] / i['pairs_s']:,.0f} interactions/s;",
                  f"- `recommend`: top 10 of {inf['item_rows']:,} items for {i['users']:,} users in "
                  f"{i['users_s']:.2f} s = {i['users'] / i['users_s']:,.1f} users/s;",
                  f"- rebuilding data and model from the checkpoint first: {i['load_s']:.1f} s.", ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")

    measured = [r for r in rows if "build_s" in r]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [f"{r['name'].split('-')[0]} {r['size'] // 10**6}M {r['world_size']}p" if r.get("size")
             else f"{r['name']} {r['world_size']}p" for r in measured]
    axes[0].bar(names, [r["build_s"] for r in measured], color="tab:blue")
    axes[0].set_ylabel("build s (loading + tables)")
    axes[1].bar(names, [max(r["peak_rss_gib"]) for r in measured], color="tab:orange")
    axes[1].set_ylabel("peak RSS of the largest rank (GiB)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8, labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle("MTLRec on synthetic data, 2-core CPU")
    fig.tight_layout()
    fig.savefig(out_md.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big_items", type=int, default=10_000_000, help="rows of the big item table")
    parser.add_argument("--big_users", type=int, default=5_000)
    parser.add_argument("--big_interactions", type=int, default=50_000)
    parser.add_argument("--baseline_repo", default=None, help="another checkout measured as 'before'")
    parser.add_argument("--baseline_label", default=None, help="what the baseline checkout is (for the report)")
    parser.add_argument("--scale", default="", help="comma-separated sizes S (S items, S interactions)")
    parser.add_argument("--train_scale", default=None,
                        help="the sizes of --scale that also train an epoch (default: all), as S (1 and 2 processes) "
                        "or S:W (W processes only); the others only build")
    parser.add_argument("--recommend_users", type=int, default=100, help="users recommend answers (big case)")
    parser.add_argument("--mem_limit_gib", type=float, default=21.0,
                        help="stop a configuration whose processes together pass this resident memory")
    parser.add_argument("--data_dir", type=Path, default=REPO / "dataset" / "bench")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "sharding.md")
    parser.add_argument("--only", default=None,
                        help="comma-separated run names (default: all): before, after, saved, scale")
    parser.add_argument("--report_only", action="store_true", help="rewrite the report from the .jsonl")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: one measured run
    args = parser.parse_args()
    if args.measure:
        return worker(json.loads(args.measure))
    jsonl = args.out.with_suffix(".jsonl")
    # the measuring command (a --report_only rewrite names the run it reports)
    command = "python benchmarks/sharding.py " + shlex.join(a for a in sys.argv[1:] if a != "--report_only")
    if not args.report_only:
        big = f"synth-{args.big_items}"
        ensure_data(args.data_dir, big, args.big_items, args.big_users, args.big_interactions)
        sizes = [int(s) for s in args.scale.split(",") if s.strip()]
        for size in sizes:
            ensure_data(args.data_dir, f"synth-scale-{size}", size, max(size // 50, 1), size)
        wanted = set(args.only.split(",")) if args.only else {"before", "after", "saved", "scale"}
        # name, repo, dataset, processes, extra
        plan = []
        if args.baseline_repo and "before" in wanted:
            plan += [("before", str(Path(args.baseline_repo).resolve()), big, w, {}) for w in (1, 2)]
        if "after" in wanted:
            plan += [("after", str(REPO), big, 1, {"inference": args.recommend_users}), ("after", str(REPO), big, 2, {})]
        if "saved" in wanted:
            plan += [("prepare", str(REPO), big, 1, {"prepare": True}),
                     ("saved", str(REPO), big, 1, {"saved": True}), ("saved", str(REPO), big, 2, {"saved": True})]
        if "scale" in wanted:
            trained = _train_plan(args.train_scale, sizes)
            for size in sizes:
                name = f"synth-scale-{size}"
                plan.append((f"prepare-{size}", str(REPO), name, 1, {"size": size, "prepare": True}))
                plan += [(f"scale-{size}", str(REPO), name, w, {"size": size, "saved": True,
                                                                "train": w in trained.get(size, ())})
                         for w in (1, 2)]
        redo = {(name, world) for name, _, _, world, _ in plan}
        kept = [line for line in (jsonl.read_text().splitlines() if jsonl.exists() else [])
                if line.strip() and _known(json.loads(line)["name"])
                and (json.loads(line)["name"], json.loads(line)["world_size"]) not in redo]
        staged = jsonl.with_suffix(".jsonl.partial")
        staged.write_text("".join(line + "\n" for line in kept))
        skipped = set()
        for name, repo, dataset, world, extra in plan:
            if dataset in skipped and not extra.get("prepare"):
                continue
            checkpoint_dir = REPO / "saved" / "bench" / f"{name}-{world}"
            saved_to = args.data_dir / f"{dataset}.arrays" if extra.get("prepare") or extra.get("saved") else None
            if extra.get("prepare") and saved_to.exists():
                shutil.rmtree(saved_to)  # measured from the atomic files, every time
            spec = {"config": model_config(args.data_dir, dataset, world > 1, checkpoint_dir, saved_to),
                    "label": {"name": name, "size": extra.get("size")}, "repo": repo, "out": str(staged),
                    "inference": extra.get("inference"), "train": extra.get("train", True),
                    "prepare": bool(extra.get("prepare"))}
            if not run(spec, world, args.mem_limit_gib) and extra.get("prepare"):
                print(f"   {dataset} could not be prepared: its runs are skipped", flush=True)
                skipped.add(dataset)
        os.replace(staged, jsonl)  # the results file is replaced whole, once every run is done
    lines = [line for line in jsonl.read_text().splitlines() if line.strip()]
    known = [line for line in lines if _known(json.loads(line)["name"])]
    if len(known) < len(lines):  # rows of run names this script no longer measures
        staged = jsonl.with_suffix(".jsonl.partial")
        staged.write_text("".join(line + "\n" for line in known))
        os.replace(staged, jsonl)
    report([json.loads(line) for line in known], command, args, args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
