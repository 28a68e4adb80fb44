"""MTLRec with and without PLM item-text features on ml-100k, same seed, one run.

    python benchmarks/text_features.py [--epochs 8] [--max_len 20] [--cold 5]

Runs `embed` first if needed (offline all-MiniLM-L6-v2). Reports, on the test set: category
micro-F1 (held-out items), NDCG@10 and Hit@10 over all test users and over the users whose target
item had at most `--cold` interactions in training (rare items, where text should help).
Writes the table, with the command and date, to results/text_features.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import recbole_mtl  # noqa: F401
from recbole_mtl.checkpoint import atomic_write_text
from recbole_mtl.config import Config
from recbole_mtl.data.feature_files import feature_folder
from recbole_mtl.pipeline import build
from recbole_mtl.text.embed import embed_items

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def per_user_ranks(model, test_data) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each test user's target among all items, and the target ids."""
    model.eval()
    ranks, targets = [], []
    for interaction, history_index, _, positive_i in test_data:
        scores = model.full_sort_predict(interaction)
        scores[:, 0] = -np.inf
        if history_index is not None:  # eval_mask_history: True
            scores[history_index] = -np.inf
        target_scores = scores.gather(1, positive_i.view(-1, 1))
        ranks.append(((scores > target_scores).sum(1) + 1).numpy())
        targets.append(positive_i.numpy())
    return np.concatenate(ranks), np.concatenate(targets)


def run(text: bool, shared: dict, cold: int) -> dict:
    config = Config(model="MTLRec", dataset="ml-100k", cmd_args=[], config_dict={**shared, "text_features": text})
    built = build(config)
    train_data, valid_data, test_data, model, trainer = (built.train_data, built.valid_data, built.test_data,
                                                         built.model, built.trainer)
    start = time.perf_counter()
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=True)
    elapsed = time.perf_counter() - start
    ranks, targets = per_user_ranks(model, test_data)
    train_items = train_data._dataset.inter_feat[config["ITEM_ID_FIELD"]].numpy()
    counts = np.bincount(train_items, minlength=train_data._dataset.item_num)
    is_cold = counts[targets] <= cold
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0)
    hit = (ranks <= 10).astype(float)
    assert math.isclose(ndcg.mean(), result["ndcg@10"], abs_tol=1e-3), (ndcg.mean(), result["ndcg@10"])
    return {"micro_f1": result["category_micro_f1"], "macro_f1": result["category_macro_f1"],
            "ndcg": ndcg.mean(), "hit": hit.mean(), "cold_ndcg": ndcg[is_cold].mean(),
            "cold_hit": hit[is_cold].mean(), "cold_users": int(is_cold.sum()), "users": len(ranks),
            "auc": result["interest_auc"], "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max_len", type=int, default=20)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=str(REPO / "results" / "text_features.md"))
    args = parser.parse_args()
    shared = {"epochs": args.epochs, "MAX_ITEM_LIST_LENGTH": args.max_len, "seed": args.seed, "show_progress": False,
              "state": "WARNING", "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2, "stopping_step": 3}
    config = Config(model="MTLRec", dataset="ml-100k", cmd_args=[], config_dict=shared)
    embed_items("ml-100k", Path(config["data_path"]) / "ml-100k.item", feature_folder(config),
                text_fields=config["text_fields"], exclude=[config["category_field"]], show_progress=False)
    rows = {}
    for text in (False, True):
        rows[text] = run(text, shared, args.cold)
        print(("with text: " if text else "ids only:  ") + str(rows[text]), flush=True)
    fmt = lambda r, k: f"{r[k]:.4f}"  # noqa: E731
    table = [
        "| MTLRec | category micro-F1 | category macro-F1 | NDCG@10 (all) | Hit@10 (all) | "
        f"NDCG@10 (target seen <= {args.cold}x in training) | Hit@10 (same) | interest AUC | train+eval s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for text, name in ((False, "item ids + attributes"), (True, "+ PLM text (all-MiniLM-L6-v2)")):
        r = rows[text]
        table.append(f"| {name} | {fmt(r, 'micro_f1')} | {fmt(r, 'macro_f1')} | {fmt(r, 'ndcg')} | {fmt(r, 'hit')} | "
                     f"{fmt(r, 'cold_ndcg')} | {fmt(r, 'cold_hit')} | {fmt(r, 'auc')} | {r['seconds']:.0f} |")
    text = "\n".join([
        "# MTLRec with and without PLM item-text features (ml-100k, test set)", "",
        f"Command: `python benchmarks/text_features.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
        f"Date: {date.today()}. Seed {args.seed}, up to {args.epochs} epochs (early stopping 3), "
        f"MAX_ITEM_LIST_LENGTH={args.max_len}, text fields {config['text_fields']}, text_adapter linear, "
        f"text_fusion add. {rows[True]['cold_users']} of {rows[True]['users']} test users have a target item "
        f"seen at most {args.cold} times in training.", "",
        *table, "",
    ])
    print(text)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
