"""The whole dataset a run will load (:func:`validate_dataset`): every atomic file it reads, the
fields the config names, what each task needs, and the text-feature files when they are on."""

from __future__ import annotations

import heapq
from logging import getLogger
from pathlib import Path
from typing import Optional

from recbole_mtl.data.labels import label_sources
from recbole_mtl.data.validate.messages import _clip
from recbole_mtl.data.validate.reader import check_file
from recbole_mtl.data.validate.rules import FileRules
from recbole_mtl.errors import DataValidationError

#: How many example ids a warning shows.
_EXAMPLES = 3


# -- the whole dataset ---------------------------------------------------------------------------
def _load_col(config, source: str) -> Optional[set]:
    """The fields RecBole loads from ``source`` (``None``: all; empty: the file is skipped)."""
    load_col = config["load_col"]
    if load_col is None:
        return None
    return set(load_col.get(source) or []) if source in load_col else set()


def _user_set(config, key: str) -> bool:
    return key in (getattr(config, "external_config_dict", None) or {})


def _is_sequential(config) -> bool:
    from recbole.utils import ModelType

    return config["MODEL_TYPE"] == ModelType.SEQUENTIAL


def _plugin_tasks(config) -> list:
    from recbole_mtl.utils import plugin_model_names

    if config["model"] not in plugin_model_names():
        return []
    wanted = config["tasks"] or []
    return [wanted] if isinstance(wanted, str) else list(wanted)


def validate_dataset(config) -> list[str]:
    """Check every atomic file ``config``'s run will load; return warnings, raise on errors.

    Args:
        config: a resolved RecBole/recbole_mtl ``Config``.

    Returns:
        Warning messages (also logged), e.g. ids in ``.item`` that no interaction uses.

    Raises:
        DataValidationError: a malformed file or a configured field that is absent.
    """
    name = config["dataset"]
    folder = Path(config["data_path"])
    sep = config["field_separator"] or "\t"
    seq_sep = config["seq_separator"] or " "
    encoding = config["encoding"] or "utf-8"
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    tasks = _plugin_tasks(config)
    warnings: list[str] = []

    inter_rules = FileRules(
        required_fields={uid: "every interaction needs (config key USER_ID_FIELD).",
                         iid: "every interaction needs (config key ITEM_ID_FIELD)."},
        nonempty_tokens={uid, iid}, collect_ids={uid, iid}, load_col=_load_col(config, "inter"), need_rows=True,
    )
    for key in ("RATING_FIELD", "TIME_FIELD", "LABEL_FIELD"):
        if config[key]:
            inter_rules.required_values.add(config[key])
    threshold = config["threshold"]
    if isinstance(threshold, dict):
        for f in threshold:
            inter_rules.required_fields[f] = f"the config key `threshold` ({_clip(threshold)}) turns into labels."
            inter_rules.required_values.add(f)
    for source in label_sources(tasks):
        label = config[source.config_key]
        if source.file != "inter" or not label:
            continue
        inter_rules.required_values.add(label)
        if _user_set(config, source.config_key):
            inter_rules.required_fields[label] = (
                f"the config key {source.config_key} names as {source.meaning}; set it to a float field "
                "of this file (e.g. rating)."
            )

    order = str((config["eval_args"] or {}).get("order", "")).upper()
    time_field = config["TIME_FIELD"]
    if order == "TO" or _is_sequential(config):
        why = ("orders each user's interactions (eval_args order 'TO' / a sequential model); "
               "add it to the file, or change eval_args order to 'RO'.")
        if time_field:
            inter_rules.required_fields[time_field] = why
            loaded = inter_rules.load_col
            if loaded is not None and time_field not in loaded:
                raise DataValidationError(
                    f"config key load_col loads {_clip(sorted(loaded))} from {name}.inter but not the time field "
                    f"'{time_field}', which {why.split(';')[0]}. Add '{time_field}' to load_col['inter']."
                )

    benchmark = config["benchmark_filename"]
    inter_files = [folder / f"{name}.{part}.inter" for part in benchmark] if benchmark else [folder / f"{name}.inter"]
    users, items = set(), set()
    headers: dict = {}  # suffix -> the header of the file RecBole will read (None: not read)
    for path in inter_files:
        if not path.is_file():
            raise DataValidationError(
                f"{path}: the interaction file is missing. Put {path.name} in {folder}"
                + (" (config key benchmark_filename names it)." if benchmark else ".")
            )
        report = check_file(path, inter_rules, sep, seq_sep, encoding)
        headers.setdefault("inter", report.header)
        users |= report.ids.get(uid, set())
        items |= report.ids.get(iid, set())

    side_files = [("user", uid, users, "users"), ("item", iid, items, "items")]
    item_labels = [s for s in label_sources(tasks) if s.file == "item" and config[s.config_key]]
    text_fields = list(config["text_fields"] or []) if config["text_features"] else []
    for suffix, id_field, used, noun in side_files:
        path = folder / f"{name}.{suffix}"
        rules = FileRules(required_fields={id_field: f"identifies each row of the .{suffix} file."},
                          nonempty_tokens={id_field}, collect_ids={id_field}, load_col=_load_col(config, suffix),
                          unique_ids=id_field)
        if suffix == "item":
            for source in item_labels:
                if _user_set(config, source.config_key):
                    rules.required_fields[config[source.config_key]] = (
                        f"the config key {source.config_key} names as {source.meaning}; set it to a token or "
                        "token_seq field of this file."
                    )
            for f in text_fields:
                rules.required_fields[f] = "the config key text_fields joins into each item's text."
        if not path.is_file():
            missing = [f for f in rules.required_fields if f != id_field]
            if missing:
                raise DataValidationError(
                    f"{path}: the file is missing, but the config names its field(s) "
                    f"{', '.join(missing)}. Add {path.name} or unset those keys."
                )
            continue
        if rules.load_col is not None and not rules.load_col:
            continue  # load_col leaves this file out: RecBole does not read it
        report = check_file(path, rules, sep, seq_sep, encoding)
        headers[suffix] = report.header
        unused = report.ids.get(id_field, set()) - used
        if unused:
            examples = ", ".join(repr(x) for x in heapq.nsmallest(_EXAMPLES, unused))
            warnings.append(
                f"{path}: {len(unused)} of {len(report.ids[id_field])} {noun} have no interaction in "
                f"{name}.inter (e.g. {examples}); RecBole keeps their rows but nothing trains them."
            )

    for suffix in config["additional_feat_suffix"] or []:
        path = folder / f"{name}.{suffix}"
        if path.is_file() and (_load_col(config, suffix) is None or _load_col(config, suffix)):
            check_file(path, FileRules(load_col=_load_col(config, suffix)), sep, seq_sep, encoding)

    warnings += check_tasks(config, tasks, headers)
    if config["text_features"] and tasks:
        check_text_features(config, tasks)
    if config["user_text_features"] and tasks:
        check_user_text_features(config)

    logger = getLogger(__name__)
    for message in warnings:
        logger.warning(message)
    return warnings


def _task_problem(config, source, headers: dict) -> Optional[str]:
    """Why the data cannot give ``source``'s task its labels, or None."""
    key, field_name = source.config_key, config[source.config_key]
    kind = "a float field of .inter (e.g. rating)" if source.file == "inter" else "a token or token_seq field of .item"
    if not field_name:
        return f"no {key} is set; set it to {kind}"
    header = headers.get(source.file)
    file = f"{config['dataset']}.{source.file}"
    if header is None:
        return f"{file} is missing or not loaded, so there is no '{_clip(field_name)}' field; add it, or set {key}"
    if field_name not in header:
        return f"{file} has no field '{_clip(field_name)}' (named by {key}); set {key} to {kind}"
    wanted = ("float",) if source.file == "inter" else ("token", "token_seq")
    if header[field_name] not in wanted:
        return f"{key} '{_clip(field_name)}' is a {header[field_name]} field of {file}; it must be {kind}"
    loaded = _load_col(config, source.file)
    if loaded is not None and field_name not in loaded:
        return f"load_col leaves '{_clip(field_name)}' out of {file}; add it to load_col['{source.file}']"
    return None


def check_tasks(config, tasks: list, headers: dict) -> list[str]:
    """Each task of ``tasks`` whose labels the data cannot give: an error when the user asked for it
    (set ``tasks`` or the task's label key), else a warning (the run switches the task off).

    Args:
        headers: file suffix (``inter``, ``item``) -> the checked file's header, absent if not read.
    """
    warnings = []
    for source in label_sources(tasks):
        problem = _task_problem(config, source, headers)
        if problem is None:
            continue
        asked = [k for k in ("tasks", source.config_key) if _user_set(config, k) and config[k]]
        if asked:
            raise DataValidationError(
                f"task '{source.task}' cannot run on dataset '{config['dataset']}': {problem}. Your config sets "
                f"{' and '.join(asked)}, so the run stops instead of training without it: give the data that "
                f"field, or drop '{source.task}' from tasks."
            )
        warnings.append(f"task '{source.task}' (one of the model's default tasks) cannot run on dataset "
                        f"'{config['dataset']}' and will be switched off: {problem}.")
    return warnings


def check_text_features(config, tasks: list) -> None:
    """With ``text_features`` on: the feature file and its sidecar exist and were made from the
    fields (and model) this run would use. Raises :class:`TextFeatureError`."""
    from recbole_mtl.data.feature_files import check_sidecar, feature_folder

    external = getattr(config, "external_config_dict", None) or {}
    forbidden = [config[s.config_key] for s in label_sources(tasks) if s.file == "item" and config[s.config_key]]
    check_sidecar(feature_folder(config), config["dataset"], plm=config["plm"], text_fields=config["text_fields"],
                  forbidden_fields=forbidden,
                  fix_args=[f"--{k}={external[k]}" for k in ("data_path", "text_feature_dir") if external.get(k)])


def check_user_text_features(config) -> None:
    """With ``user_text_features`` on: the user feature file and its sidecar exist and were made from
    the fields, review field and model this run would use. Raises :class:`TextFeatureError`."""
    from recbole_mtl.data.feature_files import check_user_sidecar, feature_folder, fix_args

    check_user_sidecar(feature_folder(config), config["dataset"], plm=config["plm"],
                       text_fields=config["user_text_fields"], review_field=config["user_review_field"] or None,
                       fix_args=fix_args(config))
