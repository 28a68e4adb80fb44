"""Saved datasets (``save_dataset`` / ``dataset_save_path`` / ``prepare``): arrays, loaded instead of the files.

A run from the saved arrays must see exactly the data of a run from the atomic files (every part of
the split, the token maps, the training windows) and train the same; a saved folder that no longer
matches the files or the data settings is not used; a damaged one gives a clear error; a save that
fails leaves the previous folder as it was.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from recbole_mtl.cli import main as cli_main
from recbole_mtl.config import Config
from recbole_mtl.data import saved
from recbole_mtl.data.dataset import MultiTaskDataset
from recbole_mtl.data.windows import UserWindows
from recbole_mtl.errors import ConfigError
from recbole_mtl.pipeline import build_data_and_model
from recbole_mtl.utils import get_trainer
from tests.conftest import base_config

TINY = {"MAX_ITEM_LIST_LENGTH": 8, "embedding_size": 8, "n_layers": 1, "n_heads": 1, "inner_size": 16,
        "shared_hidden": [8], "tower_hidden": [8], "category_field": "class",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "class", "release_year"], "user": ["user_id", "age", "gender"]}}


def _config(data_root, workdir, **overrides):
    return Config(model="MTLRec", dataset="ml-slice", cmd_args=[],
                  config_dict=base_config(data_root, **{**TINY, **overrides}))


def _build(data_root, workdir, **overrides):
    config = _config(data_root, workdir, **overrides)
    dataset, train, valid, test, model = build_data_and_model(config)
    return dataset, train, valid, test, model, config


def _path(workdir):
    return str(workdir / "saved" / "ml-slice-MultiTaskDataset.arrays")


def _assert_same_interactions(a, b):
    assert set(a.columns) == set(b.columns)
    for column in a.columns:
        torch.testing.assert_close(a[column], b[column], atol=0, rtol=0, msg=column)


def _one_epoch(built):
    dataset, train, valid, test, model, config = built
    trainer = get_trainer(config["MODEL_TYPE"], "MTLRec")(config, model)
    loss = trainer._train_epoch(trainer.training_loader(train), 0)
    return loss, trainer.evaluate(valid, load_best_model=False)


def test_a_saved_dataset_holds_the_same_data_and_trains_the_same(data_root, workdir):
    fresh = _build(data_root, workdir, save_dataset=True)
    assert os.path.isfile(os.path.join(_path(workdir), saved.META))
    loss_a, result_a = _one_epoch(fresh)  # each right after its build: both from the seeded state
    loaded = _build(data_root, workdir)
    loss_b, result_b = _one_epoch(loaded)
    assert loaded[0].__dict__.get("_saved_path") == _path(workdir) and "_saved_path" not in fresh[0].__dict__
    for part_fresh, part_loaded in zip(fresh[1:4], loaded[1:4]):
        _assert_same_interactions(part_fresh.dataset.inter_feat, part_loaded.dataset.inter_feat)
    a, b = fresh[0], loaded[0]
    for feat in ("inter_feat", "user_feat", "item_feat"):
        _assert_same_interactions(getattr(a, feat), getattr(b, feat))
    assert set(a.flat) == set(b.flat) and all(torch.equal(a.flat[f], b.flat[f]) for f in a.flat)
    assert a.field2type == b.field2type and a.field2source == b.field2source and a.field2seqlen == b.field2seqlen
    for field, tokens in a.field2id_token.items():
        assert list(tokens) == list(b.field2id_token[field]), field
        assert dict(a.field2token_id[field]) == dict(b.field2token_id[field]), field
    assert isinstance(b.field2id_token["item_id"], np.memmap)  # mapped, not read into memory
    assert a.time_scale == b.time_scale and b.holdout_ratio == a.holdout_ratio
    # the training windows: from the saved segments, as cut from the rows
    fresh_windows = UserWindows.from_dataset(fresh[1].dataset, 8, 4)
    loaded_windows = UserWindows.from_dataset(loaded[1].dataset, 8, 4)
    assert "window_segments" in loaded[1].dataset.__dict__
    for name in ("users", "starts", "ends", "window_user", "window_start", "window_end", "window_count_from"):
        assert torch.equal(getattr(fresh_windows, name), getattr(loaded_windows, name)), name
    # the same epoch, the same trained model, the same evaluation
    assert float(np.sum(loss_a)) == pytest.approx(float(np.sum(loss_b)), rel=1e-6)
    assert all(torch.allclose(v, loaded[4].state_dict()[k], atol=1e-6) for k, v in fresh[4].state_dict().items())
    assert result_a == result_b


def test_a_saved_dataset_is_not_used_when_the_files_or_the_data_settings_change(data_root, workdir, caplog,
                                                                                 tmp_path_factory):
    from tests.conftest import write_slice

    root = tmp_path_factory.mktemp("changing")
    write_slice(root, max_user=40)
    _build(root, workdir, save_dataset=True)
    path = _path(workdir)
    config = _config(root, workdir)
    assert saved.mismatch(path, config, MultiTaskDataset) is None
    assert "MAX_ITEM_LIST_LENGTH" in saved.mismatch(path, _config(root, workdir, MAX_ITEM_LIST_LENGTH=5),
                                                    MultiTaskDataset)
    assert "interest_threshold" in saved.mismatch(path, _config(root, workdir, interest_threshold=3),
                                                  MultiTaskDataset)
    inter = root / "ml-slice" / "ml-slice.inter"
    lines = inter.read_text().splitlines()
    inter.write_text("\n".join(lines[:-5]) + "\n")  # five interactions fewer
    assert "atomic files changed" in saved.mismatch(path, config, MultiTaskDataset)
    with caplog.at_level(logging.WARNING):
        dataset = _build(root, workdir)[0]
    assert f"the saved dataset {path} is not used: the atomic files changed" in caplog.text
    assert "_saved_path" not in dataset.__dict__ and len(dataset.flat["item_id"]) == len(lines) - 6
    _build(root, workdir, save_dataset=True)  # saved anew, whole
    assert saved.mismatch(path, config, MultiTaskDataset) is None
    assert len(_build(root, workdir)[0].flat["item_id"]) == len(lines) - 6
    assert not [f for f in os.listdir(workdir / "saved") if ".partial" in f or ".old" in f]


def test_a_failed_save_leaves_the_previous_folder_and_nothing_partial(data_root, workdir, monkeypatch):
    _build(data_root, workdir, save_dataset=True)
    path = _path(workdir)
    before = sorted(os.listdir(path))
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        _build(data_root, workdir, save_dataset=True, MAX_ITEM_LIST_LENGTH=6)
    monkeypatch.undo()
    assert sorted(os.listdir(path)) == before
    assert not [f for f in os.listdir(workdir / "saved") if f != os.path.basename(path)]
    assert saved.mismatch(path, _config(data_root, workdir), MultiTaskDataset) is None


def test_a_damaged_saved_dataset_names_the_folder_and_the_fix(data_root, workdir):
    _build(data_root, workdir, save_dataset=True)
    path = _path(workdir)
    victim = sorted(f for f in os.listdir(path) if f.endswith(".npy"))[3]
    os.remove(os.path.join(path, victim))
    with pytest.raises(ConfigError, match=rf"the saved dataset .*arrays is damaged .*{victim}.*Delete that folder"):
        _build(data_root, workdir)


def test_a_dataset_save_path_naming_a_file_is_refused_before_anything_is_written(data_root, workdir):
    pickle_file = workdir / "old.pth"
    pickle_file.write_bytes(b"not ours")
    with pytest.raises(ConfigError, match=r"dataset_save_path .*old\.pth is a file"):
        _build(data_root, workdir, save_dataset=True, dataset_save_path=str(pickle_file))
    assert pickle_file.read_bytes() == b"not ours"


def test_prepare_saves_once_and_refuses_a_recbole_model(data_root, workdir, capsys):
    args = ["prepare", "--dataset=ml-slice", f"--data_path={data_root}", "--state=WARNING",
            "--load_col={'inter': ['user_id', 'item_id', 'rating', 'timestamp']}"]
    path = cli_main(args)
    assert "saved to" in capsys.readouterr().out and os.path.isdir(path)
    stamp = os.path.getmtime(os.path.join(path, saved.META))
    cli_main(args)
    assert "up to date" in capsys.readouterr().out and os.path.getmtime(os.path.join(path, saved.META)) == stamp
    with pytest.raises(SystemExit) as stop:
        cli_main(["prepare", "--model=SASRec", "--dataset=ml-slice", f"--data_path={data_root}"])
    assert stop.value.code == 2
    assert "SequentialDataset (RecBole's)" in capsys.readouterr().err


@pytest.mark.cpu_only
def test_two_processes_save_once_and_both_load_it(data_root, workdir):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, str(repo / "run_recbole_mtl.py"), "--nproc=2", "--dataset=ml-slice",
            f"--data_path={data_root}", f"--checkpoint_dir={workdir / 'saved'}", "--epochs=1", "--state=INFO",
            "--show_progress=False", "--MAX_ITEM_LIST_LENGTH=8", "--embedding_size=8", "--n_layers=1",
            "--n_heads=1", "--inner_size=16", "--tasks=['sequence','interest']"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}

    def run(*extra):
        proc = subprocess.run(args + list(extra), cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        text = proc.stdout + proc.stderr
        return text, [line.split("test result", 1)[1] for line in text.splitlines() if "test result" in line]

    first, first_results = run("--save_dataset=True")  # rank 0 saves, rank 1 waits and loads (rank 0 logs)
    assert first.count("saved the dataset and its split") == 1 and "loaded the saved dataset" not in first
    second, second_results = run()
    assert "loaded the saved dataset" in second and "saved the dataset" not in second
    assert first_results and first_results == second_results


def test_the_dataset_summary_counts_as_recbole_does(data_root, workdir):
    from collections import Counter

    dataset = _build(data_root, workdir)[0]
    for field, value in ((dataset.uid_field, dataset.avg_actions_of_users),
                         (dataset.iid_field, dataset.avg_actions_of_items)):
        assert value == np.mean(list(Counter(dataset.inter_feat[field].numpy()).values()))
