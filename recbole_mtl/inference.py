"""Batch inference from a trained checkpoint: ``recommend``, ``score`` and ``categorize``.

    run_recbole_mtl.py recommend --checkpoint=saved/MTLRec-x.pth [--users=FILE] [--topk=10] [--out=FILE]
    run_recbole_mtl.py score --checkpoint=saved/MTLRec-x.pth --pairs=FILE [--out=FILE]
    run_recbole_mtl.py categorize --checkpoint=saved/MTLRec-x.pth [--items=FILE] [--threshold=T] [--out=FILE]

Each command rebuilds the dataset the checkpoint was trained on (refusing other data, see
:func:`recbole_mtl.checkpoint.check_dataset`), loads the weights (a single-process ``.pth``, or
the per-rank files of a multi-process run joined in memory), and streams a RecBole atomic file
through :func:`recbole_mtl.checkpoint.atomic_open`: a failure or Ctrl-C leaves an earlier output
file as it was. Users are read with their whole history (:class:`~recbole_mtl.data.history.UserHistories`):
every interaction of the dataset, training, validation and test parts alike.

A task serves a command when its class says so (``Task.inference``); no task is named here.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from recbole_mtl import checkpoint, pipeline
from recbole_mtl.data.history import UserHistories
from recbole_mtl.errors import CheckpointError, ConfigError, InferenceInputError, OutputPathError
from recbole_mtl.tasks import REGISTRY
from recbole_mtl.utils import plugin_model_names

COMMANDS = ("recommend", "score", "categorize")
#: How many unknown tokens an error message lists besides the first.
_EXAMPLES = 5
#: Field types of RecBole's atomic-file headers.
_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass
class Served:
    """A model rebuilt from a checkpoint for one command: its config, model, dataset and task."""

    config: Any
    model: Any
    dataset: Any
    task: str
    source: str  # the file(s) the weights were read from


@dataclass
class Summary:
    """What a command wrote: ``rows`` lines (users, pairs or items) to ``out`` in ``seconds``
    (scoring and writing, after the model is loaded)."""

    out: str
    rows: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# -- checks before any work --------------------------------------------------------------------
def check_output(out, inputs: Sequence[Any] = ()) -> Path:
    """Refuse an output path that cannot be written, before anything is loaded or computed.

    Raises:
        OutputPathError: ``out`` is a folder, its folder is missing or not writable, or it is one
            of the command's own inputs (the checkpoint, an input file).
    """
    path = Path(out)
    if path.is_dir():
        raise OutputPathError(f"--out={out} is a folder; pass a file name, e.g. --out={path / 'out.tsv'}.")
    folder = path.resolve().parent
    if not folder.is_dir():
        raise OutputPathError(f"--out={out}: the folder {folder} does not exist; create it or choose another --out.")
    for given in inputs:
        if given and Path(given).resolve() == path.resolve():
            raise OutputPathError(f"--out={out} is one of the command's inputs; choose another output file.")
    try:
        fd, probe = tempfile.mkstemp(prefix=path.name + ".", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"--out={out}: cannot write in {folder} ({e.strerror or e}); choose a writable "
                              "folder.") from None
    return path


def serving_task(command: str, task_names: Sequence[str], model_name: str, path: str) -> str:
    """The task of ``task_names`` that serves ``command`` (see ``Task.inference``).

    Raises:
        ConfigError: no such task among the model's.
    """
    serving = [name for name in task_names if name in REGISTRY and REGISTRY[name].inference == command]
    if not serving:
        wanted = [name for name, cls in REGISTRY.items() if cls.inference == command]
        raise ConfigError(f"`{command}` needs a model with the {' or '.join(wanted)} task, but checkpoint {path} "
                          f"({model_name}) was trained with tasks {list(task_names)}. Train with tasks: "
                          f"[{', '.join(list(task_names) + wanted)}], or use a command its tasks serve.")
    return serving[0]


def load(command: str, path: str, overrides: Optional[dict] = None) -> Served:
    """Rebuild data and model from the checkpoint ``path`` for ``command``.

    Args:
        path: ``<name>.pth``, or a ``<name>.rank<r>-of-<W>.pth`` file: the per-rank files of a
            multi-process run are joined in memory when there is no ``<name>.pth`` (nothing is written).
        overrides: config keys over the saved ones (e.g. ``{"data_path": ...}``).

    Raises:
        CheckpointError: missing, unreadable, of a RecBole baseline, or trained on other data.
        ConfigError: the model lacks the task the command serves.
    """
    state, source = checkpoint.load_single_or_sharded(path)
    saved = state["config"]["final"]
    model_name = saved.get("model")
    if model_name not in plugin_model_names():
        raise CheckpointError(
            f"checkpoint {path} is of the RecBole model {model_name}: `{command}` serves the multi-task models "
            f"{plugin_model_names()} only (whole-history next-item, interest and category predictions). Evaluate "
            f"it with: run_recbole_mtl.py evaluate --checkpoint={path}, or use RecBole's own "
            "recbole.utils.case_study.full_sort_topk.")
    serving_task(command, list(saved.get("tasks") or []), model_name, path)
    overrides = {"state": "WARNING", **(overrides or {})}  # a batch command: warnings and errors only
    if overrides.get("dataset", saved.get("dataset")) != saved.get("dataset"):
        raise CheckpointError(f"checkpoint {path} was trained on dataset '{saved.get('dataset')}', not "
                              f"'{overrides['dataset']}'. Leave out --dataset (and pass --data_path=... if its "
                              "files moved).")
    config, model, dataset, *_ = pipeline.load_data_and_model(source if os.path.isfile(source) else path,
                                                              overrides, state=state)
    task = serving_task(command, model.tasks, model_name, path)
    model.eval()
    return Served(config, model, dataset, task, source)


# -- input files --------------------------------------------------------------------------------
@dataclass
class Table:
    """An atomic input file: its header, and per data row its line number and fields."""

    path: str
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def column(self, name: str, kinds: Sequence[str] = ("token",)) -> int:
        """Index of the column ``name:<kind>``.

        Raises:
            InferenceInputError: no such column (naming the header and what to add).
        """
        for i, head in enumerate(self.header):
            field, _, kind = head.partition(":")
            if field == name:
                if kind not in kinds:
                    raise InferenceInputError(f"{self.path}, line 1, field {name}: type '{kind or '(none)'}', "
                                              f"expected {' or '.join(kinds)} (header '{name}:{kinds[0]}').")
                return i
        raise InferenceInputError(f"{self.path}, line 1: no '{name}:{kinds[0]}' column in the header "
                                  f"{self.header}; the file must name the dataset's field {name}.")


def _check_input(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        raise InferenceInputError(f"{flag}={path}: no such file.")


def read_table(path: str, flag: str) -> Table:
    """A tab-separated atomic file with a ``name:type`` header; every row must have its columns.

    Raises:
        InferenceInputError: a missing file, no header, or a row with another number of fields.
    """
    _check_input(path, flag)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").rstrip("\r").split("\t")
        if not header or not all(":" in h for h in header):
            raise InferenceInputError(f"{path}, line 1: expected an atomic-file header of name:type fields "
                                      f"separated by tabs, got {header}.")
        rows = []
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise InferenceInputError(f"{path}, line {lineno}: {len(fields)} field(s), the header has "
                                          f"{len(header)} ({', '.join(header)}); separate fields with one tab.")
            rows.append((lineno, fields))
    return Table(path, header, rows)


def read_users(path: str, uid_field: str) -> list[tuple[int, str]]:
    """``(line, token)`` of a users file: an atomic file whose header has ``<uid_field>:token`` (other
    columns ignored), or a plain list with one user token per line (no header)."""
    _check_input(path, "--users")
    with open(path, encoding="utf-8") as f:
        first = f.readline().rstrip("\n").rstrip("\r")
    if all(h.partition(":")[2] in _TYPES for h in first.split("\t")):  # a header: an atomic file
        table = read_table(path, "--users")
        at = table.column(uid_field)
        found = [(lineno, fields[at].strip()) for lineno, fields in table.rows]
    else:
        found = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                if "\t" in line:
                    raise InferenceInputError(
                        f"{path}, line {lineno}: {len(line.split(chr(9)))} tab-separated fields; a list of users has "
                        f"one {uid_field} token per line (or give the file a header with a '{uid_field}:token' "
                        "column).")
                found.append((lineno, line.strip()))
    for lineno, token in found:
        if not token:
            raise InferenceInputError(f"{path}, line {lineno}, field {uid_field}: empty token.")
    return found


def to_ids(dataset, field: str, tokens: Sequence[tuple[int, str]], path: str, noun: str) -> torch.Tensor:
    """Internal ids of ``(line, token)`` pairs of ``field``.

    Raises:
        InferenceInputError: the first unknown token (file, line, field), how many others there
            are, with a few examples.
    """
    known = dataset.field2token_id[field]
    unknown = [(lineno, token) for lineno, token in tokens if token not in known]
    if unknown:
        (lineno, token), others = unknown[0], unknown[1:]
        more = ""
        if others:
            examples = ", ".join(f"'{t}' (line {n})" for n, t in others[:_EXAMPLES])
            more = f" ({len(others)} other unknown {noun}(s): {examples}{', ...' if len(others) > _EXAMPLES else ''})"
        raise InferenceInputError(
            f"{path}, line {lineno}, field {field}: unknown {noun} '{token}'{more}. Only {noun}s of dataset "
            f"'{dataset.dataset_name}' as the model was trained on it (after its filters) can be served; remove "
            "the others from the file.")
    return torch.tensor([known[token] for _, token in tokens], dtype=torch.long)


def _require_history(histories: UserHistories, users: torch.Tensor, tokens, path: str, field: str) -> None:
    empty = (histories.length(users) == 0).nonzero().flatten()
    if len(empty):
        lineno, token = tokens[int(empty[0])]
        raise InferenceInputError(f"{path}, line {lineno}, field {field}: user '{token}' has no interaction in the "
                                  f"dataset ({len(empty)} such user(s)), so there is no history to predict from; "
                                  "remove them from the file.")


# -- output ------------------------------------------------------------------------------------
def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.7g}" for v in values)


def _batches(n: int, size: int, desc: str, progress: bool) -> Iterator[slice]:
    bar = tqdm(total=n, desc=desc, unit="row", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))
            bar.update(min(size, n - start))
    finally:
        bar.close()


def _history_batch(served: Served, histories: UserHistories, users: torch.Tensor,
                   next_items: Optional[torch.Tensor] = None):
    return served.dataset.join(histories.batch(users, next_items)).to(served.model.device)


# -- the commands --------------------------------------------------------------------------------
def recommend(served: Served, out, users_file: Optional[str] = None, topk: int = 10, batch_size: int = 256,
              progress: bool = True) -> Summary:
    """Top-``topk`` items per user by the ranking task's scores after the user's whole history.

    Items the user interacted with anywhere in the dataset (training, validation and test parts)
    and the padding item are excluded; fewer than ``topk`` are written when fewer are left.
    Output columns: ``<user>:token``, ``<item>_list:token_seq``, ``score_list:float_seq``, best first.
    """
    if topk < 1:
        raise ConfigError(f"--topk must be >= 1; got {topk}.")
    dataset, model = served.dataset, served.model
    uid, iid = dataset.uid_field, dataset.iid_field
    histories = UserHistories(dataset, model.max_seq_length)
    if users_file:
        tokens = read_users(users_file, uid)
        seen_tokens, unique = set(), []
        for lineno, token in tokens:  # each user once, in file order
            if token not in seen_tokens:
                seen_tokens.add(token)
                unique.append((lineno, token))
        users = to_ids(dataset, uid, unique, users_file, "user")
        _require_history(histories, users, unique, users_file, uid)
    else:
        users = torch.arange(1, dataset.user_num)
        users = users[histories.length(users) > 0]
    user_tokens, item_tokens = dataset.field2id_token[uid], dataset.field2id_token[iid]
    k = min(topk, dataset.item_num - 1)
    header = f"{uid}:token\t{iid}{dataset.config['LIST_SUFFIX']}:token_seq\tscore_list:float_seq\n"
    start = time.perf_counter()
    with checkpoint.atomic_open(out) as f, torch.no_grad():
        f.write(header)
        for part in _batches(len(users), batch_size, "recommend", progress):
            batch_users = users[part]
            scores = model.predict_tasks(_history_batch(served, histories, batch_users), [served.task])[served.task]
            scores = scores.float().cpu()
            rows, seen = histories.seen(batch_users)
            scores[rows, seen] = float("-inf")
            scores[:, 0] = float("-inf")
            best, at = torch.topk(scores, k, dim=1)
            for user, values, items in zip(batch_users.tolist(), best.tolist(), at.tolist()):
                kept = [(i, v) for i, v in zip(items, values) if v != float("-inf")]
                f.write(f"{user_tokens[user]}\t{' '.join(item_tokens[i] for i, _ in kept)}\t"
                        f"{_fmt([v for _, v in kept])}\n")
    return Summary(str(out), len(users), time.perf_counter() - start)


def score(served: Served, out, pairs_file: str, batch_size: int = 1024, progress: bool = True) -> Summary:
    """The pair task's probability for each (user, item) row of ``pairs_file``, after the user's whole
    history. Output: the input rows, unchanged, plus ``<task>_score:float``."""
    dataset, model = served.dataset, served.model
    uid, iid = dataset.uid_field, dataset.iid_field
    table = read_table(pairs_file, "--pairs")
    at_user, at_item = table.column(uid), table.column(iid)
    for lineno, fields in table.rows:
        for field, at in ((uid, at_user), (iid, at_item)):
            if not fields[at].strip():
                raise InferenceInputError(f"{pairs_file}, line {lineno}, field {field}: empty token.")
    user_tokens = [(lineno, fields[at_user].strip()) for lineno, fields in table.rows]
    users = to_ids(dataset, uid, user_tokens, pairs_file, "user")
    items = to_ids(dataset, iid, [(lineno, fields[at_item].strip()) for lineno, fields in table.rows],
                   pairs_file, "item")
    histories = UserHistories(dataset, model.max_seq_length)
    _require_history(histories, users, user_tokens, pairs_file, uid)
    start = time.perf_counter()
    with checkpoint.atomic_open(out) as f, torch.no_grad():
        f.write("\t".join(table.header) + f"\t{served.task}_score:float\n")
        for part in _batches(len(users), batch_size, "score", progress):
            batch = _history_batch(served, histories, users[part], items[part])
            probs = model.predict_tasks(batch, [served.task])[served.task].float().cpu().tolist()
            for (_, fields), p in zip(table.rows[part], probs):
                f.write("\t".join(fields) + f"\t{p:.7g}\n")
    return Summary(str(out), len(users), time.perf_counter() - start)


def _new_item_vectors(served: Served, items_file: str) -> tuple[list[tuple[int, str]], torch.Tensor]:
    """``(line, token)`` and PLM vectors ``[N, P]`` of the new items of ``items_file``, encoded with the model
    and the text fields the model's feature file was made with."""
    import json

    from recbole_mtl.data.feature_files import feature_folder, feature_paths
    from recbole_mtl.text.embed import encode

    config, dataset, model = served.config, served.dataset, served.model
    model.check_new_items(served.task)
    iid = dataset.iid_field
    table = read_table(items_file, "--items")
    at_item = table.column(iid)
    features, sidecar = feature_paths(feature_folder(config), config["dataset"])
    meta = json.loads(sidecar.read_text())
    fields = list(meta["text_fields"])
    at_text = {name: table.column(name, ("token_seq", "token")) for name in fields}
    known = dataset.field2token_id[iid]
    tokens, texts = [], []
    for lineno, row in table.rows:
        token = row[at_item].strip()
        if not token:
            raise InferenceInputError(f"{items_file}, line {lineno}, field {iid}: empty token.")
        if token in known:
            raise InferenceInputError(
                f"{items_file}, line {lineno}, field {iid}: item '{token}' is in dataset '{config['dataset']}'; "
                "--items is for new items, described by their text only. Leave it out (categorize without "
                "--items predicts the dataset's items that have no label).")
        # the text as `embed` builds it (recbole_mtl.text.embed.read_texts)
        parts = [f"{name}: {row[at_text[name]].strip()}" for name in fields if row[at_text[name]].strip()]
        tokens.append((lineno, token))
        texts.append(". ".join(parts) if parts else "(no text)")
    if not tokens:
        raise InferenceInputError(f"{items_file}: no item rows below the header.")
    vectors = torch.from_numpy(encode(texts, meta["plm"], show_progress=False))
    if vectors.shape[1] != int(meta["dim"]):
        raise InferenceInputError(f"the language model {meta['plm']} gave {vectors.shape[1]}-dim vectors, but "
                                  f"{features} (the model's item text) has {meta['dim']}.")
    return tokens, vectors


def categorize(served: Served, out, items_file: Optional[str] = None, threshold: Optional[float] = None,
               batch_size: int = 4096, progress: bool = True) -> Summary:
    """Predicted labels of the item task, with their probabilities, best first.

    Items: every item of the dataset with no label in the task's field (default), or the new items
    of ``items_file`` (an atomic ``.item``-style file with the id and the model's text fields),
    described by their text. A label is written when its probability reaches ``threshold`` (default:
    the one the model chose on its validation items); the top label always is.
    """
    model, dataset = served.model, served.dataset
    head = model.task(served.task)
    threshold = float(head.threshold) if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1; got {threshold}.")
    iid = dataset.iid_field
    names = head.names
    if items_file:
        tokens, vectors = _new_item_vectors(served, items_file)
        item_tokens = [t for _, t in tokens]
    else:
        ids = torch.arange(1, dataset.item_num)
        ids = ids[head.labels[ids].sum(1) == 0].to(model.device)
        item_tokens = [dataset.field2id_token[iid][i] for i in ids.tolist()]
    start = time.perf_counter()
    with checkpoint.atomic_open(out) as f, torch.no_grad():
        f.write(f"{iid}:token\t{served.task}_list:token_seq\tprobability_list:float_seq\n")
        for part in _batches(len(item_tokens), batch_size, "categorize", progress):
            if items_file:
                probs = model.new_item_probabilities(served.task, vectors[part])
            else:
                probs = model.item_probabilities(served.task, ids[part])
            probs = probs.float().cpu()
            chosen = head.decode(probs, threshold)
            for token, p, keep in zip(item_tokens[part], probs, chosen):
                labels = keep.nonzero().flatten()
                labels = labels[torch.argsort(p[labels], descending=True, stable=True)].tolist()
                f.write(f"{token}\t{' '.join(names[c] for c in labels)}\t{_fmt(p[labels].tolist())}\n")
    return Summary(str(out), len(item_tokens), time.perf_counter() - start)
