"""Scale-out settings checked in one process: sharding constraints, the nn backend, CLI launch flags."""

from __future__ import annotations

import pytest
import torch

from recbole_mtl.cli import _forwarded_argv, build_parser
from recbole_mtl.checkpoint import shard_files, shard_path
from recbole_mtl.embedding.sharding import ShardingOptions
from recbole_mtl.errors import ConfigError
from recbole_mtl.quick_start import load_data_and_model, run_recbole_mtl
from tests.conftest import base_config

TABLES = ["item_id", "user_id", "age"]


def test_sharding_constraints_reach_the_planner_per_table():
    options = ShardingOptions.from_config({"sharding_types": {"item_id": "row_wise", "age": "data_parallel"},
                                           "compute_kernels": {"user_id": "fused"}})
    constraints = options.constraints(TABLES, unpooled=["item_id"])
    assert constraints["item_id"].sharding_types == ["row_wise"]
    assert constraints["age"].sharding_types == ["data_parallel"] and constraints["age"].compute_kernels == ["dense"]
    assert constraints["user_id"].compute_kernels == ["fused"] and constraints["user_id"].sharding_types is None


def test_the_item_table_is_never_left_to_data_parallel():
    constraints = ShardingOptions.from_config({}).constraints(TABLES, unpooled=["item_id"])
    assert "data_parallel" not in constraints["item_id"].sharding_types
    with pytest.raises(ConfigError, match="unpooled item-id table"):
        ShardingOptions.from_config({"sharding_types": {"item_id": "data_parallel"}}).constraints(TABLES, ["item_id"])


@pytest.mark.parametrize("config, message", [
    ({"sharding_types": {"item_id": "rowwise"}}, "choose one of .*row_wise"),
    ({"sharding_types": "row_wise"}, "must map table names"),
    ({"compute_kernels": {"age": "dense"}, "sharding_types": {"age": "row_wise"}}, "only with data_parallel"),
    ({"compute_kernels": {"age": "fused"}, "sharding_types": {"age": "data_parallel"}}, "only with the dense kernel"),
    ({"compute_kernels": {"age": "uvm"}}, "choose one of"),
])
def test_bad_sharding_settings_are_refused_clearly(config, message):
    with pytest.raises(ConfigError, match=message):
        ShardingOptions.from_config(config)


def test_unknown_tables_are_named():
    with pytest.raises(ConfigError, match=r"unknown tables \['genre'\].*item_id"):
        ShardingOptions.from_config({"sharding_types": {"genre": "row_wise"}}).constraints(TABLES, ["item_id"])


def test_launch_forwards_everything_but_the_launch_flags():
    parser = build_parser()
    args, unknown = parser.parse_known_args(["--model=MTLRec", "-d", "ml-slice", "--nproc=2", "--port=0",
                                             "--config_files=a.yaml b.yaml", "--epochs=3"])
    argv = _forwarded_argv(args, unknown)
    assert argv == ["--model=MTLRec", "--dataset=ml-slice", "--config_files=a.yaml b.yaml", "--epochs=3"]


def test_shard_files_must_be_complete(tmp_path):
    path = str(tmp_path / "MTLRec-x.pth")
    torch.save({}, shard_path(path, 0, 2))
    with pytest.raises(ConfigError, match=r"lacks the files of ranks \[1\]"):
        shard_files(path)
    torch.save({}, shard_path(path, 1, 2))
    assert shard_files(path) == [shard_path(path, 0, 2), shard_path(path, 1, 2)]


def test_nn_backend_trains_saves_and_reloads(data_root, workdir):
    config = base_config(data_root, embedding_backend="nn", embedding_optimizer="adagrad", MAX_ITEM_LIST_LENGTH=10,
                         embedding_size=16, n_layers=1, n_heads=1, inner_size=32, tasks=["sequence", "interest"])
    result = run_recbole_mtl(model="MTLRec", dataset="ml-slice", config_dict=config, cmd_args=[])
    _, model, _, _, _, _ = load_data_and_model(result["checkpoint"])
    table = model.sparse.item_collection.embeddings["item_id"]
    assert isinstance(table, torch.nn.Embedding) and table.sparse
    state = torch.load(result["checkpoint"], weights_only=True)
    saved = state["other_parameter"]["sparse_optimizer"]["items"]["embeddings.item_id.weight"]["sum"]
    assert saved.abs().sum() > 0  # Adagrad accumulators were saved
    torch.testing.assert_close(model.sparse.item_collection.embeddings["item_id"].weight.detach(),
                               state["state_dict"]["sparse.item_collection.embeddings.item_id.weight"])


def test_nn_backend_refuses_optimizers_without_sparse_gradients(data_root, workdir):
    config = base_config(data_root, embedding_backend="nn", embedding_optimizer="rowwise_adagrad")
    with pytest.raises(ConfigError, match="embedding_backend 'nn'.*choose one of \\['adagrad', 'sgd'\\]"):
        run_recbole_mtl(model="MTLRec", dataset="ml-slice", config_dict=config, cmd_args=[])


@pytest.mark.parametrize("learner, device, expected", [
    ("adagrad", "cpu", "adagrad"), ("sgd", "cpu", "sgd"), ("adam", "cpu", "rowwise_adagrad"),
    ("adam", "cuda", "adam"), ("rmsprop", "cpu", "rowwise_adagrad"),
])
def test_table_optimizer_follows_recboles_learner_when_unset(learner, device, expected):
    from recbole_mtl.embedding.fused import embedding_optimizer_name

    assert embedding_optimizer_name({"embedding_optimizer": None, "learner": learner}, torch.device(device)) == expected
    assert embedding_optimizer_name({"embedding_optimizer": "sgd", "learner": learner}, torch.device(device)) == "sgd"
