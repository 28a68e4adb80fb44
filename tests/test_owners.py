"""Each concept has one owner: errors under one base, one writer of ``single_spec``, one checkpoint
format with explicit shard names, and the per-epoch checkpoint as a trainer hook."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from recbole_mtl import checkpoint, distributed, errors
from recbole_mtl.errors import ConfigError, RecboleMTLError
from tests.conftest import base_config

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_mtl"


def test_every_error_class_derives_from_one_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 8
    assert all(issubclass(c, RecboleMTLError) for c in classes), [c for c in classes if not issubclass(c, RecboleMTLError)]
    # and nothing else in the package defines its own exception
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                assert not any(b.endswith(("Error", "Exception")) for b in bases), f"{path}: class {node.name}"


def test_only_distributed_writes_recboles_single_spec():
    writers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
                            and target.slice.value == "single_spec"):
                        writers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert len(writers) == 1 and writers[0].startswith("distributed.py:"), writers


def test_the_distributed_context_is_frozen_and_one_process_by_default():
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.is_distributed) == (0, 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.rank = 1
    config = {"single_spec": None}
    with distributed.recbole_view(config, single_process=True):
        assert config["single_spec"] is True
    assert config["single_spec"] is True  # one process: RecBole sees one process


def test_shard_files_are_found_by_their_names_not_by_probing(tmp_path):
    path = str(tmp_path / "MTLRec-x.pth")
    for rank in range(3):
        torch.save({}, checkpoint.shard_path(path, rank, 3))
    torch.save({}, str(tmp_path / "MTLRec-xy.rank0-of-1.pth"))  # another checkpoint's file
    assert checkpoint.shard_sets(path) == {3: {r: checkpoint.shard_path(path, r, 3) for r in range(3)}}
    assert checkpoint.unsharded_path(checkpoint.shard_path(path, 2, 3)) == path
    assert checkpoint.rank_file(path, 1, 3) == checkpoint.shard_path(path, 1, 3)
    with pytest.raises(ConfigError, match=r"rank0-of-3\.pth was written by a different number of processes"):
        checkpoint.rank_file(path, 0, 2)
    torch.save({}, path)  # a single-process checkpoint of that name: every world size can start from it
    assert checkpoint.rank_file(path, 0, 2) == path


def test_a_baseline_run_through_the_plugin_writes_last_and_resumes_from_it(data_root, workdir, caplog):
    from recbole.trainer import Trainer

    from recbole_mtl.quick_start import run_recbole_mtl

    assert callable(Trainer.on_epoch_end)  # the hook every RecBole trainer has
    caplog.set_level("INFO")
    config = base_config(data_root, epochs=2)
    run_recbole_mtl(model="BPR", dataset="ml-slice", config_dict=config, cmd_args=[])
    last = workdir / "saved" / "BPR-ml-slice-last.pth"
    state = checkpoint.load_checkpoint(last)
    assert state["kind"] == "last" and state["epoch"] == 1 and set(state["train_loss_dict"]) == {"0", "1"}
    resumed = run_recbole_mtl(model="BPR", dataset="ml-slice", config_dict={**config, "epochs": 3, "resume": True},
                              cmd_args=[])
    assert "Resume training from epoch 2" in caplog.text
    assert checkpoint.load_checkpoint(last)["epoch"] == 2 and resumed["test_result"]


def test_with_validation_off_every_epoch_still_writes_last(data_root, workdir):
    from recbole_mtl.quick_start import run_recbole_mtl

    run_recbole_mtl(model="BPR", dataset="ml-slice", config_dict=base_config(data_root, epochs=2, eval_step=0),
                    cmd_args=[])
    assert checkpoint.load_checkpoint(workdir / "saved" / "BPR-ml-slice-last.pth")["epoch"] == 1


def test_with_eval_step_two_the_last_epoch_still_writes_last(data_root, workdir):
    from recbole_mtl.quick_start import run_recbole_mtl

    run_recbole_mtl(model="BPR", dataset="ml-slice", config_dict=base_config(data_root, epochs=3, eval_step=2),
                    cmd_args=[])
    assert checkpoint.load_checkpoint(workdir / "saved" / "BPR-ml-slice-last.pth")["epoch"] == 2
