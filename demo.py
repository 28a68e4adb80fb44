"""The main job: MTLRec on the bundled ml-100k, its per-task test metrics beside RecBole baselines.

    python demo.py [--epochs 3] [--max_len 20] [--dropout 0.0] [--baseline_epochs 20] [--stopping_step 10]

Same dataset, split (leave-one-out by time: each user's last interaction is the test case), seed
and sequence length for every model:
  * sequence: MTLRec's next-item head vs SASRec, full ranking over all items;
  * interest: MTLRec's interest head vs DeepFM (rating >= 4), on the same last interactions;
  * category: MTLRec's category head on held-out items (no RecBole baseline classifies items).
Prints one table and writes it, with the command and date, to runs/demo/demo.md (an ignored
folder, so a checkout stays clean), or to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import recbole_mtl  # noqa: F401
from recbole_mtl import pipeline
from recbole_mtl.checkpoint import atomic_write_text
from recbole_mtl.config import Config

REPO = Path(__file__).resolve().parent
RUN_FOLDER = REPO / "runs" / "demo"
LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user"}


def run(model: str, config: dict) -> tuple[dict, float]:
    print(f"\n=== {model} ===", flush=True)
    start = time.perf_counter()
    result = pipeline.run(Config(model=model, dataset="ml-100k", config_dict=config, cmd_args=[]))
    return result["test_result"], time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of MTLRec and SASRec")
    parser.add_argument("--max_len", type=int, default=20, help="MAX_ITEM_LIST_LENGTH of both")
    parser.add_argument("--baseline_epochs", type=int, default=20, help="epochs of DeepFM (about 1 s each)")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="Transformer dropout of both (0 keeps the demo fast on 2 CPU cores)")
    parser.add_argument("--stopping_step", type=int, default=10,
                        help="early stopping patience (evaluations without improvement), all models")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=str(RUN_FOLDER / "demo.md"),
                        help="where the table goes (default: runs/demo/demo.md, ignored by git)")
    args = parser.parse_args(argv)
    common = {"seed": args.seed, "show_progress": True, "state": "INFO", "checkpoint_dir": str(RUN_FOLDER / "saved"),
              "stopping_step": args.stopping_step}
    sequence = {**common, "epochs": args.epochs, "MAX_ITEM_LIST_LENGTH": args.max_len,
                "hidden_dropout_prob": args.dropout, "attn_dropout_prob": args.dropout,
                "eval_args": {**LEAVE_ONE_OUT, "mode": "full"}}
    mtl, t_mtl = run("MTLRec", sequence)
    sas, t_sas = run("SASRec", {**sequence, "train_neg_sample_args": None})
    dfm, t_dfm = run("DeepFM", {**common, "epochs": args.baseline_epochs, "threshold": {"rating": 4},
                                "eval_args": {**LEAVE_ONE_OUT, "mode": "labeled"},
                                "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC"})
    rows = [("sequence", "NDCG@10", "ndcg@10", "SASRec", sas.get("ndcg@10")),
            ("sequence", "Hit@10", "hit@10", "SASRec", sas.get("hit@10")),
            ("sequence", "MRR@10", "mrr@10", "SASRec", sas.get("mrr@10")),
            ("interest", "AUC", "interest_auc", "DeepFM", dfm.get("auc")),
            ("interest", "LogLoss", "interest_logloss", "DeepFM", dfm.get("logloss")),
            ("interest", "accuracy", "interest_accuracy", "", None),
            ("interest", "F1", "interest_f1", "", None),
            ("category", "micro-F1", "category_micro_f1", "", None),
            ("category", "macro-F1", "category_macro_f1", "", None),
            ("category", "exact-match accuracy", "category_accuracy", "", None)]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table = ["| task | metric | MTLRec | baseline | baseline value |", "|---|---|---|---|---|"]
    table += [f"| {t} | {name} | {fmt(mtl.get(key))} | {base or '-'} | {fmt(value)} |"
              for t, name, key, base, value in rows]
    command = "python demo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# MTLRec vs RecBole baselines on ml-100k (test set)", "",
        f"Command: `{command.strip()}` (`make demo` runs `python demo.py` with its defaults)  ",
        f"Date: {date.today()}. Seed {args.seed}; leave-one-out by time (each user's last interaction is "
        f"the test case); MTLRec and SASRec: up to {args.epochs} epochs, MAX_ITEM_LIST_LENGTH={args.max_len}, "
        f"Transformer dropout {args.dropout}, other settings their YAML defaults; RecBole early stopping "
        f"with stopping_step={args.stopping_step}; "
        f"DeepFM: {args.baseline_epochs} epochs, rating >= 4 labels on the same last interactions. "
        "Best validation checkpoint of each run.", "",
        *table, "",
        f"Wall time: MTLRec {t_mtl:.0f}s, SASRec {t_sas:.0f}s, DeepFM {t_dfm:.0f}s.", "",
    ])
    print("\n" + text)
    atomic_write_text(args.out, text)
    return {"MTLRec": mtl, "SASRec": sas, "DeepFM": dfm}


if __name__ == "__main__":
    main()
