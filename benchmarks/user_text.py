"""MTLRec with and without PLM user-text vectors on ml-100k, same split and seeds, to early stopping.

    OMP_NUM_THREADS=1 python benchmarks/user_text.py [--seeds 2020 2021 2022] [--epochs 100] [--jobs 2]

Runs `embed --users` first if needed (offline all-MiniLM-L6-v2, ml-100k profile text "age: 24.
gender: M. occupation: technician"). Each (variant, seed) run trains MTLRec on RecBole's
leave-one-out split until validation NDCG@10 stops improving (`--stopping_step`) or `--epochs`,
then tests the best checkpoint. The two variants of a seed differ only in `user_text_features`.
Reports on the test set: NDCG@10, Hit@10, MRR@10 over all users and over the quarter of users
with the fewest training interactions, interest AUC, category micro-F1, the best epoch and the
time; per seed, then mean ± std. Writes the table, with the command and date, to
results/user_text.md (whole; a run that fails writes nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METRICS = [("ndcg", "NDCG@10"), ("hit", "Hit@10"), ("mrr", "MRR@10"), ("few_ndcg", "NDCG@10, fewest-history quarter"),
           ("auc", "interest AUC"), ("micro_f1", "category micro-F1")]


def shared_settings(args) -> dict:
    settings = {"epochs": args.epochs, "MAX_ITEM_LIST_LENGTH": args.max_len, "show_progress": False,
                "state": "WARNING", "stopping_step": args.stopping_step}
    if args.data_path:
        settings["data_path"] = args.data_path
    if args.user_text_fields:
        settings["user_text_fields"] = args.user_text_fields
    return settings


def worker(args) -> None:
    """One run: ``--variant user|none --seed S``; prints its result as one JSON line."""
    import torch

    import recbole_mtl  # noqa: F401
    from recbole_mtl.config import Config
    from recbole_mtl.pipeline import build

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        settings = {**json.loads(args.settings), "seed": args.seed, "user_text_features": args.variant == "user",
                    "checkpoint_dir": folder}
        config = Config(model="MTLRec", dataset=args.dataset, cmd_args=[], config_dict=settings)
        built = build(config)
        curve = []
        start = time.perf_counter()
        best, _ = built.trainer.fit(built.train_data, built.valid_data, saved=True, show_progress=False,
                                    callback_fn=lambda epoch, score: curve.append(float(score)))
        result = built.trainer.evaluate(built.test_data, load_best_model=True)
        elapsed = time.perf_counter() - start
        ranks, users = per_user_ranks(built.model, built.test_data)
    train = built.train_data._dataset
    history = np.bincount(train.inter_feat[train.uid_field].numpy(), minlength=train.user_num)[users] + 1
    few = history <= np.quantile(history, 0.25)
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0)
    assert math.isclose(ndcg.mean(), result["ndcg@10"], abs_tol=1e-3), (ndcg.mean(), result["ndcg@10"])
    out = {"variant": args.variant, "seed": args.seed, "ndcg": result["ndcg@10"], "hit": result["hit@10"],
           "mrr": result["mrr@10"], "few_ndcg": float(ndcg[few].mean()), "few_users": int(few.sum()),
           "few_max_history": int(history[few].max()), "users": len(ranks), "auc": result.get("interest_auc"),
           "micro_f1": result.get("category_micro_f1"), "best_epoch": 1 + int(np.argmax(curve)) if curve else 0,
           "epochs_run": len(built.trainer.train_loss_dict), "curve": [round(v, 4) for v in curve],
           "best_valid": float(best), "seconds": elapsed}
    print("RESULT " + json.dumps(out), flush=True)


def per_user_ranks(model, test_data) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each test user's target among all items, and the user ids."""
    import torch

    model.eval()
    ranks, users = [], []
    with torch.no_grad():
        for interaction, history_index, _, positive_i in test_data:
            scores = model.full_sort_predict(interaction)
            scores[:, 0] = -np.inf
            if history_index is not None:  # eval_mask_history: True
                scores[history_index] = -np.inf
            target = scores.gather(1, positive_i.view(-1, 1))
            ranks.append(((scores > target).sum(1) + 1).numpy())
            users.append(interaction[model.USER_ID].numpy())
    return np.concatenate(ranks), np.concatenate(users)


def embed(args) -> dict:
    import recbole_mtl  # noqa: F401
    from recbole_mtl.config import Config
    from recbole_mtl.data.feature_files import feature_folder
    from recbole_mtl.text.embed import read_texts
    from recbole_mtl.text.users import embed_users

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = Config(model="MTLRec", dataset=args.dataset, cmd_args=[], config_dict=shared_settings(args))
    made = embed_users(config, feature_folder(config), text_fields=config["user_text_fields"], show_progress=False)
    ids, texts, fields = read_texts(Path(config["data_path"]) / f"{args.dataset}.user", config["user_text_fields"],
                                    config["USER_ID_FIELD"], noun="user")
    return {"fields": fields, "example": (ids[0], texts[0]), "users": made["users"], "dim": made["dim"]}


def run_all(args) -> list[dict]:
    """Every (seed, variant) run, ``--jobs`` at a time, each in its own process."""
    settings = json.dumps(shared_settings(args))
    queue = [(seed, variant) for seed in args.seeds for variant in ("none", "user")]
    running, results = [], []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    while queue or running:
        while queue and len(running) < args.jobs:
            seed, variant = queue.pop(0)
            cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--seed", str(seed),
                   "--dataset", args.dataset, "--settings", settings]
            running.append((seed, variant, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                            text=True, env=env, cwd=REPO)))
        time.sleep(2)
        for item in list(running):
            seed, variant, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            stdout, stderr = proc.communicate()
            lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                for _, _, other in running:
                    other.kill()
                raise SystemExit(f"run seed={seed} variant={variant} failed ({proc.returncode}):\n{stderr[-3000:]}")
            results.append(json.loads(lines[-1][7:]))
            print(f"done: {results[-1]}", flush=True)
    return results


def table(results: list[dict], args, made: dict) -> str:
    names = {"none": "MTLRec (ids + user attribute tables)", "user": "+ PLM user text (all-MiniLM-L6-v2)"}
    header = "| variant | seed | " + " | ".join(label for _, label in METRICS) + " | best epoch | train+test s |"
    rows = [header, "|" + "---|" * (len(METRICS) + 4)]
    header_curve = ["| variant | seed | validation NDCG@10 after each epoch |", "|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    for r in sorted(results, key=lambda r: (r["variant"] != "none", r["seed"])):
        rows.append(f"| {names[r['variant']]} | {r['seed']} | " + " | ".join(fmt(r[k]) for k, _ in METRICS)
                    + f" | {r['best_epoch']} of {r['epochs_run']} | {r['seconds']:.0f} |")
        header_curve.append(f"| {names[r['variant']]} | {r['seed']} | "
                            + " ".join(f"{v:.4f}" for v in r["curve"]) + " |")
    summary = ["| variant | runs | " + " | ".join(label for _, label in METRICS) + " |",
               "|" + "---|" * (len(METRICS) + 2)]
    for variant in ("none", "user"):
        mine = [r for r in results if r["variant"] == variant]
        cells = []
        for key, _ in METRICS:
            values = [r[key] for r in mine if r[key] is not None]
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "-")
        summary.append(f"| {names[variant]} | {len(mine)} | " + " | ".join(cells) + " |")
    deltas = ["| metric | user text - none, per seed | mean |", "|---|---|---|"]
    by = {(r["variant"], r["seed"]): r for r in results}
    for key, label in METRICS:
        diffs = [by[("user", s)][key] - by[("none", s)][key] for s in args.seeds
                 if by[("user", s)][key] is not None and by[("none", s)][key] is not None]
        if diffs:
            deltas.append(f"| {label} | " + ", ".join(f"{d:+.4f}" for d in diffs) + f" | {np.mean(diffs):+.4f} |")
    few = results[0]
    command = "OMP_NUM_THREADS=1 python benchmarks/user_text.py " + " ".join(sys.argv[1:])
    return "\n".join([
        f"# MTLRec with and without PLM user-text vectors ({args.dataset}, test set)", "",
        f"Command: `{command.rstrip()}`  ",
        f"Date: {date.today()}. Same leave-one-out split and seeds for both variants; each run trains to early "
        f"stopping on validation NDCG@10 (stopping_step {args.stopping_step}, at most {args.epochs} epochs), "
        f"MAX_ITEM_LIST_LENGTH={args.max_len}, MTLRec's YAML defaults otherwise, then tests its best checkpoint. "
        "User text: "
        f"{made['users']} users x {made['dim']} dims from the profile fields {made['fields']} (e.g. user "
        f"{made['example'][0]}: \"{made['example'][1]}\"), user_text_adapter linear, user_text_fusion add (fused "
        "with the user-id embedding that the shared bottom reads). Both variants also read every .user column "
        "(ml-100k: age, gender, occupation, zip code) as embedding tables, so profile text re-encodes "
        f"attributes the model already has. Fewest-history quarter: the {few['few_users']} test users with at most "
        f"{few['few_max_history']} training interactions.", "",
        "## Mean ± std over seeds", "", *summary, "",
        "## Paired differences (same seed)", "", *deltas, "",
        "## Every run", "", *rows, "", *header_curve, "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--stopping_step", type=int, default=10)
    parser.add_argument("--max_len", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="folder holding the dataset (default: RecBole's)")
    parser.add_argument("--user_text_fields", nargs="+", default=None)
    parser.add_argument("--out", default=str(REPO / "results" / "user_text.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=["none", "user"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    os.chdir(REPO)  # RecBole's bundled ml-100k keeps its vectors under ./dataset/ml-100k
    made = embed(args)
    results = run_all(args)
    text = table(results, args, made)
    print(text)
    from recbole_mtl.checkpoint import atomic_write_text

    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
