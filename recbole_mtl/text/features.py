"""Load ``<dataset>.itememb`` PLM vectors for a RecBole dataset, checking everything a user can get wrong."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from recbole_mtl.data.feature_files import check_sidecar
from recbole_mtl.errors import TextFeatureError
from recbole_mtl.text.embed import EMB_FIELD, ID_FIELD


def load_item_vectors(dataset, folder: Path, dataset_name: str, plm: Optional[str] = None,
                      text_fields: Optional[Sequence[str]] = None, forbidden_fields: Sequence[str] = (),
                      fix_args: Sequence[str] = ()) -> torch.Tensor:
    """Vectors ``[item_num, P]`` aligned with the dataset's item ids (row 0, padding, is zero).

    Args:
        dataset: the RecBole dataset (its item-id token map).
        folder: the folder holding ``<dataset_name>.itememb`` (see ``feature_folder``).
        dataset_name: dataset name.
        plm / text_fields: what the config asks for; ``None`` accepts what the sidecar says.
        forbidden_fields: fields the vectors must not be built from (the category label).
        fix_args: extra ``--key=value`` of the regenerate command (the user's ``data_path``, ...).

    Raises:
        TextFeatureError: missing file or sidecar, sidecar not matching the config, wrong
            dimension, NaN/inf, unknown item ids, items without a vector. The message names the
            file (and line) and the command that regenerates it.
    """
    path, dim, fix = check_sidecar(folder, dataset_name, plm, text_fields, forbidden_fields, fix_args)
    return read_vectors(path, dim, dataset, dataset.iid_field, ID_FIELD, EMB_FIELD, fix, "item")


def read_vectors(path: Path, dim: int, dataset, field: str, id_column: str, emb_column: str, fix: str,
                 noun: str) -> torch.Tensor:
    """Vectors ``[dataset.num(field), dim]`` of a ``<id_column>:token, <emb_column>:float_seq`` file,
    aligned with the dataset's ids of ``field`` (row 0, padding, is zero); every id must have one.

    Raises:
        TextFeatureError: naming the file, line and field, and the command ``fix`` that regenerates it.
    """
    token_to_id = dataset.field2token_id[field]
    n = len(dataset.field2id_token[field])
    vectors = torch.zeros(n, dim)
    seen = torch.zeros(n, dtype=torch.bool)
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != [f"{id_column}:token", f"{emb_column}:float_seq"]:
            raise TextFeatureError(f"{path}, line 1: expected the header '{id_column}:token\\t{emb_column}:float_seq', "
                                   f"got {header}. Regenerate it with: {fix}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line:
                continue
            token, _, values = line.partition("\t")
            try:
                row = [float(v) for v in values.split(" ")]
            except ValueError:
                raise TextFeatureError(f"{path}, line {lineno}, field {emb_column}: not a list of numbers. "
                                       f"Regenerate it with: {fix}") from None
            if len(row) != dim:
                raise TextFeatureError(f"{path}, line {lineno}, field {emb_column}: {len(row)} values, the sidecar "
                                       f"says dimension {dim}. Regenerate it with: {fix}")
            if not all(math.isfinite(v) for v in row):
                raise TextFeatureError(f"{path}, line {lineno}, field {emb_column}: NaN or inf values. "
                                       f"Regenerate it with: {fix}")
            if token not in token_to_id:
                raise TextFeatureError(f"{path}, line {lineno}, field {id_column}: {noun} '{token}' is not in the "
                                       f"dataset. Regenerate it from the current .{noun} file with: {fix}")
            index = token_to_id[token]
            vectors[index] = torch.tensor(row)
            seen[index] = True
    missing = (~seen[1:]).sum().item()
    if missing:
        example = dataset.field2id_token[field][1:][(~seen[1:]).numpy()][:3].tolist()
        raise TextFeatureError(f"{path} has no vector for {missing} {noun}(s) of the dataset (e.g. {example}). "
                               f"Regenerate it with: {fix}")
    return vectors
