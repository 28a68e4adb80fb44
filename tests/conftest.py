"""Shared fixtures: real RecBole data (slices of the bundled ml-100k), run in a temp folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import recbole_mtl  # noqa: F401  (applies the compatibility layer, registers models)

ML100K = Path(__import__("recbole").__file__).parent / "dataset_example" / "ml-100k"


def pytest_collection_modifyitems(config, items):
    """Skip ``cpu_only`` tests on a CUDA machine, saying why."""
    import torch

    if not torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="cpu_only: CUDA is available here, so runs use CUDA kernels (Adam allowed) "
                                   "and NCCL, which this test does not expect")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


def write_slice(root: Path, name: str = "ml-slice", max_user: int = 120) -> Path:
    """Write the ml-100k atomic files restricted to users 1..max_user under root/name/."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    inter_lines = (ML100K / "ml-100k.inter").read_text().splitlines()
    kept = [inter_lines[0]] + [l for l in inter_lines[1:] if int(l.split("\t")[0]) <= max_user]
    items = {l.split("\t")[1] for l in kept[1:]}
    (folder / f"{name}.inter").write_text("\n".join(kept) + "\n")
    user_lines = (ML100K / "ml-100k.user").read_text().splitlines()
    (folder / f"{name}.user").write_text(
        "\n".join([user_lines[0]] + [l for l in user_lines[1:] if int(l.split("\t")[0]) <= max_user]) + "\n"
    )
    item_lines = (ML100K / "ml-100k.item").read_text(encoding="utf-8", errors="ignore").splitlines()
    (folder / f"{name}.item").write_text(
        "\n".join([item_lines[0]] + [l for l in item_lines[1:] if l.split("\t")[0] in items]) + "\n"
    )
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data_path holding 'ml-slice' (120 users of ml-100k with their items)."""
    root = tmp_path_factory.mktemp("data")
    write_slice(root)
    return root


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a temp folder so RecBole's ./log, ./log_tensorboard and ./saved land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def base_config(data_root: Path, **overrides) -> dict:
    config = {
        "data_path": str(data_root),
        "checkpoint_dir": os.path.join(os.getcwd(), "saved"),
        "show_progress": False,
        "epochs": 1,
        "seed": 2020,
        "state": "WARNING",
        # as RecBole's own ml-100k.yaml does for ml-100k
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    }
    config.update(overrides)
    return config
