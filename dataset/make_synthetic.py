"""Write a synthetic recommendation dataset as RecBole atomic files, streamed in chunks.

    python dataset/make_synthetic.py --users 10000 --items 50000 --interactions 1000000 --seed 7 \
        --out dataset/synthetic

writes ``<out>/<name>.inter`` (``user_id, item_id, rating, timestamp``), ``<name>.item``
(``item_id, categories:token_seq, title:token_seq``) and ``<name>.user`` (``user_id, segment``),
``<name>`` being the last component of ``--out``; train on it with
``--dataset=<name> --data_path=<parent of out> --config_files=properties/dataset/synthetic.yaml``.

How the data is made (so that every task has something to learn):

* every user and item has a latent factor (``--factors`` dims, standard normal);
* items are drawn by a power-law popularity (``--popularity``) and, with probability
  ``--affinity``, among ``--candidates`` popular items the one closest to the user's factor,
  so histories carry the user's taste;
* the rating (1..5) is a noisy sigmoid of the user-item factor product: ``rating >= 4`` is
  an interest label correlated with the factors;
* an item's categories (multi-label, of ``--categories``) are the top 1-3 of a fixed random
  projection of its factor, plus noise, so they can be predicted from what the item is;
* its title is 3-6 words: one word tied to each of its categories and random filler words;
* a user's ``segment`` is the argmax of a projection of the user's factor.

Memory: only the factor matrices (``(users + items) x factors`` float32) and one chunk of
``CHUNK`` rows live in memory, so 100M interactions need no more than 1M.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

N_SEGMENTS = 8
#: Rows generated and written at a time; each chunk has its own random stream.
CHUNK = 100_000
FILLER_WORDS = 500
START_TIME = 1_600_000_000


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    """An independent generator per (purpose, chunk): same seed, same files."""
    return np.random.default_rng([seed, stream, chunk])


def item_factors(items: int, factors: int, seed: int) -> np.ndarray:
    """``[items, factors]`` standard-normal item factors."""
    return _rng(seed, 1).standard_normal((items, factors), dtype=np.float32)


def user_factors(users: int, factors: int, seed: int) -> np.ndarray:
    """``[users, factors]`` standard-normal user factors."""
    return _rng(seed, 2).standard_normal((users, factors), dtype=np.float32)


def category_projection(factors: int, categories: int, seed: int) -> np.ndarray:
    """``[factors, categories]``: the fixed map from item factors to category scores."""
    return _rng(seed, 3).standard_normal((factors, categories), dtype=np.float32)


def item_categories(factor: np.ndarray, projection: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    """Top 1-3 categories of each item's (noisy) projected factor.

    Args:
        factor: ``[n, F]`` item factors.
        projection: ``[F, C]``.
    Returns:
        one list of category indices per item (first = strongest).
    """
    scores = factor @ projection + 0.5 * rng.standard_normal((len(factor), projection.shape[1]), dtype=np.float32)
    order = np.argsort(-scores, axis=1)[:, :3]
    counts = rng.integers(1, 4, size=len(factor))
    return [list(row[:k]) for row, k in zip(order, counts)]


def _popular_items(n: int, items: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` 0-based item indices with power-law popularity, popular ids spread over the range."""
    rank = np.minimum((items * rng.random(n) ** exponent).astype(np.int64), items - 1)
    return (rank * 2_654_435_761) % items  # a fixed bijection when gcd(multiplier, items) == 1


def _bijective_items(items: int) -> bool:
    return np.gcd(2_654_435_761, items) == 1


def interaction_chunks(args: argparse.Namespace, users_f: np.ndarray, items_f: np.ndarray
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(user, item, rating, timestamp)`` arrays of at most ``CHUNK`` rows."""
    done, chunk = 0, 0
    while done < args.interactions:
        n = min(CHUNK, args.interactions - done)
        rng = _rng(args.seed, 10, chunk)
        user = rng.integers(0, args.users, size=n)
        popular = _popular_items(n * args.candidates, args.items, args.popularity, rng).reshape(n, args.candidates)
        affinity = np.einsum("nf,ncf->nc", users_f[user], items_f[popular])  # [n, candidates]
        best = popular[np.arange(n), affinity.argmax(axis=1)]
        take_best = rng.random(n) < args.affinity
        item = np.where(take_best, best, popular[:, 0])
        score = np.einsum("nf,nf->n", users_f[user], items_f[item]) / np.sqrt(items_f.shape[1])
        prob = 1.0 / (1.0 + np.exp(-2.0 * score))
        rating = np.clip(np.rint(1 + 4 * prob + rng.normal(0, 0.7, n)), 1, 5).astype(np.int64)
        # time runs forward through the file, so each user's history is in order
        timestamp = START_TIME + (done + np.arange(n)) * 10 + rng.integers(0, 10, n)
        yield user, item, rating, timestamp
        done += n
        chunk += 1


def _write_lines(handle, lines: Sequence[str]) -> None:
    handle.write("\n".join(lines))
    handle.write("\n")


def write_inter(path: Path, args: argparse.Namespace, users_f: np.ndarray, items_f: np.ndarray,
                progress: bool) -> int:
    rows, start = 0, time.time()
    with open(path, "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, ts in interaction_chunks(args, users_f, items_f):
            _write_lines(f, [f"{u + 1}\t{i + 1}\t{r}\t{t}" for u, i, r, t in
                             zip(user.tolist(), item.tolist(), rating.tolist(), ts.tolist())])
            rows += len(user)
            if progress:
                rate = rows / max(time.time() - start, 1e-9)
                print(f"\r{path.name}: {rows:,}/{args.interactions:,} interactions ({rate:,.0f}/s)",
                      end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return rows


def write_items(path: Path, args: argparse.Namespace, items_f: np.ndarray) -> int:
    projection = category_projection(args.factors, args.categories, args.seed)
    with open(path, "w") as f:
        f.write("item_id:token\tcategories:token_seq\ttitle:token_seq\n")
        for chunk, lo in enumerate(range(0, args.items, CHUNK)):
            hi = min(lo + CHUNK, args.items)
            rng = _rng(args.seed, 20, chunk)
            cats = item_categories(items_f[lo:hi], projection, rng)
            fillers = rng.integers(0, FILLER_WORDS, size=(hi - lo, 5))
            n_fill = rng.integers(1, 4, size=hi - lo)
            lines = []
            for k, (c, fill, m) in enumerate(zip(cats, fillers.tolist(), n_fill.tolist())):
                words = [f"topic{x}" for x in c] + [f"w{x}" for x in fill[:m]]
                lines.append(f"{lo + k + 1}\t{' '.join(f'c{x}' for x in c)}\t{' '.join(words)}")
            _write_lines(f, lines)
    return args.items


def write_users(path: Path, args: argparse.Namespace, users_f: np.ndarray) -> int:
    projection = _rng(args.seed, 4).standard_normal((args.factors, N_SEGMENTS), dtype=np.float32)
    with open(path, "w") as f:
        f.write("user_id:token\tsegment:token\n")
        for lo in range(0, args.users, CHUNK):
            hi = min(lo + CHUNK, args.users)
            segment = (users_f[lo:hi] @ projection).argmax(axis=1)
            _write_lines(f, [f"{lo + k + 1}\ts{s}" for k, s in enumerate(segment.tolist())])
    return args.users


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_synthetic.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, required=True, help="number of users (>= 1)")
    p.add_argument("--items", type=int, required=True, help="number of items (>= 2); every item gets a .item row")
    p.add_argument("--interactions", type=int, required=True, help="rows of the .inter file (>= 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder; its name is the dataset name")
    p.add_argument("--factors", type=int, default=8, help="latent factor dimension (default 8)")
    p.add_argument("--categories", type=int, default=20, help="number of item categories (default 20)")
    p.add_argument("--popularity", type=float, default=2.0,
                   help="power-law exponent of item popularity, 1 = uniform (default 2)")
    p.add_argument("--affinity", type=float, default=0.7,
                   help="probability that a pick follows the user's taste rather than popularity (default 0.7)")
    p.add_argument("--candidates", type=int, default=8, help="popular items a taste-driven pick chooses among")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for name, low in (("users", 1), ("items", 2), ("interactions", 1), ("factors", 1), ("categories", 3),
                      ("candidates", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if not 0.0 <= args.affinity <= 1.0:
        parser.error(f"--affinity must be in [0, 1], got {args.affinity}")
    if args.popularity < 1.0:
        parser.error(f"--popularity must be >= 1 (1 = uniform), got {args.popularity}")
    if not _bijective_items(args.items):
        parser.error(f"--items={args.items} shares a factor with the id-scrambling multiplier 2654435761; "
                     f"use {args.items + 1}")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Generate the files; returns ``{"inter": rows, "item": rows, "user": rows, "folder": path}``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    name = out.resolve().name
    users_f = user_factors(args.users, args.factors, args.seed)
    items_f = item_factors(args.items, args.factors, args.seed)
    counts = {
        "user": write_users(out / f"{name}.user", args, users_f),
        "item": write_items(out / f"{name}.item", args, items_f),
        "inter": write_inter(out / f"{name}.inter", args, users_f, items_f, progress=not args.quiet),
        "folder": str(out),
    }
    if not args.quiet:
        print(f"wrote {out}/{name}.{{inter,item,user}}: {counts['inter']:,} interactions, "
              f"{counts['item']:,} items, {counts['user']:,} users", file=sys.stderr)
    return counts


if __name__ == "__main__":
    main()
