"""The text-feature files a run reads (``<dataset>.itememb`` and ``<dataset>.useremb``, written by
``embed``, each with a JSON sidecar): where they live, their names, the ``embed`` command that
rebuilds them, and the sidecar checks that ``validate`` runs before any data is loaded (and the
loaders of :mod:`recbole_mtl.text` again before they read the vectors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from recbole_mtl.errors import TextFeatureError

ITEM_SUFFIX = "itememb"
USER_SUFFIX = "useremb"
#: The version of the user sidecar's format this code reads and writes.
USER_FORMAT = 1


# -- the item vectors (``embed``) ------------------------------------------------------------------
def feature_folder(config) -> Path:
    """Where ``<dataset>.itememb`` lives: ``text_feature_dir/<dataset>`` if set, else beside the
    dataset's ``.inter`` file, except for datasets bundled inside the RecBole package (ml-100k),
    whose folder is not the user's: those use ``./dataset/<dataset>``."""
    dataset = config["dataset"]
    if config["text_feature_dir"]:
        return Path(config["text_feature_dir"]) / dataset
    data_folder = Path(config["data_path"])
    import recbole

    if Path(recbole.__file__).resolve().parent in data_folder.resolve().parents:
        return Path("dataset") / dataset
    return data_folder


def feature_paths(folder, dataset: str) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{dataset}.{ITEM_SUFFIX}", folder / f"{dataset}.{ITEM_SUFFIX}.json"


def regenerate_command(dataset: str, plm: Optional[str], fields: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The ``embed`` command that rebuilds the feature file (``extra``: e.g. ``--data_path=...``)."""
    cmd = f"python run_recbole_mtl.py embed --dataset {dataset}"
    for arg in extra:
        cmd += f" {arg}"
    if plm:
        cmd += f" --plm {plm}"
    if fields:
        cmd += " --text_fields " + " ".join(fields)
    return cmd


def check_sidecar(folder: Path, dataset_name: str, plm: Optional[str] = None,
                  text_fields: Optional[Sequence[str]] = None, forbidden_fields: Sequence[str] = (),
                  fix_args: Sequence[str] = ()) -> tuple[Path, int, str]:
    """Check that ``<dataset_name>.itememb`` and its sidecar exist and were made from what the run
    asks for (``plm``, ``text_fields``; ``None`` accepts the sidecar's) and not from a label field.

    Runs before any data is loaded (``validate``) and again when the vectors are loaded.

    Returns:
        ``(feature file, dimension, the command that regenerates it)``.

    Raises:
        TextFeatureError: what differs, the command that regenerates the file and the setting that
            uses it as it is.
    """
    path, side = feature_paths(folder, dataset_name)
    fix = regenerate_command(dataset_name, plm, list(text_fields or []), fix_args)
    if not path.is_file() or not side.is_file():
        missing = path if not path.is_file() else side
        raise TextFeatureError(f"text features are on but {missing} is missing. Create it with: {fix}")
    try:
        meta = json.loads(side.read_text())
        dim, fields, used_plm = int(meta["dim"]), list(meta["text_fields"]), meta["plm"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TextFeatureError(f"{side} is unreadable ({e}). Regenerate it with: {fix}") from None
    if plm and plm != used_plm:
        raise TextFeatureError(f"{path} was made with plm '{used_plm}' but the config asks for '{plm}'. "
                               f"Regenerate it with: {fix}, or set plm: {used_plm} to use the file as it is.")
    if text_fields and list(text_fields) != fields:
        raise TextFeatureError(f"{path} was made from text fields {fields} but the config asks for "
                               f"{list(text_fields)} (text_fields; {side.name} records the fields the vectors "
                               f"were embedded from). Re-run embed with the "
                               f"fields you want: {fix}; or set text_fields: [{', '.join(fields)}] to use the "
                               "vectors as they are.")
    leaked = [f for f in fields if f in forbidden_fields]
    if leaked:
        raise TextFeatureError(
            f"{path} was made from {leaked}, the category task's label field: the model would read the labels "
            f"it has to predict. Regenerate without it, e.g.: "
            f"{regenerate_command(dataset_name, plm, [f for f in fields if f not in leaked], fix_args)}"
        )
    return path, dim, fix


# -- the user vectors (``embed --users_only``) -----------------------------------------------------
def user_feature_paths(folder, dataset: str) -> tuple[Path, Path]:
    folder = Path(folder)
    return folder / f"{dataset}.{USER_SUFFIX}", folder / f"{dataset}.{USER_SUFFIX}.json"


def user_regenerate_command(dataset: str, plm: Optional[str], fields: Optional[Sequence[str]],
                            review_field: Optional[str], extra: Sequence[str] = ()) -> str:
    """The ``embed`` command that rebuilds the user file (``extra``: e.g. ``--data_path=...``)."""
    cmd = f"python run_recbole_mtl.py embed --dataset {dataset} --users_only"
    for arg in extra:
        cmd += f" {arg}"
    if plm:
        cmd += f" --plm {plm}"
    if fields is not None:
        cmd += " --user_text_fields" + "".join(f" {f}" for f in fields)
    if review_field:
        cmd += f" --user_review_field {review_field}"
    return cmd


def fix_args(config) -> list[str]:
    """``--key=value`` of the user's own ``data_path``/``text_feature_dir`` for the regenerate command."""
    external = getattr(config, "external_config_dict", None) or {}
    return [f"--{k}={external[k]}" for k in ("data_path", "text_feature_dir") if external.get(k)]


def check_user_sidecar(folder: Path, dataset_name: str, plm: Optional[str] = None,
                       text_fields: Optional[Sequence[str]] = None, review_field: Optional[str] = None,
                       fix_args: Sequence[str] = ()) -> tuple[Path, dict, str]:
    """Check that ``<dataset_name>.useremb`` and its sidecar exist and were made from what the run
    asks for (``plm`` and ``text_fields``: ``None`` accepts the sidecar's; ``review_field`` must match,
    ``None`` included). Runs before any data is loaded (``validate``) and again when loading.

    Returns:
        ``(feature file, sidecar dict, the command that regenerates it)``.
    """
    path, side = user_feature_paths(folder, dataset_name)
    fix = user_regenerate_command(dataset_name, plm, text_fields, review_field, fix_args)
    if not path.is_file() or not side.is_file():
        missing = path if not path.is_file() else side
        raise TextFeatureError(f"user_text_features is on but {missing} is missing. Create it with: {fix}")
    try:
        meta = json.loads(side.read_text())
        int(meta["dim"]), list(meta["user_text_fields"]), meta["plm"], meta["user_review_field"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TextFeatureError(f"{side} is unreadable ({e}). Regenerate it with: {fix}") from None
    if meta.get("format") != USER_FORMAT:
        raise TextFeatureError(f"{side} has format {meta.get('format')}, this version reads {USER_FORMAT}. "
                               f"Regenerate it with: {fix}")
    if plm and plm != meta["plm"]:
        raise TextFeatureError(f"{path} was made with plm '{meta['plm']}' but the config asks for '{plm}'. "
                               f"Regenerate it with: {fix}, or set plm: {meta['plm']} to use the file as it is.")
    if text_fields is not None and list(text_fields) != list(meta["user_text_fields"]):
        raise TextFeatureError(
            f"{path} was made from user text fields {meta['user_text_fields']} but the config asks for "
            f"{list(text_fields)} (user_text_fields; {side.name} records the fields the vectors were embedded "
            f"from). Re-run embed with the fields you want: {fix}; or set user_text_fields: "
            f"[{', '.join(meta['user_text_fields'])}] to use the vectors as they are.")
    if (review_field or None) != (meta["user_review_field"] or None):
        raise TextFeatureError(
            f"{path} was made with user_review_field {meta['user_review_field']!r} but the config sets "
            f"{review_field!r}. Re-run embed with the setting you want: {fix}; or set user_review_field: "
            f"{meta['user_review_field'] or '~'} to use the vectors as they are.")
    return path, meta, fix
