"""MMoE and PLE: gates, what each task reads, and 1-epoch training with every balancing method."""

from __future__ import annotations

import pytest
import torch

from recbole_mtl.balancing import BALANCING_METHODS
from recbole_mtl.config import Config
from recbole_mtl.errors import ConfigError
from recbole_mtl.model.mixtures import MultiGateMixture, ProgressiveLayeredExtraction, SharedBottom
from recbole_mtl.quick_start import run_recbole_mtl
from tests.conftest import write_slice
from tests.test_balancing import TINY_MIXTURES, build
from tests.test_mtlrec import _check_ranges, small_config

TASKS = ["sequence", "interest"]


def _rows_are_distributions(gate: torch.Tensor, width: int) -> None:
    assert gate.shape == (5, width)
    assert (gate > 0).all()
    torch.testing.assert_close(gate.sum(-1), torch.ones(5))


def test_mmoe_gates_sum_to_one_and_differ_per_task():
    torch.manual_seed(0)
    mixture = MultiGateMixture(12, [8], 6, TASKS, num_experts=3, dropout=0.0)
    x, base = torch.randn(5, 12), torch.randn(5, 6)
    gates = mixture.gates(x)
    assert set(gates) == set(TASKS)
    for gate in gates.values():
        _rows_are_distributions(gate, 3)
    out = mixture(x, base)
    assert out["sequence"].shape == (5, 6) and not torch.allclose(out["sequence"], out["interest"])
    # by hand: LayerNorm_t(base + sum_k gate_tk expert_k(x))
    experts = torch.stack([e(x) for e in mixture.experts], 1)
    mixed = (gates["interest"].unsqueeze(-1) * experts).sum(1)
    torch.testing.assert_close(out["interest"], mixture.norm["interest"](base + mixed))


def test_ple_gates_sum_to_one_over_own_and_shared_experts():
    torch.manual_seed(0)
    mixture = ProgressiveLayeredExtraction(12, [8], 6, TASKS, num_levels=2, num_shared=2, num_specific=1, dropout=0.0)
    levels = mixture.gates(torch.randn(5, 12))
    assert len(levels) == 2
    assert set(levels[0]) == {"sequence", "interest", "shared"} and set(levels[1]) == set(TASKS)
    for level in levels:
        for name, gate in level.items():
            _rows_are_distributions(gate, 2 * 1 + 2 if name == "shared" else 1 + 2)


def test_ple_task_reads_only_its_own_and_shared_experts():
    torch.manual_seed(0)
    mixture = ProgressiveLayeredExtraction(12, [8], 6, TASKS, num_levels=1, num_shared=1, num_specific=1, dropout=0.0)
    x, base = torch.randn(5, 12), torch.randn(5, 6)
    before = mixture(x, base)
    with torch.no_grad():
        mixture.levels[0].specific["interest"][0][-1].weight.add_(torch.randn(6, 8))
    after = mixture(x, base)
    torch.testing.assert_close(after["sequence"], before["sequence"])
    assert not torch.allclose(after["interest"], before["interest"])
    with torch.no_grad():
        mixture.levels[0].shared[0][-1].weight.add_(torch.randn(6, 8))  # the shared expert moves both
    again = mixture(x, base)
    assert not torch.allclose(again["sequence"], after["sequence"])
    assert not torch.allclose(again["interest"], after["interest"])


def test_last_shared_parameters_are_read_by_several_tasks():
    shared = SharedBottom(12, [8], 6, TASKS, 0.0)
    mmoe = MultiGateMixture(12, [8], 6, TASKS, 3, 0.0)
    ple = ProgressiveLayeredExtraction(12, [8], 6, TASKS, 2, 2, 1, 0.0)
    assert [p.shape for p in shared.last_shared_parameters()] == [(6, 8)]
    assert len(mmoe.last_shared_parameters()) == 3 and len(ple.last_shared_parameters()) == 2
    assert all(p is e[-1].weight for p, e in zip(ple.last_shared_parameters(), ple.levels[-1].shared))


@pytest.mark.parametrize("model", ["MMoE", "PLE"])
def test_models_read_mtlrec_keys_and_their_own(model, data_root):
    config = Config(model=model, dataset="ml-slice", config_dict=small_config(data_root), cmd_args=[])
    assert config["tasks"] == ["sequence", "interest", "category"] and config["loss_balance"] == "fixed"
    assert config["expert_hidden"] == [128]
    assert (config["num_experts"] == 4) == (model == "MMoE") and (config["num_levels"] == 2) == (model == "PLE")


@pytest.mark.parametrize("model, key, value", [
    ("MMoE", "num_experts", 0), ("PLE", "num_levels", 0), ("PLE", "num_shared_experts", 0),
])
def test_bad_expert_counts_are_config_errors(model, key, value, data_root):
    with pytest.raises(ConfigError, match=f"{key} must be an integer >= 1; got 0"):
        build(data_root, model, **{key: value})


ALL_TASKS = ["sequence", "interest", "category"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """60 users of ml-100k: ten 1-epoch runs stay cheap."""
    root = tmp_path_factory.mktemp("tiny")
    write_slice(root, "ml-tiny", max_user=60)
    return root


@pytest.mark.parametrize("method", BALANCING_METHODS)
@pytest.mark.parametrize("model", ["MMoE", "PLE"])
def test_one_epoch_with_every_balancing_method_reports_every_task(model, method, tiny_root, workdir):
    config = small_config(tiny_root, loss_balance=method, train_batch_size=1024, **TINY_MIXTURES[model])
    result = run_recbole_mtl(model=model, dataset="ml-tiny", cmd_args=[], config_dict=config)
    _check_ranges(result["test_result"], ALL_TASKS)
    _check_ranges(result["best_valid_result"], ALL_TASKS)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((workdir / "log_tensorboard").iterdir()))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"Balance/weight/{t}" for t in ALL_TASKS} <= tags
    assert ({f"Balance/grad_norm/{t}" for t in ALL_TASKS} <= tags) == (method in ("gradnorm", "pcgrad"))
    assert {f"Loss/Train/{t}_loss" for t in ALL_TASKS} <= tags
