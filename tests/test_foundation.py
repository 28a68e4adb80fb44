"""The plugin foundation on real RecBole: safe checkpoints, registry, config layering, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from recbole_mtl.checkpoint import atomic_torch_save, load_checkpoint
from recbole_mtl.config import Config
from recbole_mtl.errors import CheckpointError, ConfigError, UnknownNameError
from recbole_mtl.pipeline import build
from recbole_mtl.quick_start import load_data_and_model, run_recbole_mtl
from recbole_mtl.utils import get_model, get_trainer
from tests.conftest import base_config

REPO = Path(__file__).resolve().parents[1]


def _evaluate_reloaded(path):
    from recbole_mtl.utils import get_trainer as plugin_get_trainer

    config, model, _, _, _, test_data = load_data_and_model(path)
    trainer = plugin_get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return trainer.evaluate(test_data, load_best_model=False)


@pytest.mark.parametrize(
    "model, extra",
    [
        ("BPR", {}),
        ("SASRec", {"train_neg_sample_args": None, "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 16,
                    "inner_size": 32, "n_layers": 1, "n_heads": 1}),
        ("DeepFM", {"threshold": {"rating": 4}, "load_col": {
            "inter": ["user_id", "item_id", "rating", "timestamp"], "user": ["user_id", "age", "gender"],
            "item": ["item_id", "release_year", "class"]}}),
    ],
)
def test_baseline_trains_saves_and_reloads_safely(model, extra, data_root, workdir):
    result = run_recbole_mtl(model=model, dataset="ml-slice", config_dict=base_config(data_root, **extra),
                             cmd_args=[])
    assert set(result) >= {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    ckpt = result["checkpoint"]
    assert ckpt and os.path.isfile(ckpt) and Path(ckpt).parent == workdir / "saved"
    # Only tensors and plain data: loads with weights_only=True.
    state = torch.load(ckpt, weights_only=True)
    assert state["config"]["final"]["model"] == model
    assert state["epoch"] == 0
    # Reloading the checkpoint gives the same test metrics.
    reloaded = _evaluate_reloaded(ckpt)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]), abs=1e-4)


def test_resume_continues_from_the_saved_epoch(data_root, workdir, caplog):
    caplog.set_level("INFO")
    first = run_recbole_mtl(model="BPR", dataset="ml-slice", config_dict=base_config(data_root), cmd_args=[])
    saved = load_checkpoint(first["checkpoint"])
    built = build(Config(model="BPR", dataset="ml-slice", config_dict=base_config(data_root, epochs=2), cmd_args=[]))
    fresh = built.model.state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in saved["state_dict"].items())  # training moved the weights
    built.trainer.resume_checkpoint(first["checkpoint"])
    restored = built.model.state_dict()
    assert restored.keys() == saved["state_dict"].keys()
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0, msg=key)
    for group, saved_group in zip(built.trainer.optimizer.state_dict()["state"].values(),
                                  saved["optimizer"]["state"].values()):
        torch.testing.assert_close(group["exp_avg"], saved_group["exp_avg"], rtol=0, atol=0)
    assert built.trainer.start_epoch == 1

    resumed = run_recbole_mtl(
        model="BPR", dataset="ml-slice",
        config_dict=base_config(data_root, epochs=2, checkpoint=first["checkpoint"], state="INFO"),
        cmd_args=[],
    )
    assert torch.load(resumed["checkpoint"], weights_only=True)["epoch"] in (0, 1)
    assert "Resume training from epoch 1" in caplog.text


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": {}, "config": Path("x")}, path)  # a pickled Python object
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused_and_atomic_save_keeps_the_old_file(tmp_path):
    good = tmp_path / "model.pth"
    atomic_torch_save({"state_dict": {"w": torch.ones(3)}}, good)
    data = good.read_bytes()
    broken = tmp_path / "broken.pth"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(broken)

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot save")

    with pytest.raises(RuntimeError):
        atomic_torch_save({"state_dict": {}, "bad": Unsaveable()}, good)
    assert good.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_registry_falls_back_to_recbole_and_names_close_matches():
    from recbole.model.general_recommender.bpr import BPR
    from recbole.trainer import Trainer

    assert get_model("BPR") is BPR
    assert get_trainer(BPR.type, "BPR") is Trainer
    with pytest.raises(UnknownNameError, match="Did you mean: SASRec"):
        get_model("SASRek")


def test_config_layers_in_order(tmp_path, data_root):
    props = tmp_path / "props"
    (props / "model").mkdir(parents=True)
    (props / "dataset").mkdir()
    layers = {
        props / "overall.yaml": ["a", "b", "c", "d", "e", "f"],
        props / "model" / "BPR.yaml": ["b", "c", "d", "e", "f"],
        props / "dataset" / "ml-slice.yaml": ["c", "d", "e", "f"],
        tmp_path / "user.yaml": ["d", "e", "f"],
    }
    for file, keys in layers.items():
        file.write_text(yaml.safe_dump({f"layer_{k}": file.stem for k in keys}))
    # a key RecBole itself sets, overridden by the plugin's overall.yaml
    (props / "overall.yaml").write_text((props / "overall.yaml").read_text() + "eval_step: 3\n")

    class LayeredConfig(Config):
        properties_root = props

    config = LayeredConfig(
        model="BPR", dataset="ml-slice", config_file_list=[str(tmp_path / "user.yaml")],
        config_dict={"data_path": str(data_root), "layer_e": "dict", "layer_f": "dict"},
        cmd_args=["--layer_f=cmd"],
    )
    assert config["eval_step"] == 3  # RecBole default is 1
    assert [config[f"layer_{k}"] for k in "abcdef"] == ["overall", "BPR", "ml-slice", "user", "dict", "cmd"]


def test_plugin_properties_sit_between_recbole_and_user(data_root):
    config = Config(model="BPR", dataset="ml-100k", cmd_args=[])
    assert config["category_field"] == "class"  # plugin dataset/ml-100k.yaml over plugin overall.yaml
    assert config["interest_threshold"] == 4.0
    config = Config(model="BPR", dataset="ml-100k", config_dict={"category_field": "genre"}, cmd_args=[])
    assert config["category_field"] == "genre"


def test_config_rejects_wrong_types_and_parses_literals_without_eval(data_root):
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        Config(model="BPR", dataset="ml-slice", config_dict={"data_path": str(data_root)}, cmd_args=["--epochs=abc"])
    config = Config(model="BPR", dataset="ml-slice", config_dict={"data_path": str(data_root)},
                    cmd_args=["--topk=[5,10]", "--learning_rate=0.01", "--checkpoint_dir=__import__('os').getcwd()"])
    assert config["topk"] == [5, 10] and config["learning_rate"] == 0.01
    assert config["checkpoint_dir"] == "__import__('os').getcwd()"  # kept as text, never evaluated
    config = Config(model="BPR", dataset="ml-slice", config_dict={"data_path": str(data_root)},
                    cmd_args=["--metrics=[Recall,NDCG]", "--topk=[5, 10]"])
    assert config["metrics"] == ["Recall", "NDCG"] and config["topk"] == [5, 10]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "run_recbole_mtl.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_unknown_model_and_dataset_give_one_line_errors(tmp_path):
    out = _cli("--model=SASRek", "--dataset=ml-100k", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown model 'SASRek'" in out.stderr and "Did you mean: SASRec" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli("--model=BPR", "--dataset=ml-100", cwd=tmp_path)
    assert out.returncode == 2 and "unknown dataset 'ml-100'" in out.stderr and "ml-100k" in out.stderr
    out = _cli("--model=BPR", "--dataset=ml-100k", "--train_batch_size=big", cwd=tmp_path)
    assert out.returncode == 2 and "'train_batch_size' expects int" in out.stderr
    out = _cli("--model=SASRek", "--debug", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_cli_prints_recbole_result_lines(data_root, tmp_path):
    out = _cli("--model=BPR", "--dataset=ml-slice", f"--data_path={data_root}", "--epochs=1",
               "--show_progress=False", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best valid" in out.stdout + out.stderr and "test result" in out.stdout + out.stderr
    assert list((tmp_path / "saved").glob("BPR-*.pth"))


def test_recbole_quick_start_imports_and_runs_without_ray(data_root, workdir):
    import importlib.util

    from recbole.quick_start import run_recbole

    result = run_recbole(model="BPR", dataset="ml-slice", config_dict=base_config(data_root))
    assert "recall@10" in result["test_result"]
    if importlib.util.find_spec("ray") is None:
        from recbole.quick_start import quick_start

        assert quick_start.tune.report(x=1) is None  # as ray outside a Tune session
        with pytest.raises(ImportError, match="ray"):
            quick_start.tune.run(lambda config: None)  # a real Tune run needs ray


def test_wheel_ships_properties(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("recbole_mtl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "recbole_mtl/properties/overall.yaml" in names
    assert "recbole_mtl/properties/dataset/ml-100k.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
