"""RecBole's own models and entry points with the plugin imported, on today's stack.

A fast subset of ``benchmarks/recbole_models.py`` (one model of each kind, plus models that need a
fix of the compatibility layer: LightGCN and NGCF the scipy one, GRU4RecCPR the FLOPs one), run in this process through the same function the sweep's workers run,
and RecBole's ``objective_function``, ``run_recbole`` and ``load_data_and_model`` without ray.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import base_config

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("recbole_models_sweep", REPO / "benchmarks" / "recbole_models.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

RAY_ABSENT = importlib.util.find_spec("ray") is None


@pytest.fixture(scope="module")
def sweep_data(tmp_path_factory) -> str:
    """The sweep's slice of ml-100k (with .kg and .link), 60 users to keep the tests fast."""
    root = tmp_path_factory.mktemp("sweep-data")
    sweep.write_slice(root, max_user=60)
    return str(root)


def test_model_list_is_read_from_recbole():
    models = dict((name, kind) for kind, name in sweep.discover_models())
    assert len(models) >= 90  # RecBole 1.2.1 ships 94 model modules
    assert {models["BPR"], models["DeepFM"], models["SASRec"], models["CKE"], models["XGBoost"]} == {
        "general", "context_aware", "sequential", "knowledge_aware", "exlib"}


def test_needs_table_follows_model_attributes(sweep_data, tmp_path):
    sasrec, _ = sweep.model_config("SASRec", sweep_data, str(tmp_path))
    assert sasrec["train_neg_sample_args"] is None  # CE loss
    bpr, reasons = sweep.model_config("BPR", sweep_data, str(tmp_path))
    assert "train_neg_sample_args" not in bpr and reasons == []
    deepfm, _ = sweep.model_config("DeepFM", sweep_data, str(tmp_path))
    assert deepfm["threshold"] == {"rating": 4} and "item" in deepfm["load_col"]
    cke, _ = sweep.model_config("CKE", sweep_data, str(tmp_path))
    assert {"kg", "link"} <= set(cke["load_col"])


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "NGCF", "GRU4RecCPR", "DeepFM", "STAMP", "CKE"])
def test_recbole_model_trains_saves_and_reloads(model, sweep_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = sweep.train_and_reload(model, sweep_data, str(tmp_path / model))
    checkpoint = run["checkpoint"]
    assert Path(checkpoint).is_file() and Path(checkpoint).parent == tmp_path / model / "saved"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["config"]["final"]["model"] == model and state["epoch"] == 0
    test = dict(run["result"]["test_result"])
    assert test and all(math.isfinite(float(v)) for v in test.values())
    assert dict(run["reloaded_test"]) == test  # exactly: the reloaded model is the trained one


def test_dok_matrix_update_builds_the_intended_adjacency():
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    inter = sp.coo_matrix((np.ones(200), (rng.integers(0, 30, 200), rng.integers(0, 40, 200))),
                          shape=(30, 40)).tocsr().tocoo()
    # LightGCN's construction, line for line
    adjacency = sp.dok_matrix((70, 70), dtype=np.float32)
    data = dict(zip(zip(inter.row, inter.col + 30), [1] * inter.nnz))
    data.update(dict(zip(zip(inter.T.row + 30, inter.T.col), [1] * inter.nnz)))
    adjacency._update(data)
    binary = (inter > 0).astype(np.float32)
    expected = sp.bmat([[None, binary], [binary.T, None]]).toarray()
    assert adjacency.dtype == np.float32
    np.testing.assert_array_equal(adjacency.toarray(), expected)


@pytest.mark.skipif(not RAY_ABSENT, reason="checks the behaviour without ray")
def test_recbole_objective_function_without_ray(data_root, workdir):
    from recbole.quick_start import objective_function

    config = base_config(data_root, model="BPR", dataset="ml-slice")
    result = objective_function(config_dict=config, saved=True)
    assert set(result) == {"model", "best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"}
    assert result["model"] == "BPR" and "recall@10" in result["test_result"]


@pytest.mark.skipif(not RAY_ABSENT, reason="checks the behaviour without ray")
def test_recbole_run_recbole_and_load_data_and_model_without_ray(data_root, workdir):
    from recbole.quick_start import load_data_and_model, run_recbole
    from recbole.utils import get_trainer

    result = run_recbole(model="LightGCN", dataset="ml-slice", config_dict=base_config(data_root), saved=True)
    [checkpoint] = [p for p in (workdir / "saved").glob("LightGCN-*.pth") if not p.name.endswith("-last.pth")]
    config, model, _, _, _, test_data = load_data_and_model(str(checkpoint))
    reloaded = get_trainer(config["MODEL_TYPE"], config["model"])(config, model).evaluate(
        test_data, load_best_model=False)
    assert dict(reloaded) == dict(result["test_result"])


@pytest.mark.skipif(not RAY_ABSENT, reason="checks the behaviour without ray")
def test_a_real_tune_run_still_says_ray_is_needed():
    from recbole.quick_start import quick_start

    assert quick_start.tune.report(recall=0.5) is None
    with pytest.raises(ImportError, match=r"pip install 'ray\[tune\]"):
        quick_start.tune.Tuner(lambda config: None)


def test_other_parameter_keeps_int_keys_through_a_safe_checkpoint(tmp_path):
    """RippleNet's ``ripple_set`` is keyed by user id; the reloaded model must find user 1."""
    from recbole_mtl.checkpoint import atomic_torch_save, pack_other, unpack_other

    ripple_set = {1: [(torch.tensor([3, 4]), torch.tensor([0, 1]), torch.tensor([5, 6]))], 2: []}
    path = tmp_path / "other.pth"
    atomic_torch_save({"other_parameter": pack_other({"ripple_set": ripple_set})}, path)
    reloaded = unpack_other(torch.load(path, weights_only=True)["other_parameter"])["ripple_set"]
    assert set(reloaded) == {1, 2}
    torch.testing.assert_close(reloaded[1][0][2], torch.tensor([5, 6]))


@pytest.mark.parametrize("user_mode", [False, True])
def test_recboles_model_zoo_leaves_autograd_anomaly_mode_as_the_process_had_it(user_mode):
    """RecBole's sine.py turns anomaly mode on when imported; after ``import recbole_mtl`` and any of
    RecBole's sequential models (SINE included), the mode is the one the process had before."""
    import subprocess
    import sys

    code = ("import torch\n"
            f"torch.autograd.set_detect_anomaly({user_mode})\n"
            "import recbole_mtl\n"
            "from recbole_mtl.utils import get_model\n"
            "get_model('SASRec'); get_model('SINE')\n"
            "import recbole.model.sequential_recommender.sine\n"
            "print('anomaly', torch.is_anomaly_enabled())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"anomaly {user_mode}"
    # RecBole alone (without the plugin) does turn it on: the fix is what keeps it off
    plain = subprocess.run([sys.executable, "-c", "import torch, recbole.model.sequential_recommender\n"
                            "print('anomaly', torch.is_anomaly_enabled())"], capture_output=True, text=True,
                           timeout=300, cwd=REPO)
    assert plain.stdout.strip().splitlines()[-1] == "anomaly True"


def test_recboles_feedforward_gelu_is_the_same_function_in_one_kernel():
    """compat's gelu for RecBole's FeedForward gives RecBole's values and gradients (erf form)."""
    from recbole.model.layers import FeedForward

    from recbole_mtl import compat

    layer = FeedForward(hidden_size=8, inner_size=16, hidden_dropout_prob=0.0, hidden_act="gelu",
                        layer_norm_eps=1e-12)
    assert layer.intermediate_act_fn.__func__ is compat._fused_gelu  # what every Transformer model is built with
    x = (torch.randn(4096, dtype=torch.float64) * 4).requires_grad_()
    y = x.detach().clone().requires_grad_()
    fused, composed = compat._fused_gelu(layer, x), compat.recbole_gelu(layer, y)
    assert torch.allclose(fused, composed, atol=1e-12, rtol=0)
    fused.sum().backward()
    composed.sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-12, rtol=0)
    # not the tanh approximation, which differs by up to about 1e-3
    assert (torch.nn.functional.gelu(y.detach(), approximate="tanh") - composed.detach()).abs().max() > 1e-4


# -- benchmarks/din_gap.py: DeepFM without the user side ---------------------------------------------
@pytest.mark.parametrize("variant, kept, dropped", [
    ("no user attributes", {"user_id", "item_id"}, {"age", "gender", "occupation", "zip_code"}),
    ("no user side", {"item_id"}, {"user_id", "age", "gender", "occupation", "zip_code"}),
])
def test_deepfm_without_the_user_side_embeds_no_user_field(data_root, workdir, variant, kept, dropped):
    import sys

    from recbole_mtl import benchmark, pipeline
    from recbole_mtl.config import Config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from din_gap import variant_config

    args = {"epochs": 1, "stopping_step": 1, "max_len": 10, "checkpoint_dir": str(workdir / "saved"),
            "data_path": str(data_root), "overrides": {"category_field": "class"}, "protocol": "full"}
    config_dict = variant_config(benchmark.run_config(benchmark.parse_spec("DeepFM"), 2020, 0, 1, 0.001, args),
                                 variant, "ml-slice")
    config_dict["state"] = "WARNING"
    built = pipeline.build(Config(model="DeepFM", dataset="ml-slice", config_dict=config_dict, cmd_args=[]))
    fields = set(built.model.field_names)
    assert kept <= fields and not (dropped & fields)
    assert "release_year" in fields  # the item's attributes stay
    # the leave-one-out split per user is the one the benchmark's DeepFM gets
    full = pipeline.build(Config(model="DeepFM", dataset="ml-slice", cmd_args=[], config_dict={
        **benchmark.run_config(benchmark.parse_spec("DeepFM"), 2020, 0, 1, 0.001, args), "state": "WARNING"}))
    assert {"user_id", "age"} <= set(full.model.field_names)
    assert len(built.test_data.dataset) == len(full.test_data.dataset)
    assert torch.equal(built.test_data.dataset.inter_feat["item_id"], full.test_data.dataset.inter_feat["item_id"])
    built.trainer.fit(built.train_data, built.valid_data, saved=False, show_progress=False)
    metrics, users = benchmark._interest_metrics_of_baseline(built.trainer, built.test_data, built.config)
    assert 0 < metrics["interest_auc"] < 1
    assert (users is None) == (variant == "no user side")  # no user field: nothing to pair users on
