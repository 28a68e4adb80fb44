"""What this process's check of the atomic files established, for the loader to rely on.

:func:`recbole_mtl.data.validate.check_file` records a file whose id field it found free of
repeated ids; :class:`recbole_mtl.data.dataset.MultiTaskDataset` then skips RecBole's own
drop of repeated ids for that file, as long as the file has not changed since (same size and
modification time).
"""

from __future__ import annotations

import os
from pathlib import Path

#: path -> (id field, size, mtime_ns) of each file checked free of repeated ids
_UNIQUE_IDS: dict = {}


def record_unique_ids(path, field: str) -> None:
    """``path`` (as it is now) holds no id of ``field`` twice."""
    stat = os.stat(path)
    _UNIQUE_IDS[str(Path(path).resolve())] = (field, stat.st_size, stat.st_mtime_ns)


def ids_checked_unique(path, field: str) -> bool:
    """Whether this process checked ``path`` (unchanged since) and found no id of ``field`` twice."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return _UNIQUE_IDS.get(str(Path(path).resolve())) == (field, stat.st_size, stat.st_mtime_ns)
