"""One dataset config for every model: what RecBole's baselines need, derived from the dataset's keys.

A dataset YAML (the one ``convert`` writes, or your own) names the fields once: ``USER_ID_FIELD``,
``ITEM_ID_FIELD``, ``RATING_FIELD``, ``TIME_FIELD``, ``interest_label_field`` /
``interest_threshold``, ``category_field``, ``text_fields``. RecBole's models need more than that,
and need it in their own keys: a general model loads the id fields, a sequential one also the time
field and, with a CE loss, no negative samples; a context-aware one (and a point-wise sequential one
trained without negatives, such as DIN in ``benchmark``) a 0/1 label. :func:`derive` fills those keys
in for a RecBole model, from the dataset keys and the atomic files' header lines, so ``MTLRec``,
``SASRec``, ``DeepFM`` and ``DIN`` all run from the same file with no other flag.

Rules (a key the user sets, in a config file, the config dict or on the command line, is never
changed; a setting that cannot work is a one-line :class:`~recbole_mtl.errors.ConfigError` that
names the key and the fix):

* ``train_neg_sample_args``: ``None`` for a sequential model whose ``loss_type`` is ``CE`` (a
  softmax over every item takes no negatives).
* ``threshold``: ``{interest_label_field: interest_threshold}`` for a point-wise model trained
  without negatives (context-aware models; DIN with ``train_neg_sample_args: None``) when
  ``.inter`` has no ``LABEL_FIELD`` and RecBole's presets set no threshold.
* ``RATING_FIELD``: the interest (or rating) label field when ``.inter`` lacks RecBole's default
  ``rating``.
* ``load_col``: when RecBole's default (``inter: [user_id, item_id]`` outside ml-100k) leaves out a
  field the model needs, the fields the model reads: the ids, the rating and the time field of
  ``.inter`` (a context-aware model: the ids, the time and its label source, never another label),
  and for models that read features the whole ``.user`` and the ``.item`` file but its long text
  fields (``text_fields``, which ``embed`` reads). A ``load_col`` the user set that leaves out a
  needed field is an error.

``derive_model_config: False`` turns all of it off. The plugin's own models (``MTLRec``, ``MMoE``,
``PLE``) load every column and are not touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from recbole_mtl.errors import ConfigError

#: Model-config keys whose presence means the model reads item feature fields (FDSA, SASRecF, ...).
_FEATURE_KEYS = ("selected_features", "item_attribute")


def data_folder(final: dict, dataset: str) -> Path:
    """The folder RecBole reads ``dataset`` from (as its ``Config`` will set ``data_path``)."""
    if dataset == "ml-100k":
        import recbole

        return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    return Path(os.path.join(str(final.get("data_path") or "dataset/"), dataset))


def read_header(path: Path, sep: str) -> Optional[dict]:
    """``{field: type}`` of an atomic file's first line, or None (no file, or not readable as one)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            line = f.readline().rstrip("\r\n").lstrip("\ufeff")
    except OSError:
        return None
    header = {}
    for column in line.split(sep):
        name, _, kind = column.partition(":")
        if not name or not kind:
            return None  # malformed: `validate` says what is wrong
        header[name] = kind
    return header


def headers(final: dict, dataset: str) -> dict:
    """The headers of ``.inter`` (the first ``benchmark_filename`` part), ``.user`` and ``.item``."""
    folder = data_folder(final, dataset)
    sep = final.get("field_separator") or "\t"
    parts = final.get("benchmark_filename")
    inter = folder / (f"{dataset}.{parts[0]}.inter" if parts else f"{dataset}.inter")
    return {"inter": read_header(inter, sep), "user": read_header(folder / f"{dataset}.user", sep),
            "item": read_header(folder / f"{dataset}.item", sep)}


def _kind(model_class) -> str:
    from recbole.utils import ModelType

    kind = {ModelType.GENERAL: "general", ModelType.SEQUENTIAL: "sequential", ModelType.CONTEXT: "context-aware",
            ModelType.DECISIONTREE: "context-aware", ModelType.KNOWLEDGE: "knowledge-aware"}
    return kind.get(model_class.type, str(getattr(model_class.type, "name", model_class.type)).lower())


def describe(model: str, model_class) -> str:
    """``'DeepFM (a context-aware RecBole model)'``."""
    kind = _kind(model_class)
    return f"{model} (a{'n' if kind[0] in 'aeiou' else ''} {kind} RecBole model)"


def _pointwise(model_class) -> bool:
    from recbole.utils import InputType

    return getattr(model_class, "input_type", None) == InputType.POINTWISE


def _flow(value) -> str:
    """A YAML flow value for a message: ``{inter: [a, b], item: [c]}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def derive(final: dict, external: dict, model: str, model_class, dataset: str) -> dict:
    """Fill in, in ``final``, the keys ``model`` needs that the user did not set; return them.

    Args:
        final: the merged config (RecBole's defaults and presets, the plugin's, the user's); changed in place.
        external: what the user set (config files, config dict, command line): never changed.
        model: the model's name; model_class: its class.
        dataset: the dataset's name.

    Raises:
        ConfigError: the user's settings and the model's needs (or the data) do not fit.
    """
    from recbole.utils import ModelType

    for key, example in (("load_col", "{inter: [user_id, item_id, rating, timestamp]}"), ("threshold", "{rating: 4}"),
                         ("eval_args", "{split: {LS: valid_and_test}, order: TO, mode: full}")):
        if final.get(key) is not None and not isinstance(final[key], dict):
            raise ConfigError(f"config key {key} must be a dict such as {example}, or None; got {final[key]!r}. "
                              f"Fix it in your config file, config dict or --{key}=...")
    if final.get("derive_model_config") is False:
        return {}
    derived: dict = {}
    user_set = set(external)
    heads = headers(final, dataset)
    inter = heads["inter"]
    who = describe(model, model_class)
    uid, iid = final.get("USER_ID_FIELD"), final.get("ITEM_ID_FIELD")
    sequential = model_class.type == ModelType.SEQUENTIAL
    context = model_class.type in (ModelType.CONTEXT, ModelType.DECISIONTREE)
    interest = final.get("interest_label_field")

    def present(name) -> bool:
        return bool(name) and (inter is None or name in inter)

    def float_in_inter(name) -> bool:
        return bool(name) and inter is not None and inter.get(name) == "float"

    # RATING_FIELD: RecBole's default 'rating' is not in the data, the interest label is
    if "RATING_FIELD" not in user_set and inter is not None and final.get("RATING_FIELD") not in inter:
        for candidate in (interest, final.get("rating_label_field")):
            if float_in_inter(candidate):
                final["RATING_FIELD"] = derived["RATING_FIELD"] = candidate
                break

    # a CE loss scores every item: no negatives (RecBole raises a ValueError otherwise)
    if sequential and not hasattr(model_class, "input_type") and final.get("loss_type") == "CE":
        if "train_neg_sample_args" in user_set and final.get("train_neg_sample_args") not in (None, "None"):
            raise ConfigError(
                f"{model}'s loss_type is CE (a softmax over every item), which takes no negative samples, but "
                f"the config sets train_neg_sample_args: {_flow(final['train_neg_sample_args'])}. Remove "
                f"train_neg_sample_args (or set --train_neg_sample_args=None), or set --loss_type=BPR to train "
                f"on sampled negatives."
            )
        if final.get("train_neg_sample_args") is not None:
            final["train_neg_sample_args"] = derived["train_neg_sample_args"] = None

    # a point-wise model without sampled negatives learns from 0/1 labels
    needs_label = (context or (sequential and _pointwise(model_class))) and \
        final.get("train_neg_sample_args") in (None, "None")
    label = final.get("LABEL_FIELD")
    if needs_label and not final.get("threshold") and inter is not None and label not in inter:
        if "threshold" not in user_set and float_in_inter(interest):
            threshold = float(final.get("interest_threshold") if final.get("interest_threshold") is not None else 4.0)
            final["threshold"] = derived["threshold"] = {interest: threshold}
        else:
            why = (f"interest_label_field is '{interest}', which {dataset}.inter "
                   + ("has as a " + inter[interest] + " field, not a float one" if interest in inter else "lacks")
                   if interest else "no interest_label_field is set")
            raise ConfigError(
                f"{who} learns from 0/1 labels, but {dataset}.inter has no '{label}' field (LABEL_FIELD) and {why}. "
                f"Set interest_label_field to a float field of {dataset}.inter (fields: {', '.join(inter)}) and "
                f"interest_threshold to the value that counts as liked, or set threshold: {{field: value}}."
            )

    # load_col: every field the model needs is loaded
    needed = {uid: "USER_ID_FIELD", iid: "ITEM_ID_FIELD"}
    order = str((final.get("eval_args") or {}).get("order", "")).upper()
    time_field = final.get("TIME_FIELD")
    if (sequential or order == "TO") and present(time_field):
        needed[time_field] = "TIME_FIELD, which orders each user's interactions" + (
            " for a sequential model" if sequential else " for eval_args order TO")
    threshold = final.get("threshold")
    if isinstance(threshold, dict):
        for f in threshold:
            if present(f):
                needed[f] = "the field `threshold` turns into the 0/1 label"
    if needs_label and inter is not None and label in inter:
        needed[label] = "LABEL_FIELD, the 0/1 label"
    needed = {f: why for f, why in needed.items() if f and present(f)}
    load_col = final.get("load_col")
    loaded = None if load_col is None else set((load_col or {}).get("inter") or [])
    missing = [f for f in needed if loaded is not None and f not in loaded]
    if missing and "load_col" in user_set:
        fixed = dict(load_col)
        fixed["inter"] = list((load_col or {}).get("inter") or []) + missing
        raise ConfigError(
            f"load_col leaves out {', '.join(repr(f) for f in missing)} of {dataset}.inter, which {who} needs "
            f"({'; '.join(f'{f}: {needed[f]}' for f in missing)}). Add {'it' if len(missing) == 1 else 'them'} "
            f"to load_col['inter'] (load_col: {_flow(fixed)}), or remove load_col from your config and "
            f"recbole-mtl loads what each model needs."
        )
    if missing and inter is not None:
        if context:
            wanted = [uid, iid, time_field, *needed]
        else:
            wanted = [uid, iid, final.get("RATING_FIELD"), time_field, *needed]
        new = {"inter": [f for f in inter if f in wanted]}
        reads_features = context or _pointwise(model_class) or any(k in final for k in _FEATURE_KEYS)
        if reads_features:
            texts = set(final.get("text_fields") or []) - {final.get("category_field"), iid}
            if heads["item"] is not None:
                new["item"] = [f for f in heads["item"] if f not in texts]
            if heads["user"] is not None:
                new["user"] = list(heads["user"])
        final["load_col"] = derived["load_col"] = new
    return derived


def describe_split(eval_args: dict) -> str:
    """RecBole's ``eval_args`` in words: ``'a random 80/10/10 split of all interactions (...)'``."""
    eval_args = eval_args or {}
    split = eval_args.get("split") or {}
    order = str(eval_args.get("order", "RO")).upper()
    group = eval_args.get("group_by")
    mode = eval_args.get("mode")
    if isinstance(mode, dict):
        mode = mode.get("test", mode.get("valid"))
    if "LS" in split:
        words = "leave-one-out " + ("by time" if order == "TO" else "in random order")
    elif "RS" in split:
        ratios = [float(r) for r in split["RS"]]
        total = sum(ratios) or 1.0
        words = (("a time-ordered " if order == "TO" else "a random ")
                 + "/".join(f"{100 * r / total:g}" for r in ratios)
                 + (" split of each user's interactions" if group == "user" else " split of all interactions"))
    else:
        words = "RecBole's split"
    settings = ", ".join(f"{k} {_flow(v)}" for k, v in (("split", split), ("order", order), ("group_by", group),
                                                         ("mode", mode)) if v not in (None, {}))
    return f"{words} (eval_args: {settings})"


#: RecBole's own config errors (a piece of the message) and the fix to add.
_RECBOLE_FIXES = [
    ("should be None when the loss_type is CE",
     "set --train_neg_sample_args=None (a CE loss scores every item), or --loss_type=BPR to train on sampled negatives"),
    ("Ranking metrics and value metrics can not be used at the same time",
     "set metrics to ranking metrics only (Recall, MRR, NDCG, Hit, Precision) or value metrics only (AUC, LogLoss)"),
    ("Full sort evaluation do not match value-based metrics",
     "value metrics (AUC, LogLoss) need labelled test cases: set eval_args mode to labeled, or use ranking metrics"),
    ("There is no metric named", "set metrics to RecBole metric names, e.g. [Recall, NDCG] or [AUC, LogLoss]"),
    ("only support repeatable recommendation", "set repeatable: True for a sequential model"),
    ("topk must be a positive integer", "set topk to a positive integer or a list of them, e.g. [10]"),
    ("must be a integer, list", "set topk to a positive integer or a list of them, e.g. [10]"),
    ("train_neg_sample_args", "set train_neg_sample_args to a dict such as {distribution: uniform, sample_num: 1}, or None"),
    ("eval_args", "set eval_args to a dict such as {split: {RS: [0.8, 0.1, 0.1]}, order: RO, mode: full}"),
    ("Either Model has attr 'input_type'", "set loss_type (CE or BPR) for this model"),
]


def recbole_config_error(error: Exception, model: str) -> ConfigError:
    """RecBole's own config error (a ValueError, NotImplementedError, ... raised by its ``Config``)
    as one line that says what RecBole rejected and how to fix it."""
    message = " ".join(str(error).split())
    fix = next((f for piece, f in _RECBOLE_FIXES if piece in message), None)
    return ConfigError(
        f"RecBole rejected the config of {model}: {message.rstrip('.')}. "
        + (f"Fix: {fix}." if fix else "Fix that key in your config file, config dict or on the command line.")
    )


def recbole_data_error(error: Exception, config) -> Optional[ConfigError]:
    """RecBole's error while it loads or splits a dataset, when the config is the cause, as one line
    (None when the error is not one of those)."""
    from recbole_mtl.errors import DataValidationError

    message = " ".join(str(error).split())
    name = config["dataset"]
    load_col = config["load_col"]
    inter_cols = None if load_col is None else list((load_col or {}).get("inter") or [])
    if isinstance(error, AttributeError) and "'NoneType' object has no attribute" in message:
        ids = [(k, config[k]) for k in ("USER_ID_FIELD", "ITEM_ID_FIELD")
               if inter_cols is not None and config[k] not in inter_cols]
        if ids:
            fields = " and ".join(f"{key} '{value}'" for key, value in ids)
            if config["derive_model_config"] is False:
                other = "or drop derive_model_config: False so that recbole-mtl loads what each model needs"
            elif "load_col" in (getattr(config, "external_config_dict", None) or {}):
                other = "or remove load_col from your config and recbole-mtl loads what each model needs"
            else:
                other = "or check that USER_ID_FIELD and ITEM_ID_FIELD name fields of the file"
            return DataValidationError(
                f"RecBole loaded {name}.inter without {fields}: load_col['inter'] is {_flow(inter_cols)}. Add "
                f"{'it' if len(ids) == 1 else 'them'} to load_col['inter'], {other}."
            )
        return DataValidationError(
            f"RecBole could not load {name} ({message}): a field the config names (USER_ID_FIELD "
            f"'{config['USER_ID_FIELD']}', ITEM_ID_FIELD '{config['ITEM_ID_FIELD']}') is not loaded. Check that "
            f"{name}.inter has them and that load_col ({_flow(load_col)}) keeps them.")
    if isinstance(error, ValueError) and "not in inter_feat" in message:
        return DataValidationError(
            f"RecBole cannot make 0/1 labels for {name}: {message.rstrip('.')}; threshold is "
            f"{_flow(config['threshold'])}. Set threshold to {{field: value}} with a float field of {name}.inter "
            f"that load_col keeps, or set interest_label_field and interest_threshold and leave threshold unset.")
    return None


def split_note(config, benchmark_args: str = "") -> str:
    """The line the command line prints when a RecBole model runs alone: its split, whether the
    multi-task models' figures compare with it, and the ``benchmark`` command that gives every model
    the same split."""
    model = config["model"]
    eval_args = config["eval_args"] or {}
    mode = eval_args.get("mode")
    mode = mode.get("test", mode.get("valid")) if isinstance(mode, dict) else mode
    same_split = "LS" in (eval_args.get("split") or {}) and str(eval_args.get("order", "")).upper() == "TO" \
        and eval_args.get("group_by") == "user"
    command = (f"`python run_recbole_mtl.py benchmark --dataset={config['dataset']} --models=MTLRec,{model}"
               f"{benchmark_args}`")
    head = f"note: {describe(model, config.model_class)} is evaluated on {describe_split(eval_args)}, RecBole's setting for its kind"
    if same_split and mode == "full":
        return (f"{head}: the split MTLRec, MMoE and PLE use too; {command} also gives every model the same seeds, "
                f"epochs and history length.")
    if same_split:
        return (f"{head}: the split MTLRec, MMoE and PLE use, but its test mode {mode} is not their interest task's "
                f"(labelled interactions), so the figures are not comparable; {command} trains every model on the "
                f"same split and scores it the same way.")
    return (f"{head}, while MTLRec, MMoE and PLE use leave-one-out by time, so figures from separate runs are not "
            f"comparable; {command} trains every model on the same split.")


def split_of(config) -> str:
    """How the run split the interactions (RecBole's eval_args but the evaluation mode), for runs.csv."""
    eval_args = config["eval_args"] or {}
    return json.dumps({k: eval_args.get(k) for k in ("split", "order", "group_by")}, sort_keys=True)
