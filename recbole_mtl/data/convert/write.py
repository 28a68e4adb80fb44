"""The output side of ``convert``: the atomic files written to a staging folder, the k-core filter,
the dataset YAML, the ``validate`` check and the rename over the previous output."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from recbole_mtl.checkpoint import fsync_folder
from recbole_mtl.data.convert.common import ITEM, RATING, TIME, USER, Progress, Source, quote
from recbole_mtl.errors import ConvertError


# -- writing ------------------------------------------------------------------------------------------
def _header(fields: Sequence[tuple]) -> str:
    return "\t".join(f"{n}:{t}" for n, t in fields) + "\n"


def _kcore(path: Path, users: Counter, items: Counter, k: int, progress: Progress) -> tuple[set, set, int]:
    """Users and items left when each must have >= k interactions, removed round after round
    (each round one pass over the interaction file ``path``)."""
    keep_u = {u for u, c in users.items() if c >= k}
    keep_i = {i for i, c in items.items() if c >= k}
    rounds = 1
    while True:
        cu, ci = Counter(), Counter()
        with open(path, encoding="utf-8") as f:
            next(f)
            for text in f:
                u, i, _ = text.split("\t", 2)
                if u in keep_u and i in keep_i:
                    cu[u] += 1
                    ci[i] += 1
        new_u = {u for u, c in cu.items() if c >= k}
        new_i = {i for i, c in ci.items() if c >= k}
        if new_u == keep_u and new_i == keep_i:
            return keep_u, keep_i, rounds
        keep_u, keep_i, rounds = new_u, new_i, rounds + 1
        progress.say(f"k-core {k}, round {rounds}: {len(keep_u):,} users, {len(keep_i):,} items left")


def _write_side(path: Path, id_name: str, fields: list, rows: Iterator[tuple], keep: Optional[set]) -> dict:
    """Write ``.item``/``.user`` rows whose id is in ``keep``; the first row of a repeated id wins."""
    written, duplicates, first_dup = set(), 0, None
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(_header([(id_name, "token")] + fields))
        for source, line, key, values in rows:
            if keep is not None and key not in keep:
                continue
            if key in written:
                duplicates += 1
                first_dup = first_dup or f"{source}, line {line} (id {quote(key)})"
                continue
            written.add(key)
            out.write("\t".join([key, *values]) + "\n")
    return {"rows": len(written), "duplicates": duplicates, "first_duplicate": first_dup}


#: The evaluation protocol of the sequential-recommendation papers on the Amazon Beauty/Sports
#: sequences (S3-Rec, CL4SRec, DuoRec, ICLRec), written for the ``sequences`` and ``pairs`` formats.
LEAVE_ONE_OUT_YAML = """\
# The published protocol: leave-one-out by time (each user's last item is the test item, the
# second-to-last the validation item, the rest train), full ranking over all items with the user's
# earlier items masked, HR and NDCG at K = 5, 10, 20.
eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user, mode: full}
eval_mask_history: True         # full ranking: the user's earlier items score -inf
metrics: [Hit, NDCG]
topk: [5, 10, 20]
valid_metric: NDCG@10
MAX_ITEM_LIST_LENGTH: 50        # the history length of the Amazon papers
user_inter_num_interval: "[0,inf)"   # keep every user and item (convert --kcore filters before writing)
item_inter_num_interval: "[0,inf)"
rm_dup_inter: ~                 # an item a user took twice stays twice in the sequence
# The next-item settings measured best on this family of data (sparse, short histories; see
# docs/training.md and results/sequence_recipe/beauty/report.md): heavy dropout, as the SASRec paper
# uses on Amazon (RecBole's SASRec defaults to the same), L2-normalised scores over a temperature, and
# no user-id embedding (a user is known by the history alone, as in SASRec: with about nine items a
# user, a per-user vector memorises the training items and ranks the next one worse).
hidden_dropout_prob: 0.5
attn_dropout_prob: 0.5
sequence_score: cosine
sequence_temperature: 0.05
user_id_input: False
"""


def dataset_yaml(name: str, source: Source, out_root: Path, interest_threshold: float, has_user: bool,
                 has_item: bool, command: str) -> str:
    """The dataset config: field names, what each task reads, what RecBole loads; and for a source
    with ``protocol="leave-one-out"``, :data:`LEAVE_ONE_OUT_YAML` (the published protocol)."""
    inter_cols = [USER, ITEM] + ([RATING] if source.has_rating else []) + [TIME]
    lines = [
        f"# {name}: written by `{command}`",
        f"# python run_recbole_mtl.py --model=MTLRec --dataset={name} --data_path={out_root} "
        f"--config_files={out_root / name / (name + '.yaml')}",
        f"USER_ID_FIELD: {USER}",
        f"ITEM_ID_FIELD: {ITEM}",
        f"RATING_FIELD: {RATING if source.has_rating else '~'}",
        f"TIME_FIELD: {TIME}",
        "load_col:                       # the columns RecBole loads (long texts stay out; `embed` reads them)",
        f"  inter: [{', '.join(inter_cols)}]",
    ]
    if has_item:
        lines.append(f"  item: [{', '.join([ITEM] + [f for f in source.item_load if f in dict(source.item_fields)])}]")
    if has_user:
        lines.append(f"  user: [{', '.join([USER] + [f for f, _ in source.user_fields])}]")
    if source.has_rating:
        lines += [f"interest_label_field: {RATING}    # the interest task: {RATING} >= interest_threshold is 'liked'",
                  f"interest_threshold: {float(interest_threshold)}",
                  f"rating_label_field: {RATING}"]
    else:
        lines.append("interest_label_field: ~         # no rating in the source: no interest task")
    if has_item and source.category_field:
        lines.append(f"category_field: {source.category_field}          # the category task's labels (token_seq of .item)")
    else:
        lines.append("category_field: ~               # no categories in the source: no category task")
    text = [f for f in source.text_fields if f in dict(source.item_fields)] if has_item else []
    lines.append(f"text_fields: [{', '.join(text)}]" if text else "text_fields: ~")
    tasks = ["sequence"] + (["interest"] if source.has_rating else []) + \
        (["category"] if has_item and source.category_field else [])
    if len(tasks) < 3:
        lines.append(f"tasks: [{', '.join(tasks)}]          # the tasks this data can serve")
    if source.time_meaning:
        at = next(n for n, text in enumerate(lines) if text.startswith("TIME_FIELD:"))
        lines.insert(at, f"# {TIME}: {source.time_meaning}")
    out = "\n".join(lines) + "\n"
    if source.protocol == "leave-one-out":
        out += LEAVE_ONE_OUT_YAML
    elif source.protocol is not None:
        raise ValueError(f"unknown protocol {source.protocol!r}")
    return out


@dataclass
class Result:
    folder: Path
    files: list
    interactions: int
    users: int
    items: int
    dropped: int
    kcore_rounds: int
    item_rows: Optional[int]
    user_rows: Optional[int]
    warnings: list


def _commit(stage: Path, target: Path, produced: list, stale: list) -> None:
    """Rename each staged file over its target (the YAML last), then remove outputs of an earlier
    conversion that this one does not write."""
    target.mkdir(parents=True, exist_ok=True)
    for name in produced:
        staged = stage / name
        with open(staged, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(staged, target / name)
    for name in stale:
        if (target / name).exists():
            os.unlink(target / name)
    fsync_folder(target)


def _convert_into(source: Source, stage: Path, out_root: Path, name: str, kcore: int, interest_threshold: float,
                  progress: Progress, validate: bool, command: str) -> Result:
    progress.say(f"reading {source.description}")
    inter_fields = [(USER, "token"), (ITEM, "token")] + ([(RATING, "float")] if source.has_rating else []) + \
        [(TIME, "float")]
    inter_path = stage / f"{name}.inter"
    users, items = Counter(), Counter()
    with open(inter_path, "w", encoding="utf-8", newline="") as f:
        f.write(_header(inter_fields))
        for user, item, rating, stamp in source.interactions():
            f.write("\t".join([user, item, stamp] if rating is None else [user, item, rating, stamp]) + "\n")
            users[user] += 1
            items[item] += 1
    total = sum(users.values())
    if total == 0:
        raise ConvertError(f"{source.description}: no interactions found.")
    keep_u = keep_i = None
    rounds, kept = 0, total
    if kcore > 1:
        keep_u, keep_i, rounds = _kcore(inter_path, users, items, kcore, progress)
        if not keep_u:
            raise ConvertError(f"--kcore {kcore} leaves no interaction of the {total:,} read: no set of users and items "
                               f"has {kcore} interactions each. Lower --kcore.")
        filtered = stage / f"{name}.inter.kcore"
        kept = 0
        with open(inter_path, encoding="utf-8") as src, open(filtered, "w", encoding="utf-8", newline="") as dst:
            dst.write(next(src))
            for text in src:
                u, i, _ = text.split("\t", 2)
                if u in keep_u and i in keep_i:
                    dst.write(text)
                    kept += 1
        os.replace(filtered, inter_path)
        progress.say(f"k-core {kcore}: kept {kept:,} of {total:,} interactions ({rounds} round(s))")
    n_users = len(keep_u) if keep_u is not None else len(users)
    n_items = len(keep_i) if keep_i is not None else len(items)
    item_ids = keep_i if keep_i is not None else set(items)
    user_ids = keep_u if keep_u is not None else set(users)
    del users, items

    produced, warnings = [inter_path.name], list(source.notes)
    item_rows = user_rows = None
    if source.items is not None:
        info = _write_side(stage / f"{name}.item", ITEM, source.item_fields, source.items(), item_ids)
        item_rows = info["rows"]
        produced.append(f"{name}.item")
        if info["duplicates"]:
            warnings.append(f"{info['duplicates']} repeated item row(s) skipped, the first at {info['first_duplicate']}; "
                            "the first row of each item is kept.")
        if item_rows < n_items:
            warnings.append(f"{n_items - item_rows} of {n_items} items have no row in the item file; their "
                            "attributes are empty.")
    if source.users is not None:
        info = _write_side(stage / f"{name}.user", USER, source.user_fields, source.users(), user_ids)
        user_rows = info["rows"]
        produced.append(f"{name}.user")
        if info["duplicates"]:
            warnings.append(f"{info['duplicates']} repeated user row(s) skipped, the first at {info['first_duplicate']}.")
    yaml_text = dataset_yaml(name, source, out_root.resolve(), interest_threshold, source.users is not None,
                             source.items is not None, command or f"convert --name {name}")
    (stage / f"{name}.yaml").write_text(yaml_text, encoding="utf-8")
    produced.append(f"{name}.yaml")
    if validate:
        _validate_staged(stage, name)
    target = out_root / name
    stale = [f"{name}.{s}" for s in ("item", "user") if f"{name}.{s}" not in produced]
    try:
        _commit(stage, target, produced, stale)
    except OSError as e:
        raise ConvertError(f"cannot write the output to {target} ({e.strerror or e}: {e.filename}). "
                           "Choose another --out or --name.") from None
    for message in warnings:
        progress.say(f"warning: {message}")
    return Result(target, [target / p for p in produced], kept, n_users, n_items, total - kept, rounds,
                  item_rows, user_rows, warnings)


def _validate_staged(stage: Path, name: str) -> None:
    """The ``validate`` subcommand's checks on the staged files, before they replace anything."""
    from recbole_mtl.config import Config
    from recbole_mtl.data.validate import validate_dataset

    config = Config(model="MTLRec", dataset=name, config_file_list=[str(stage / f"{name}.yaml")],
                    config_dict={"data_path": str(stage.parent), "state": "ERROR"}, cmd_args=[])
    validate_dataset(config)
