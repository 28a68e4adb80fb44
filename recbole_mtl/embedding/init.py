"""Initial values of the embedding tables, keyed by row: a row's start depends only on (seed, table, row).

A table of ``R`` rows starts from FBGEMM's default distribution, uniform(+-1/sqrt(R)), drawn in
blocks of :data:`BLOCK_ROWS` rows: block ``b`` of table ``t`` comes from its own generator seeded
by a hash of ``(seed, t, b)``. Whoever holds a row (one process with the whole table, or the rank
that owns a row-wise / column-wise / table-wise shard) writes the same values into it, without
drawing the rest of the table and without touching the global random stream. So a table is
initialised where it lives (each rank allocates and fills only its shards), and a run starts from
identical tables whatever its number of processes.

Example:
    >>> import torch
    >>> whole = torch.empty(10, 4); fill_rows(whole, "item_id", num_rows=10, seed=1)
    >>> part = torch.empty(3, 2); fill_rows(part, "item_id", num_rows=10, seed=1, row_offset=5, col_offset=2)
    >>> bool(torch.equal(part, whole[5:8, 2:4]))
    True
"""

from __future__ import annotations

import hashlib

import torch

#: Rows drawn from one generator (the unit of the row-keyed stream; never change it, or every
#: table's initial values change).
BLOCK_ROWS = 4096


def block_seed(seed: int, table: str, block: int) -> int:
    """The generator seed of rows ``[block * BLOCK_ROWS, (block + 1) * BLOCK_ROWS)`` of ``table``."""
    digest = hashlib.blake2b(f"{int(seed)}/{table}/{int(block)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@torch.no_grad()
def fill_rows(target: torch.Tensor, table: str, num_rows: int, seed: int, row_offset: int = 0,
              col_offset: int = 0, dim: int | None = None) -> None:
    """Write the initial values of rows ``[row_offset, row_offset + len(target))`` and columns
    ``[col_offset, col_offset + target.shape[1])`` of ``table`` into ``target`` (in place).

    Args:
        target: ``[n, w]`` the rows/columns to fill (a whole table, a shard, or a view of either).
        table: the table's name (part of the stream's key).
        num_rows: rows of the whole table (sets the bound 1/sqrt(num_rows)).
        seed: the run's ``seed``.
        row_offset, col_offset: where ``target`` starts in the whole table.
        dim: columns of the whole table (default: ``col_offset + target.shape[1]``).
    """
    n, width = target.shape
    if n == 0 or width == 0:
        return
    dim = int(dim if dim is not None else col_offset + width)
    bound = 1.0 / max(int(num_rows), 1) ** 0.5
    generator = torch.Generator(device="cpu")
    buffer = torch.empty(BLOCK_ROWS, dim, dtype=torch.float32)
    first, last = row_offset // BLOCK_ROWS, (row_offset + n - 1) // BLOCK_ROWS
    for block in range(first, last + 1):
        block_start = block * BLOCK_ROWS
        rows = min(BLOCK_ROWS, int(num_rows) - block_start)
        generator.manual_seed(block_seed(seed, table, block))
        values = buffer[:rows].uniform_(-bound, bound, generator=generator)
        lo, hi = max(row_offset, block_start), min(row_offset + n, block_start + rows)
        target[lo - row_offset:hi - row_offset].copy_(
            values[lo - block_start:hi - block_start, col_offset:col_offset + width])
