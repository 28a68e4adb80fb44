"""The folders a command writes (checkpoints, RecBole's logs, the text features), checked before
any data is loaded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from recbole_mtl.data.validate.messages import _clip
from recbole_mtl.errors import DataValidationError


# -- the folders a run writes --------------------------------------------------------------------
def _unwritable(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be created or written, or None (probes with a temp file)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return "no part of the path exists"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder" if probe != folder else "it is a file, not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".recbole-mtl-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        where = "" if probe == folder else f"it does not exist and its parent {probe} "
        return f"{where}cannot be written ({e.strerror or e})".strip()
    return None


def run_folders(config, checkpoints: bool = True, text: bool = False) -> list[tuple[Path, str]]:
    """The folders a command writes, each with how to move it: ``checkpoint_dir`` (``checkpoints``),
    RecBole's log folders and, with ``text``, the text-feature folder (what ``embed`` writes)."""
    folders = []
    if checkpoints:
        folders.append((Path(config["checkpoint_dir"] or "saved"),
                        "Set checkpoint_dir to a folder you can write, e.g. --checkpoint_dir=/tmp/saved"))
    logs = "RecBole writes its logs to ./log and ./log_tensorboard of the working directory (no config key " \
           "moves them): run from a folder you can write"
    folders += [(Path("log"), logs), (Path("log_tensorboard"), logs)]
    if text:
        from recbole_mtl.data.feature_files import feature_folder

        folders.append((feature_folder(config), "Set text_feature_dir to a folder you can write, "
                                                "e.g. --text_feature_dir=/tmp/features"))
    return folders


def check_run_folders(config, checkpoints: bool = True, text: Optional[bool] = None) -> None:
    """Fail before any data is loaded when a folder the command writes cannot be created or written.

    Args:
        checkpoints: check ``checkpoint_dir`` (training runs).
        text: check the text-feature folder; ``None``: when ``text_features`` (``user_text_features``)
            is on and the item (user) feature file is not there yet (``embed`` has to write it).

    Raises:
        DataValidationError: naming the folder and the config key that moves it.
    """
    if text is None:
        from recbole_mtl.data.feature_files import feature_folder, feature_paths, user_feature_paths

        folder = feature_folder(config)
        text = (bool(config["text_features"]) and not feature_paths(folder, config["dataset"])[0].is_file()) or \
            (bool(config["user_text_features"]) and not user_feature_paths(folder, config["dataset"])[0].is_file())
    for folder, fix in run_folders(config, checkpoints, text):
        why = _unwritable(folder)
        if why:
            raise DataValidationError(f"cannot write to {_clip(folder)}: {why}. {fix}.")
