"""Crash safety, resumption, numerical health and never unpickling what is read from disk."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recbole_mtl.checkpoint import last_checkpoint_path, load_checkpoint
from recbole_mtl.config import Config
from recbole_mtl.errors import CheckpointError, NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--embedding_size=16", "--n_layers=1", "--n_heads=1", "--inner_size=32", "--shared_hidden=[32]",
        "--tower_hidden=[16]", "--MAX_ITEM_LIST_LENGTH=10", "--train_batch_size=128", "--eval_batch_size=4096",
        "--category_batch_size=64", "--dropout=0.2", "--category_field=class", "--load_col=None",
        "--show_progress=False", "--state=INFO"]

RUNNER = """
import json, sys
from recbole_mtl.cli import main
result = main(sys.argv[1:])
print("RESULT " + json.dumps({k: float(v) for k, v in result["test_result"].items()}), flush=True)
"""


def _cli(data_root: Path, checkpoint_dir: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, "--model=MTLRec", "--dataset=ml-slice", f"--data_path={data_root}",
            f"--checkpoint_dir={checkpoint_dir}", f"--epochs={epochs}", "--stopping_step=100", *TINY, *extra]


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def few_users(tmp_path_factory) -> Path:
    """A data_path holding 'ml-slice' restricted to 50 users (a few seconds per run)."""
    from tests.conftest import write_slice

    root = tmp_path_factory.mktemp("few")
    write_slice(root, max_user=50)
    return root


def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(few_users, workdir):
    data_root, epochs = few_users, 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = _result(subprocess.run(_cli(data_root, workdir / "a", epochs), cwd=workdir, env=env,
                                      capture_output=True, text=True, timeout=600))

    ckpt_dir = workdir / "b"
    last = ckpt_dir / "MTLRec-ml-slice-last.pth"
    victim = subprocess.Popen(_cli(data_root, ckpt_dir, epochs), cwd=workdir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)  # mid-way through the next epoch
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    done = load_checkpoint(last)["epoch"]
    assert done < epochs - 1, "the run was killed after its last epoch"

    resumed = subprocess.run(_cli(data_root, ckpt_dir, epochs, "--resume"), cwd=workdir, env=env,
                             capture_output=True, text=True, timeout=600)
    assert f"Resume training from epoch {done + 1}" in resumed.stdout + resumed.stderr
    result = _result(resumed)
    assert result.keys() == straight.keys()
    for key in straight:
        assert result[key] == pytest.approx(straight[key], abs=1e-4), key
    assert load_checkpoint(last)["epoch"] == epochs - 1


def _small_trainer(data_root: Path, workdir: Path, **extra):
    from recbole_mtl.pipeline import build

    config = Config(model="MTLRec", dataset="ml-slice", cmd_args=TINY, config_dict={
        "data_path": str(data_root), "checkpoint_dir": str(workdir / "saved"), "epochs": 1, **extra})
    built = build(config)
    return built.trainer, built.train_data, built.valid_data


def test_nan_loss_stops_naming_the_task_and_step_and_keeps_checkpoints(few_users, workdir):
    trainer, train_data, valid_data = _small_trainer(few_users, workdir)
    trainer.fit(train_data, valid_data, saved=True)
    best, last = Path(trainer.saved_model_file), Path(last_checkpoint_path(trainer.config))
    before = {p: p.read_bytes() for p in (best, last)}
    table_before = trainer.model.state_dict()["sparse.item_collection.embeddings.item_id.weight"].clone()

    with torch.no_grad():  # the interest head blows up, as after a too-large step
        for p in trainer.model.task("interest").parameters():
            p.fill_(float("nan"))
    trainer.start_epoch, trainer.epochs = 1, 2  # the next epoch
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(train_data, valid_data, saved=True)
    message = str(info.value)
    assert "'interest' loss is NaN at epoch 1, batch 1 of" in message and f"training step {len(trainer.training_loader(train_data))}" in message  # batches of windows an epoch
    assert str(best) in message and str(last) in message
    assert {p: p.read_bytes() for p in (best, last)} == before
    torch.testing.assert_close(trainer.model.state_dict()["sparse.item_collection.embeddings.item_id.weight"],
                               table_before)  # the failing step updated nothing


def test_resume_refuses_a_checkpoint_of_another_model_and_says_when_there_is_none(few_users, workdir, capsys):
    from recbole_mtl.cli import main

    args = [f"--data_path={few_users}", f"--checkpoint_dir={workdir / 'saved'}", "--dataset=ml-slice"]
    with pytest.raises(SystemExit) as info:
        main(["--model=MTLRec", "--resume", *args])
    assert info.value.code == 2 and "nothing to resume from" in capsys.readouterr().err

    trainer, train_data, valid_data = _small_trainer(few_users, workdir)
    trainer.fit(train_data, valid_data, saved=True)
    with pytest.raises(SystemExit):
        main(["--model=SASRec", f"--checkpoint={trainer.saved_model_file}", "--train_neg_sample_args=None",
              "--load_col=None", *args])
    err = capsys.readouterr().err
    assert "trained with model MTLRec" in err and "--model=MTLRec" in err


def test_truncated_checkpoint_is_a_clear_error_and_is_left_alone(few_users, workdir, capsys):
    from recbole_mtl.cli import main

    trainer, train_data, valid_data = _small_trainer(few_users, workdir)
    trainer.fit(train_data, valid_data, saved=True)
    good = Path(trainer.saved_model_file)
    broken = workdir / "broken.pth"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    snapshot = broken.read_bytes()
    with pytest.raises(SystemExit) as info:
        main(["--model=MTLRec", "--dataset=ml-slice", f"--data_path={few_users}", f"--checkpoint={broken}",
              f"--checkpoint_dir={workdir / 'saved'}"])
    assert info.value.code == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert broken.read_bytes() == snapshot


class _Plant:
    """Unpickling this object writes a marker file: proof that the pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_saved_dataset_and_dataloader_pickles_are_never_loaded(few_users, workdir, caplog):
    import recbole.data
    from recbole.quick_start import run_recbole

    saved = workdir / "saved"
    saved.mkdir()
    marker = workdir / "unpickled"
    for name in ("ml-slice-MultiTaskDataset.pth", "ml-slice-SequentialDataset.pth", "ml-slice-for-MTLRec-dataloader.pth",
                 "ml-slice-for-SASRec-dataloader.pth"):
        (saved / name).write_bytes(pickle.dumps(_Plant(marker)))
    _small_trainer(few_users, workdir)  # through recbole_mtl
    run_recbole(model="SASRec", dataset="ml-slice", saved=False, config_dict={  # through RecBole's own entry point
        "data_path": str(few_users), "checkpoint_dir": str(saved), "epochs": 1, "train_neg_sample_args": None,
        "show_progress": False, "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]}})
    assert not marker.exists()
    assert "pickled dataset; it is not loaded" in caplog.text and "pickled dataloaders; it is not loaded" in caplog.text
    assert recbole.data.create_dataset.__module__ == "recbole_mtl.hardening"


def test_command_line_values_are_never_evaluated_even_in_recbole_config(tmp_path):
    from recbole.config import Config as RecBoleConfig

    marker = tmp_path / "evaluated"
    payload = f"__import__('pathlib').Path('{marker}').touch()"
    saved = sys.argv
    sys.argv = ["run_recbole.py", f"--stopping_step={payload}", "--learning_rate=1e-3", "--metrics=['Recall','NDCG']"]
    try:
        config = RecBoleConfig(model="BPR", dataset="ml-100k")
    finally:
        sys.argv = saved
    assert not marker.exists()
    assert config["stopping_step"] == payload  # kept as the text it is
    assert config["learning_rate"] == 1e-3 and config["metrics"] == ["Recall", "NDCG"]


def test_yaml_config_cannot_build_python_objects(tmp_path):
    import yaml
    from recbole.config import Config as RecBoleConfig

    bad = tmp_path / "bad.yaml"
    # PyYAML's FullLoader (RecBole's own choice) builds this into the os.system function
    bad.write_text("shell: !!python/name:os.system\n")
    assert yaml.load(bad.read_text(), Loader=yaml.FullLoader)["shell"] is os.system
    for config_class in (Config, RecBoleConfig):  # the plugin's Config and RecBole's own
        with pytest.raises(yaml.constructor.ConstructorError, match="python/name:os.system"):
            config_class(model="BPR", dataset="ml-100k", config_file_list=[str(bad)], **(
                {"cmd_args": []} if config_class is Config else {}))


def test_checkpoint_with_a_pickled_object_is_refused_by_resume(few_users, workdir):
    trainer, train_data, valid_data = _small_trainer(few_users, workdir)
    planted = workdir / "planted.pth"
    torch.save({"state_dict": {}, "config": _Plant(workdir / "unpickled")}, planted)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        trainer.resume_checkpoint(planted)
    assert not (workdir / "unpickled").exists()


def test_other_parameters_of_recbole_models_round_trip_as_tensors(tmp_path):
    """EASE keeps scipy/numpy matrices, DIN an nn.Module: checkpoints hold tensors only, and load back."""
    import numpy as np
    import scipy.sparse as sp

    from recbole_mtl.checkpoint import atomic_torch_save, pack_other, unpack_other

    other = {"item_similarity": np.arange(6, dtype=np.float32).reshape(2, 3),
             "interaction_matrix": sp.csr_matrix(np.array([[0, 1.5], [2.0, 0]])),
             "embedding_layer": torch.nn.Linear(2, 2), "restore_user_e": torch.ones(2), "count": np.int64(3)}
    atomic_torch_save({"state_dict": {}, "other_parameter": pack_other(other)}, tmp_path / "c.pth")
    loaded = unpack_other(load_checkpoint(tmp_path / "c.pth")["other_parameter"])
    assert "embedding_layer" not in loaded  # a sub-module: its weights are in the state_dict
    np.testing.assert_array_equal(loaded["item_similarity"], other["item_similarity"])
    assert loaded["interaction_matrix"].format == "csr"
    np.testing.assert_array_equal(loaded["interaction_matrix"].toarray(), other["interaction_matrix"].toarray())
    torch.testing.assert_close(loaded["restore_user_e"], torch.ones(2))
    assert loaded["count"] == 3 and type(loaded["count"]) is int
