"""Multi-process MTLRec (torchrun, gloo, TorchRec DMP) against one process, on real processes.

One torchrun launch of 2 processes trains every variant (each sharding type, the planner's own
plan, a checkpoint resume) in turn; one plain process trains the reference. Full-batch steps
(the batch is the whole, even-sized training set, no shuffling, no dropout) make 2 processes on
half a batch each and 1 process on the whole batch the same optimisation, because TorchRec
and DDP average gradients over ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from recbole_mtl.cli import main as cli_main
from recbole_mtl.quick_start import load_data_and_model
from recbole_mtl.utils import get_trainer
from tests.conftest import write_slice

# gloo on CPU; where CUDA is available the ranks would take NCCL and one GPU each
pytestmark = pytest.mark.cpu_only

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "distributed_worker.py"
POOLED = ["user_id", "age", "gender", "occupation", "class", "release_year"]
EPOCHS = 3


def _base(data_root: Path) -> dict:
    return {
        "dataset": "ml-dist", "data_path": str(data_root), "seed": 2020, "show_progress": False,
        "state": "WARNING", "epochs": EPOCHS, "eval_step": 0, "shuffle": False,
        "window_batch_size": 100_000, "eval_batch_size": 4096,  # one full-batch step per epoch
        "tasks": ["sequence", "interest"], "dropout": 0.0, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0,
        "MAX_ITEM_LIST_LENGTH": 12, "embedding_size": 16, "n_layers": 1, "n_heads": 1, "inner_size": 32,
        "shared_hidden": [16], "tower_hidden": [16],
        # SGD for tables and dense layers: updates linear in the gradient, so float-rounding
        # differences (dense vs fused kernels, other summation orders) stay at rounding size;
        # Adam's and row-wise Adagrad's first steps divide by the gradient's own magnitude and
        # magnify them on parameters with ~0 gradient
        "embedding_optimizer": "sgd", "embedding_learning_rate": 50.0, "learner": "sgd", "learning_rate": 0.5,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "user": ["user_id", "age", "gender", "occupation"],
                     "item": ["item_id", "class", "release_year"]},
    }


VARIANTS = {
    "planner": {},
    "table_wise": {"sharding_types": {t: "table_wise" for t in ["item_id"] + POOLED}},
    "row_wise": {"sharding_types": {t: "row_wise" for t in ["item_id"] + POOLED}},
    "column_wise": {"sharding_types": {t: "column_wise" for t in ["item_id"] + POOLED}},
    "data_parallel": {"sharding_types": {"item_id": "row_wise", **{t: "data_parallel" for t in POOLED}}},
}
# checkpoint after 2 epochs, then a new run resumes it for the third; row-wise Adagrad has
# accumulators (sharded and replicated) that must travel with the checkpoint
ADAGRAD = {"embedding_optimizer": "rowwise_adagrad", "embedding_learning_rate": 0.1,
           "sharding_types": {"item_id": "row_wise", "user_id": "data_parallel", "class": "table_wise"}}
VARIANTS.update({
    "adagrad_straight": ADAGRAD,
    "adagrad_first_two": {**ADAGRAD, "epochs": 2},
    "adagrad_resumed": {**ADAGRAD, "resume_from": "adagrad_first_two"},
})


def _launch(nproc: int, spec: dict, out: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, str(WORKER), str(spec_file), str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               *cmd[1:]]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Results of the 1-process reference and of every 2-process variant."""
    root = tmp_path_factory.mktemp("dist")
    write_slice(root, "ml-dist", max_user=22)
    base = _base(root)
    _launch(1, {"base": base, "variants": {"single": {}}}, root / "one")
    single = torch.load(root / "one" / "single.pth", weights_only=True)
    # 2 processes also start from the single-process checkpoint (its last epoch: nothing left to train)
    variants = {**VARIANTS, "from_single": {"resume_path": single["checkpoint"]}}
    _launch(2, {"base": base, "variants": variants}, root / "two")
    results = {"single": single}
    for name in variants:
        results[name] = torch.load(root / "two" / f"{name}.pth", weights_only=True)
    results["root"] = root
    return results


def _assert_same_training(single: dict, multi: dict) -> None:
    assert single["n_train"] % 2 == 0, "the full batch must split evenly over 2 ranks"
    assert multi["world_size"] == 2 and single["world_size"] == 1
    assert list(single["losses"]) == list(range(EPOCHS))
    for epoch, loss in single["losses"].items():
        assert multi["losses"][epoch] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"epoch {epoch}"
    assert single["losses"][EPOCHS - 1] < single["losses"][0]  # it did learn
    assert set(multi["tables"]) == set(single["tables"])
    for key, table in single["tables"].items():
        moved = (table - single["initial_tables"][key]).abs().max().item()
        assert moved > 1e-6, f"{key} did not train: the comparison would say nothing"
        torch.testing.assert_close(multi["initial_tables"][key], single["initial_tables"][key], atol=0, rtol=0)
        # within 0.1% of how far training moved the table
        torch.testing.assert_close(multi["tables"][key], table, atol=max(1e-3 * moved, 1e-7), rtol=0, msg=key)


def test_two_processes_train_like_one_with_the_planners_plan(runs):
    _assert_same_training(runs["single"], runs["planner"])
    plan = {row["table"]: row for row in runs["planner"]["plan"]}
    assert set(plan) == {"item_id", *POOLED}
    assert plan["item_id"]["sharding_type"] in ("table_wise", "row_wise", "column_wise")


@pytest.mark.parametrize("sharding_type", ["table_wise", "row_wise", "column_wise", "data_parallel"])
def test_every_cpu_sharding_type_trains_like_one_process(runs, sharding_type):
    result = runs[sharding_type]
    plan = {row["table"]: row for row in result["plan"]}
    for table in POOLED:
        assert plan[table]["sharding_type"] == sharding_type
        assert plan[table]["compute_kernel"] == ("dense" if sharding_type == "data_parallel" else "fused")
    if sharding_type in ("row_wise", "column_wise"):
        assert all(plan[t]["ranks"] == [0, 1] for t in ["item_id"] + POOLED)  # really split over both
    if sharding_type == "table_wise":
        assert {r for t in POOLED for r in plan[t]["ranks"]} == {0, 1}  # tables placed on both ranks
    _assert_same_training(runs["single"], result)


def test_resuming_a_sharded_checkpoint_continues_the_same_training(runs):
    first, resumed, straight = runs["adagrad_first_two"], runs["adagrad_resumed"], runs["adagrad_straight"]
    ckpt = Path(first["checkpoint"])
    shards = sorted(p.name for p in ckpt.parent.glob(ckpt.stem + ".rank*"))
    assert shards == [f"{ckpt.stem}.rank0-of-2.pth", f"{ckpt.stem}.rank1-of-2.pth"]
    state = torch.load(ckpt.parent / shards[1], weights_only=True)  # plain tensors only
    sparse = state["other_parameter"]["sparse_optimizer"]
    # as in RecBole, the resumed run goes on writing the checkpoint it resumed (now at epoch 2)
    assert resumed["checkpoint"] == first["checkpoint"]
    assert state["epoch"] == EPOCHS - 1 and sparse["rank"] == 1 and sparse["world_size"] == 2
    assert sparse["optimizer"] and sparse["replicated_optimizer"]["feature_collection.embedding_bags.user_id.weight"]
    assert list(resumed["losses"]) == [EPOCHS - 1]
    assert resumed["losses"][EPOCHS - 1] == pytest.approx(straight["losses"][EPOCHS - 1], rel=1e-6)
    for key, table in straight["tables"].items():
        torch.testing.assert_close(resumed["tables"][key], table, atol=1e-6, rtol=1e-5, msg=key)
    assert any((resumed["tables"][k] - first["tables"][k]).abs().max() > 1e-3 for k in first["tables"])


def test_two_processes_shard_a_single_process_checkpoint(runs):
    loaded, single = runs["from_single"], runs["single"]
    assert loaded["losses"] == {}  # the checkpoint is at the last epoch
    for key, table in single["tables"].items():
        torch.testing.assert_close(loaded["tables"][key], table, atol=0, rtol=0, msg=key)
    ranking = ["recall@10", "mrr@10", "ndcg@10", "hit@10"]
    assert {k: loaded["test_result"][k] for k in ranking} == {k: single["test_result"][k] for k in ranking}


def test_export_is_a_single_process_checkpoint_with_rank0s_metrics(runs, monkeypatch):
    result = runs["row_wise"]
    path = result["checkpoint"]
    assert not os.path.isfile(path)  # only the per-rank files so far
    assert cli_main(["export", f"--checkpoint={path}"]) == path
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["exported_from"]["world_size"] == 2
    for key, table in result["tables"].items():
        torch.testing.assert_close(checkpoint["state_dict"][f"sparse.{key}"], table, atol=0, rtol=0)
    monkeypatch.chdir(runs["root"])
    config, model, _, _, _, test_data = load_data_and_model(path)
    assert config["single_spec"]
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    single = trainer.evaluate(test_data, load_best_model=False)
    assert dict(single) == result["test_result"]  # what rank 0 reported
    model.eval()
    with torch.no_grad():
        scores = model.predict_tasks(next(iter(test_data))[0])
    assert scores["sequence"].shape[1] == model.n_items
    for task, value in scores.items():  # every item's score, every interest probability
        torch.testing.assert_close(result["first_test_batch_scores"][task], value, atol=1e-5, rtol=1e-5, msg=task)


def test_a_rank_that_dies_stops_the_run_with_a_clear_error(tmp_path):
    write_slice(tmp_path, "ml-dist", max_user=22)
    cmd = [sys.executable, str(REPO / "run_recbole_mtl.py"), "--model=MTLRec", "--dataset=ml-dist", "--nproc=2",
           "--port=0", f"--data_path={tmp_path}", "--epochs=1000", "--eval_step=0",
           "--MAX_ITEM_LIST_LENGTH=10", "--embedding_size=8", "--n_layers=1", "--n_heads=1", "--inner_size=16",
           "--tasks=['sequence']", "--train_batch_size=256", "--show_progress=False"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = _wait_for_rank(proc.pid, rank=1, timeout=120)
        time.sleep(3)  # let it get into training
        victim.send_signal(signal.SIGKILL)
        killed = time.time()
        stdout, stderr = proc.communicate(timeout=90)
        elapsed = time.time() - killed
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
    assert proc.returncode != 0
    assert elapsed < 60, f"the surviving rank took {elapsed:.0f}s to stop"
    assert "a training process failed" in stderr
    assert "rank      : 1" in stderr and "SIGKILL" in stderr, stderr[-3000:]


def _wait_for_rank(launcher_pid: int, rank: int, timeout: float) -> psutil.Process:
    """The worker process of ``rank`` started by torchrun under ``launcher_pid``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in psutil.Process(launcher_pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "recbole_mtl.cli" in " ".join(child.cmdline()):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.5)
    raise AssertionError(f"no rank-{rank} worker appeared within {timeout}s")


def test_a_malformed_file_stops_every_rank_with_the_check_of_rank_0(tmp_path):
    inter = write_slice(tmp_path, "ml-dist", max_user=22) / "ml-dist.inter"
    lines = inter.read_text().splitlines()
    lines[5] = lines[5].split("\t")[0] + "\tfour"  # too few columns on line 6
    inter.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, str(REPO / "run_recbole_mtl.py"), "--model=MTLRec", "--dataset=ml-dist", "--nproc=2",
           "--port=0", f"--data_path={tmp_path}", "--epochs=1", "--show_progress=False"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    message = f"{inter}, line 6"
    assert proc.stderr.count(message) >= 2, proc.stderr[-3000:]  # rank 0's finding, raised by both ranks
