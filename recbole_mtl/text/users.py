"""User text vectors: ``embed --users`` writes ``<dataset>.useremb``; the models read it with
``user_text_features: True``.

One text per user of the dataset, from

* the user's profile fields of the ``.user`` file (``user_text_fields``; ml-100k:
  ``"age: 24. gender: M. occupation: technician"``), and/or
* the review text of the user's interactions (``user_review_field``, a ``token`` or ``token_seq``
  field of ``.inter``) in the **training part** of RecBole's split only, most recent first.

The training part is not recomputed here: the run's dataset is built by the same code the models
use (the model's dataset class, its filters, ``dataset.build()`` with the run's ``eval_args``, and
:class:`~recbole_mtl.data.windows.UserWindows` to read each user's time-ordered training
sequence). The review column is taken out of the dataset as soon as it is loaded and replaced by
a row-number token, so each training interaction of the split names the file row whose text it
uses, and no validation or test interaction can contribute. A digest of every user's training
item sequence is stored in the sidecar and checked against the model's own training split when
the vectors are loaded, so a run whose split differs (other ``eval_args``, filters, data) refuses
the file instead of reading text from its validation or test interactions.

A text is cut to the language model's maximum length (``max_seq_length`` tokens, most recent
reviews kept) before it is encoded. The file (``user_emb_id:token``, ``user_emb:float_seq``) and
its sidecar ``<dataset>.useremb.json`` are written atomically; a rerun with the same inputs does
nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from logging import getLogger
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from recbole_mtl.checkpoint import atomic_open
from recbole_mtl.data.feature_files import USER_FORMAT, check_user_sidecar, fix_args, user_feature_paths
from recbole_mtl.errors import TextFeatureError
from recbole_mtl.text.embed import _sha256, default_plm, encode, load_plm, read_texts

EMB_FIELD = "user_emb"
#: The id column, named apart from ``user_id`` for the same reason as ``item_emb_id`` (RecBole's
#: ``alias_of_user_id: [user_emb_id]`` joins it to the user ids).
ID_FIELD = "user_emb_id"
#: The token column that replaces the review text in the dataset ``embed`` builds: each
#: interaction's row number in the loaded ``.inter`` data.
ROW_FIELD = "recbole_mtl_row"
NO_TEXT = "(no text)"


@dataclass(frozen=True)
class UserSidecar:
    """What a user feature file was made from; a different value means it must be regenerated."""

    plm: str
    user_text_fields: list
    user_review_field: Optional[str]
    dim: int
    users: int
    max_tokens: int
    user_file_sha256: Optional[str]
    inter_file_sha256: Optional[str]
    #: digest of every user's training item sequence (reviews only): see :func:`split_digest`
    train_split_sha256: Optional[str]
    eval_args: Optional[dict]
    format: int = USER_FORMAT


# -- the training split ---------------------------------------------------------------------------
def split_digest(train_dataset, max_len: int) -> str:
    """SHA-256 of every user's training item sequence (user token, then its item tokens in time
    order, users sorted by token), read from a RecBole sequential training split."""
    from recbole_mtl.data.windows import UserWindows

    windows = UserWindows.from_dataset(train_dataset, int(max_len))
    uid_tokens = train_dataset.field2id_token[train_dataset.uid_field]
    iid_tokens = train_dataset.field2id_token[train_dataset.iid_field]
    starts, ends = windows.starts.numpy(), windows.ends.numpy()
    items = windows.items.numpy()
    lines = sorted(f"{uid_tokens[u]}\t{' '.join(iid_tokens[items[starts[k]:ends[k]]].tolist())}\n"
                   for k, u in enumerate(windows.users.numpy()))
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def _review_dataset_class(base, review_field: str):
    """``base`` (the run's dataset class) that moves ``review_field`` out of the loaded interactions
    into ``review_texts`` and puts each row's number in the token field ``ROW_FIELD`` instead."""
    from recbole.utils import FeatureSource, FeatureType

    class ReviewTextDataset(base):
        keeps_review_text = True

        def _load_data(self, token, dataset_path):
            super()._load_data(token, dataset_path)
            feat = self.inter_feat
            if feat is None or review_field not in feat.columns:
                raise TextFeatureError(
                    f"user_review_field '{review_field}' is not a loaded field of {token}.inter; set it to a token "
                    "or token_seq text field of the .inter file (and keep it out of unload_col), or unset it.")
            ftype = self.field2type[review_field]
            if ftype == FeatureType.TOKEN_SEQ:
                texts = [" ".join(str(w) for w in words) for words in feat[review_field].values]
            elif ftype == FeatureType.TOKEN:
                texts = ["" if v is None or v != v else str(v) for v in feat[review_field].values]
            else:
                raise TextFeatureError(f"user_review_field '{review_field}' is a {ftype.value} field of {token}.inter; "
                                       "review text must be a token or token_seq field.")
            self.review_texts = texts
            self._del_col(feat, review_field)
            feat[ROW_FIELD] = np.arange(len(feat)).astype(str)
            self.set_field_property(ROW_FIELD, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)

    ReviewTextDataset.__name__ = base.__name__
    return ReviewTextDataset


def _run_dataset(config, review_field: Optional[str]):
    """The run's dataset (same class, filters and seed as :func:`recbole_mtl.pipeline.build_data_and_model`),
    with the review column moved aside when ``review_field`` is set."""
    from recbole.utils import init_seed

    from recbole_mtl.data.build import build_dataset
    from recbole_mtl.hardening import dataset_class_of

    base = dataset_class_of(config)
    if not review_field:
        init_seed(config["seed"], config["reproducibility"])
        return build_dataset(config, lambda c: base(c))
    load_col = config["load_col"]
    if isinstance(load_col, dict) and "inter" in load_col and review_field not in load_col["inter"]:
        config["load_col"] = {**load_col, "inter": list(load_col["inter"]) + [review_field]}
    try:
        init_seed(config["seed"], config["reproducibility"])
        return build_dataset(config, lambda c: _review_dataset_class(base, review_field)(c))
    finally:
        config["load_col"] = load_col


def training_reviews(config, review_field: str) -> tuple[object, dict, str]:
    """``(dataset, user token -> review texts of the user's training interactions, oldest first,
    split digest)``: the training part of the split the models train on (see the module docstring)."""
    from recbole_mtl.data.windows import UserWindows

    dataset = _run_dataset(config, review_field)
    train = dataset.build()[0]  # what data_preparation does: the same training split as the models'
    max_len = int(config["MAX_ITEM_LIST_LENGTH"])
    windows = UserWindows.from_dataset(train, max_len)
    rows = windows.fields[ROW_FIELD].numpy()
    row_tokens = dataset.field2id_token[ROW_FIELD]
    uid_tokens = dataset.field2id_token[dataset.uid_field]
    starts, ends = windows.starts.numpy(), windows.ends.numpy()
    texts = dataset.review_texts
    reviews = {}
    for k, u in enumerate(windows.users.numpy()):
        own = [texts[int(row_tokens[r])] for r in rows[starts[k]:ends[k]]]
        reviews[str(uid_tokens[u])] = [t for t in own if t.strip()]
    return dataset, reviews, split_digest(train, max_len)


# -- texts ----------------------------------------------------------------------------------------
def user_text(profile: Optional[str], reviews_oldest_first: Sequence[str], max_words: Optional[int] = None) -> str:
    """``"<profile>. reviews: <most recent> | <the one before> | ..."``, at most ``max_words`` words
    (the most recent reviews kept); ``(no text)`` when there is nothing."""
    parts = [profile] if profile and profile != NO_TEXT else []
    kept, words = [], len(profile.split()) if parts else 0
    for review in reversed(list(reviews_oldest_first)):
        if max_words is not None and words >= max_words:
            break
        tokens = review.split()
        if max_words is not None:
            tokens = tokens[:max(0, max_words - words)]
        kept.append(" ".join(tokens))
        words += len(tokens)
    if kept:
        parts.append("reviews: " + " | ".join(kept))
    return ". ".join(parts) if parts else NO_TEXT


def cut_to_model(texts: list[str], model) -> list[str]:
    """Each text cut where the model's tokenizer reaches ``max_seq_length`` (special tokens included)."""
    tokenizer, limit = getattr(model, "tokenizer", None), getattr(model, "max_seq_length", None)
    if tokenizer is None or not limit or not getattr(tokenizer, "is_fast", False):
        return texts  # the model truncates at its own limit
    keep = max(1, int(limit) - 2)  # [CLS] ... [SEP]
    out = []
    for start in range(0, len(texts), 1024):
        chunk = texts[start:start + 1024]
        encoded = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
        for text, offsets in zip(chunk, encoded["offset_mapping"]):
            out.append(text if len(offsets) <= keep else text[:offsets[keep - 1][1]])
    return out


def embed_users(config, out_folder: Path, plm: Optional[str] = None, text_fields: Optional[Sequence[str]] = None,
                review_field: Optional[str] = None, batch_size: int = 64, show_progress: bool = True) -> dict:
    """Write ``out_folder/<dataset>.useremb`` (and its sidecar) unless an up-to-date one exists.

    Args:
        config: the run's config (dataset, ``data_path``, split and filters).
        text_fields: ``.user`` fields of the profile text (``None``: every token/token_seq field but
            the id; ``[]``: no profile).
        review_field: ``.inter`` field with review text (``None``: no reviews).

    Returns:
        ``{"path", "sidecar", "skipped", "dim", "users", "texts"}`` (``texts``: user token -> text
        encoded; empty when skipped).
    """
    logger = getLogger()
    name = config["dataset"]
    plm = plm or default_plm()
    uid = config["USER_ID_FIELD"]
    separator = config["field_separator"] or "\t"
    user_file = Path(config["data_path"]) / f"{name}.user"
    inter_file = Path(config["data_path"]) / f"{name}.inter"
    if text_fields is not None and len(text_fields) == 0 and not review_field:
        raise TextFeatureError("no user text: user_text_fields is empty and no user_review_field is set; name "
                               "profile fields of the .user file (--user_text_fields) or a review field of the "
                               ".inter file (--user_review_field).")
    profiles, fields = {}, []
    if text_fields is None and not user_file.is_file():
        if not review_field:
            raise TextFeatureError(f"no user text: {user_file} does not exist and no user_review_field is set; "
                                   "add a .user file with profile fields or name a review field of the .inter file "
                                   "(--user_review_field).")
    elif text_fields is None or len(text_fields):
        ids, texts, fields = read_texts(user_file, text_fields, uid, separator, (), "user", "--user_text_fields")
        profiles = dict(zip(ids, texts))
    if review_field and not inter_file.is_file():
        raise TextFeatureError(f"user_review_field is set but {inter_file} does not exist (review text is read from "
                               "the .inter file; pre-split benchmark files are not supported).")
    digests = {"user_file_sha256": _sha256(user_file) if fields else None,
               "inter_file_sha256": _sha256(inter_file) if review_field else None}
    if review_field:
        dataset, reviews, split = training_reviews(config, review_field)
    else:
        dataset, reviews, split = _run_dataset(config, None), {}, None
    users = [str(t) for t in dataset.field2id_token[dataset.uid_field][1:]]
    eval_args = dict(config["eval_args"]) if review_field else None
    Path(out_folder).mkdir(parents=True, exist_ok=True)
    out, side = user_feature_paths(out_folder, name)
    if out.is_file() and side.is_file():
        try:
            old = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old and old.get("plm") == plm and old.get("user_text_fields") == fields and \
                old.get("user_review_field") == review_field and old.get("format") == USER_FORMAT and \
                old.get("user_file_sha256") == digests["user_file_sha256"] and \
                old.get("inter_file_sha256") == digests["inter_file_sha256"] and \
                old.get("train_split_sha256") == split and old.get("users") == len(users):
            logger.info(f"{out} is up to date (same model, fields, files and split): nothing to do")
            return {"path": str(out), "sidecar": str(side), "skipped": True, "dim": old["dim"], "users": old["users"],
                    "texts": {}}
    model = load_plm(plm)
    limit = int(getattr(model, "max_seq_length", 0) or 512)
    texts = [user_text(profiles.get(u), reviews.get(u, ()), max_words=limit)  # a word is >= 1 token
             for u in users]
    texts = cut_to_model(texts, model)
    vectors = encode(texts, model, batch_size=batch_size, show_progress=show_progress)
    if not np.isfinite(vectors).all():
        raise TextFeatureError(f"the model {plm} produced NaN/inf vectors; check the model files.")
    sidecar = UserSidecar(plm=plm, user_text_fields=list(fields), user_review_field=review_field,
                          dim=int(vectors.shape[1]), users=len(users), max_tokens=limit,
                          train_split_sha256=split, eval_args=eval_args, **digests)
    with atomic_open(out) as f:
        f.write(f"{ID_FIELD}:token\t{EMB_FIELD}:float_seq\n")
        for user, vec in zip(users, vectors):
            f.write(user + "\t" + " ".join(f"{x:.7g}" for x in vec) + "\n")
    with atomic_open(side) as f:
        json.dump(asdict(sidecar), f, indent=2)
    logger.info(f"wrote {len(users)} user vectors of dimension {vectors.shape[1]} to {out}")
    return {"path": str(out), "sidecar": str(side), "skipped": False, "dim": sidecar.dim, "users": sidecar.users,
            "texts": dict(zip(users, texts))}


# -- loading ----------------------------------------------------------------------------------------
def load_user_vectors(config, dataset) -> torch.Tensor:
    """Vectors ``[user_num, P]`` aligned with the dataset's user ids (row 0, padding, is zero).

    Args:
        config: the run's config (``user_text_fields``, ``user_review_field``, ``plm``, folders).
        dataset: the model's dataset: RecBole's training split (its user-id token map, and with
            review text the training sequences the file must have been made from).

    Raises:
        TextFeatureError: missing file or sidecar, sidecar not matching the config, input files
            changed since, another training split, wrong dimension, NaN/inf, unknown users, users
            without a vector. The message names the file (and line) and the ``embed`` command.
    """
    from recbole_mtl.data.feature_files import feature_folder
    from recbole_mtl.text.features import read_vectors

    name = config["dataset"]
    review_field = config["user_review_field"] or None
    path, meta, fix = check_user_sidecar(feature_folder(config), name, config["plm"], config["user_text_fields"],
                                         review_field, fix_args(config))
    data = Path(config["data_path"])
    for key, file in (("user_file_sha256", data / f"{name}.user"), ("inter_file_sha256", data / f"{name}.inter")):
        if meta.get(key) and (not file.is_file() or _sha256(file) != meta[key]):
            raise TextFeatureError(f"{path} was made from another version of {file} (its hash in {path.name}.json "
                                   f"differs). Regenerate it with: {fix}")
    if review_field:
        digest = split_digest(dataset, int(config["MAX_ITEM_LIST_LENGTH"]))
        if digest != meta.get("train_split_sha256"):
            raise TextFeatureError(
                f"{path} holds review text of another training split than this run's (eval_args "
                f"{meta.get('eval_args')} when embedded, {dict(config['eval_args'])} now, or other filters or "
                f"data): its text could come from this run's validation or test interactions. Regenerate it "
                f"with the config of this run (the same --config_files and keys): {fix}")
    return read_vectors(path, int(meta["dim"]), dataset, dataset.uid_field, ID_FIELD, EMB_FIELD, fix, "user")
