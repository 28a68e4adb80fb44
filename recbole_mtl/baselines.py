"""``CategoryMLP``: a plain multi-label classifier of item categories, the category task's baseline.

It sees the same item features the multi-task models see (every token/token_seq/float field of
the ``.item`` file but the id and the category label, plus the PLM text vectors with
``text_features``), trains on the same training items with binary cross-entropy and is scored by
the same code (``CategoryTask.metrics``) on the same held-out items.
"""

from __future__ import annotations

import json
import time
from typing import Optional

import torch
from recbole.utils import FeatureType, init_seed
from torch import nn

from recbole_mtl.derive import split_of
from recbole_mtl.config import Config
from recbole_mtl.hardening import safe_create_dataset
from recbole_mtl.data.validate import build_dataset, validate_dataset
from recbole_mtl.tasks.category import CategoryTask
from recbole_mtl.utils import peak_rss_mb


def item_feature_matrix(dataset, exclude: set) -> torch.Tensor:
    """Dense ``[item_num, F]`` features: one-hot tokens, multi-hot token sequences, raw floats."""
    columns = []
    for field in dataset.item_feat.columns:
        if field in exclude or field == dataset.iid_field:
            continue
        values = dataset.item_feat[field]
        kind = dataset.field2type[field]
        if kind in (FeatureType.TOKEN, FeatureType.TOKEN_SEQ):
            index = values.long().view(values.shape[0], -1)
            hot = torch.zeros(values.shape[0], dataset.num(field))
            hot.scatter_(1, index, 1.0)
            columns.append(hot[:, 1:])  # token 0 is padding
        elif kind == FeatureType.FLOAT:
            columns.append(values.float().view(values.shape[0], -1))
    return torch.cat(columns, dim=1) if columns else torch.zeros(len(dataset.item_feat), 0)


def train_category_mlp(dataset_name: str, config_dict: dict, config_file_list: Optional[list] = None,
                       callback_fn=None) -> dict:
    """Train and test the classifier; returns the benchmark worker's record.

    ``callback_fn(epoch_idx, valid_score)`` is called after each epoch's validation, as RecBole's
    ``Trainer.fit`` calls it (the benchmark's learning curve and tuning's pruning).
    """
    config = Config(model="MTLRec", dataset=dataset_name, config_file_list=config_file_list,
                    config_dict={**config_dict, "tasks": ["category"]}, cmd_args=[])
    validate_dataset(config)
    init_seed(config["seed"], config["reproducibility"])
    dataset = build_dataset(config, safe_create_dataset)
    dataset.build()  # RecBole's split; turns the feature tables into tensors, as for the other models
    category_field = config["category_field"]
    features = item_feature_matrix(dataset, {category_field})
    if config["text_features"]:
        from recbole_mtl.data.feature_files import feature_folder
        from recbole_mtl.text.features import load_item_vectors

        features = torch.cat([features, load_item_vectors(dataset, feature_folder(config), dataset_name,
                                                          forbidden_fields=[category_field])], dim=1)
    hidden = int((config["shared_hidden"] or [128])[0])
    # the multi-task models' category task: the same labels, item split, decoding and metrics
    task = CategoryTask(config, dataset, hidden, float(config["dropout"] or 0.0))
    labels = task.labels
    model = nn.Sequential(nn.Linear(features.shape[1], hidden), nn.ReLU(), nn.Dropout(float(config["dropout"] or 0.0)),
                          nn.Linear(hidden, labels.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(config["learning_rate"]),
                                 weight_decay=float(config["weight_decay"] or 0.0))
    generator = torch.Generator().manual_seed(int(config["seed"]))
    train_ids, batch = task.train_items, int(config["category_batch_size"] or 64)

    def score(phase):
        ids = task.held_out(phase)
        model.eval()
        with torch.no_grad():
            probs = torch.sigmoid(model(features[ids]))
        if phase == "valid":  # the decoding threshold is chosen on validation, as for the other models
            task.fit_threshold(probs, labels[ids])
        return task.metrics(probs, labels[ids])

    best, best_state, patience, epochs_run = -1.0, None, 0, 0
    start, curve = time.perf_counter(), []
    for epoch in range(int(config["epochs"])):
        model.train()
        for chunk in train_ids[torch.randperm(len(train_ids), generator=generator)].split(batch):
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(features[chunk]), labels[chunk])
            loss.backward()
            optimizer.step()
        epochs_run = epoch + 1
        valid = score("valid")["category_micro_f1"]
        curve.append([round(time.perf_counter() - start, 2), float(valid)])
        if callback_fn is not None:
            callback_fn(epoch, valid)
        if valid > best:
            best, patience = valid, 0
            best_state = ({k: v.clone() for k, v in model.state_dict().items()}, task.threshold.clone())
        else:
            patience += 1
            if patience > int(config["stopping_step"]):
                break
    train_time = time.perf_counter() - start
    model.load_state_dict(best_state[0])
    task.threshold.copy_(best_state[1])
    test = score("test")
    with torch.no_grad():
        model.eval()
        ids = task.held_out("test")
        per_item = task.per_item("test", torch.sigmoid(model(features[ids])), labels[ids])
    return {
        "test": test,
        #: the held-out test items' predictions (the benchmark's per-run file; not a results column)
        "per_item": {"category": per_item, "dataset": dataset},
        "valid_score": best,
        "epochs_run": epochs_run,
        "best_epoch": 1 + max(range(len(curve)), key=lambda i: curve[i][1]) if curve else epochs_run,
        "curve": json.dumps(curve),
        "train_time_s": round(train_time, 2),
        "time_per_epoch_s": round(train_time / epochs_run, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "split": split_of(config),
    }
