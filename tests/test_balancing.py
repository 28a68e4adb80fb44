"""Task balancing: each method against hand-computed cases, then inside real training steps.

The step tests use real RecBole data (a slice of ml-100k) and the real fused TorchRec/FBGEMM
tables with the ``sgd`` embedding optimizer, so one fused update is exactly ``-lr * gradient``.
"""

from __future__ import annotations

import math

import pytest
import torch

from recbole_mtl.balancing import (
    BALANCING_METHODS, DynamicWeightAverage, GradNorm, LossBalancer, PCGrad, UncertaintyWeighting,
)
from recbole_mtl.config import Config
from recbole_mtl.errors import ConfigError
from recbole_mtl.pipeline import build_data_and_model
from recbole_mtl.utils import get_trainer
from tests.test_mtlrec import ITEM_TABLE, TITLE_TABLE, USER_TABLE, small_config, table

TASKS = ["sequence", "interest"]
TINY_MIXTURES = {"MTLRec": {}, "MMoE": {"num_experts": 2, "expert_hidden": [16]},
                 "PLE": {"num_levels": 2, "expert_hidden": [16]}}


def build(data_root, model="MTLRec", **overrides):
    config = Config(model=model, dataset="ml-slice", cmd_args=[],
                    config_dict=small_config(data_root, **{**TINY_MIXTURES[model], **overrides}))
    dataset, train, valid, test, built = build_data_and_model(config)
    return config, dataset, train, valid, test, built


# -- hand-computed cases ---------------------------------------------------------------------
def test_pcgrad_projects_two_conflicting_gradients_onto_each_others_normal_plane():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1 < 0
    combined, conflict_rate = PCGrad.project(torch.stack([g1, g2]))
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = [1, 0] + 1/2 [-1, 1] = [0.5, 0.5]
    # g2' = g2 - (g2.g1 / |g1|^2) g1 = [-1, 1] + 1 [1, 0]   = [0, 1]
    torch.testing.assert_close(combined, torch.tensor([0.5, 1.5]))
    assert conflict_rate == 1.0
    # each projection is orthogonal to the gradient it conflicted with
    assert torch.dot(torch.tensor([0.5, 0.5]), g2) == 0 and torch.dot(torch.tensor([0.0, 1.0]), g1) == 0


def test_pcgrad_leaves_agreeing_gradients_alone():
    grads = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, -0.5]])  # dot = 1 - 1 = 0: no conflict
    combined, conflict_rate = PCGrad.project(grads)
    torch.testing.assert_close(combined, grads.sum(0))
    assert conflict_rate == 0.0


def test_uncertainty_weighting_loss_and_gradient():
    balancer = UncertaintyWeighting(TASKS)
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    losses = torch.tensor([2.0, 3.0], requires_grad=True)
    terms = balancer(losses)
    # exp(-s) L + s: [2 + 0, 3/2 + ln 2]
    torch.testing.assert_close(terms, torch.tensor([2.0, 1.5 + math.log(2.0)]))
    terms.sum().backward()
    # d/ds = 1 - exp(-s) L = [1 - 2, 1 - 1.5];  d/dL = exp(-s) = [1, 0.5]
    torch.testing.assert_close(balancer.log_vars.grad, torch.tensor([-1.0, -0.5]))
    torch.testing.assert_close(losses.grad, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(balancer.multipliers(), torch.tensor([1.0, 0.5]))


def test_gradnorm_weight_update_for_a_known_pair_of_losses():
    balancer = GradNorm(TASKS, alpha=1.0, lr=0.1)
    # step 1: L(0) = [2, 1], so both loss ratios are 1; g = [1, 3], G = w g = [1, 3], target = mean(G) = 2
    # d/dw = sign(G - target) g / mean(g) = [-1 * 1/2, +1 * 3/2]; w = [1, 1] - 0.1 [-0.5, 1.5] = [1.05, 0.85]
    w = balancer.step(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(w, torch.tensor([1.05, 0.85]) * 2 / 1.9)  # renormalised to sum to 2
    torch.testing.assert_close(balancer.initial_losses, torch.tensor([2.0, 1.0]))
    # step 2: L = [1, 0.8], ratios [0.5, 0.8], relative r = [0.5, 0.8] / 0.65; g = [2, 2]
    w1 = torch.tensor([1.05, 0.85]) * 2 / 1.9
    G = w1 * 2.0
    target = G.mean() * torch.tensor([0.5 / 0.65, 0.8 / 0.65])
    assert G[0] > target[0] and G[1] < target[1]  # task 1 trains faster: its weight must fall
    w2 = w1 - 0.1 * torch.tensor([1.0, -1.0]) * 2.0 / 2.0
    w = balancer.step(torch.tensor([1.0, 0.8]), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(w, w2 * 2 / w2.sum())
    assert w[0] < w1[0] and w[1] > w1[1]


def test_gradnorm_alpha_zero_equalises_gradient_norms():
    balancer = GradNorm(TASKS, alpha=0.0, lr=0.05)
    for _ in range(200):  # g fixed at [1, 4]: equal G needs w proportional to [4, 1]
        balancer.step(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 4.0]))
    torch.testing.assert_close(balancer.weights, torch.tensor([1.6, 0.4]), atol=0.06, rtol=0)


def test_dwa_weights_from_a_known_loss_history():
    balancer = DynamicWeightAverage(TASKS, temperature=2.0)
    balancer.update_epoch(torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(balancer.multipliers(), torch.ones(2))  # one epoch: no rate yet
    balancer.update_epoch(torch.tensor([1.0, 0.9]))
    # r = [1/2, 0.9/1] = [0.5, 0.9]; w = 2 exp(r/2) / sum exp(r/2)
    e = [math.exp(0.25), math.exp(0.45)]
    torch.testing.assert_close(balancer.multipliers(), torch.tensor([2 * e[0] / sum(e), 2 * e[1] / sum(e)]))
    balancer.update_epoch(torch.tensor([0.5, 0.9]))  # r = [0.5, 1.0]: the stalled task gains weight
    e = [math.exp(0.25), math.exp(0.5)]
    torch.testing.assert_close(balancer.multipliers(), torch.tensor([2 * e[0] / sum(e), 2 * e[1] / sum(e)]))


def test_epoch_log_reports_effective_weights_and_mean_grad_norms():
    balancer = DynamicWeightAverage(TASKS, task_weights=[1.0, 0.5])
    for losses in ([2.0, 1.0], [4.0, 1.0]):
        balancer.record("loss", torch.tensor(losses))
        balancer.record("grad_norm", torch.tensor(losses) / 2)
    assert balancer.end_epoch() == {"weight/sequence": 1.0, "weight/interest": 0.5,
                                    "grad_norm/sequence": 1.5, "grad_norm/interest": 0.5}
    torch.testing.assert_close(balancer.history[1], torch.tensor([3.0, 1.0]))  # the epoch's mean losses
    assert LossBalancer(TASKS, [1.0, 0.25]).end_epoch() == {"weight/sequence": 1.0, "weight/interest": 0.25}


# -- inside training steps on real data ------------------------------------------------------
SGD = {"embedding_optimizer": "sgd", "embedding_learning_rate": 0.5, "learner": "sgd", "learning_rate": 0.1,
       "dropout": 0.0, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def _step(data_root, model_name="MTLRec", backward_twice=False, **overrides):
    """One training step exactly as RecBole's loop runs it; returns the model, tables before, trainer."""
    config, _, train, _, _, model = build(data_root, model_name, **{**SGD, **overrides})
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    batch = next(iter(train))
    before = {name: table(model, name) for name in (ITEM_TABLE, USER_TABLE, TITLE_TABLE)}
    dense_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("sparse.")}
    model.train()
    torch.manual_seed(7)  # the category items drawn this step
    trainer.optimizer.zero_grad()
    terms = trainer._balanced_loss(batch)
    surgery = list(trainer._surgery)
    sum(terms).backward(retain_graph=backward_twice)
    if backward_twice:
        sum(terms).backward()
    trainer.optimizer.step()
    return model, before, dense_before, surgery, trainer


@pytest.fixture(scope="module")
def fixed_step(data_root):
    """Table values before, and their change after, one ``fixed`` step."""
    fixed, before, _, _, _ = _step(data_root)
    return before, {name: table(fixed, name) - before[name] for name in before}


def test_a_second_backward_would_show_as_a_second_table_update(fixed_step, data_root):
    before, deltas = fixed_step
    assert all(d.abs().sum() > 0 for d in deltas.values())
    twice, _, _, _, _ = _step(data_root, backward_twice=True)
    torch.testing.assert_close(table(twice, ITEM_TABLE) - before[ITEM_TABLE], 2 * deltas[ITEM_TABLE])


@pytest.mark.parametrize("method", ["pcgrad", "gradnorm", "uncertainty"])
def test_fused_tables_update_exactly_once_per_step(method, fixed_step, data_root):
    before, deltas = fixed_step
    other, before_other, _, _, _ = _step(data_root, loss_balance=method)
    for name in before:
        torch.testing.assert_close(before_other[name], before[name])
        # pcgrad and gradnorm (first step: weights 1) feed the tables the plain weighted sum;
        # uncertainty's exp(-0) = 1 multiplies it by 1 too
        torch.testing.assert_close(table(other, name) - before_other[name], deltas[name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("category_head", ["neighbours", "mlp"])
def test_pcgrad_applies_the_projected_gradient_to_shared_parameters_only(data_root, category_head):
    model, _, dense_before, surgery, trainer = _step(data_root, model_name="MMoE", loss_balance="pcgrad",
                                                     category_head=category_head)
    assert surgery and not trainer._surgery  # computed during the loss, consumed by the step
    names = {id(p): n for n, p in model.named_parameters()}
    shared = {names[id(p)] for p, _ in surgery}
    assert any(n.startswith("encoder.") for n in shared) and any(n.startswith("mixture.experts.") for n in shared)
    # the item tower is shared by interest and the mlp category head; the neighbours head reads id embeddings
    assert any(n.startswith("item_tower.") for n in shared) == (category_head == "mlp")
    assert not any(n.startswith(("mixture.gate.", "heads.")) for n in shared)
    for param, grad in surgery:  # learner sgd, lr 0.1: the step applied exactly the PCGrad gradient
        torch.testing.assert_close(param.detach() - dense_before[names[id(param)]], -0.1 * grad)


@pytest.mark.parametrize("category_head", ["neighbours", "mlp"])
def test_gradnorm_moves_weights_during_a_step_and_logs_norms(data_root, category_head):
    model, _, _, _, trainer = _step(data_root, model_name="PLE", loss_balance="gradnorm", gradnorm_lr=0.1,
                                    category_head=category_head)
    weights = model.balancer.weights
    assert not torch.allclose(weights, torch.ones(3)) and weights.sum().item() == pytest.approx(3.0)
    assert (model.balancer.initial_losses > 0).all()
    logged = model.balancer.end_epoch()
    # user-side tasks reach the experts' last layers, the mlp category head the item tower's; the
    # neighbours head reads the fused item table alone, whose gradient is never exposed
    reaching = model.tasks if category_head == "mlp" else model.user_tasks
    assert all(logged[f"grad_norm/{t}"] > 0 for t in reaching)
    assert all(logged[f"grad_norm/{t}"] == 0 for t in model.tasks if t not in reaching)


def test_learned_balancing_state_travels_with_the_checkpoint(data_root, workdir):
    from recbole_mtl.quick_start import run_recbole_mtl

    result = run_recbole_mtl(model="MMoE", dataset="ml-slice", cmd_args=[],
                             config_dict=small_config(data_root, loss_balance="uncertainty", train_batch_size=1024,
                                                     **TINY_MIXTURES["MMoE"]))
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    assert state["balancer.log_vars"].abs().sum() > 0
    config, _, _, _, _, fresh = build(data_root, "MMoE", loss_balance="uncertainty")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, fresh)
    trainer.resume_checkpoint(result["checkpoint"])
    torch.testing.assert_close(fresh.balancer.log_vars.detach(), state["balancer.log_vars"])
    # the log-variances train with the dense learner, without weight decay
    assert any(g["weight_decay"] == 0.0 and g["params"][0] is fresh.balancer.log_vars
               for g in trainer.optimizer.param_groups)
    config, _, _, _, _, fixed = build(data_root, "MMoE")
    with pytest.raises(ConfigError, match=r"balancing state \['balancer.log_vars'\] does not fit loss_balance: fixed"):
        get_trainer(config["MODEL_TYPE"], config["model"])(config, fixed).resume_checkpoint(result["checkpoint"])


def test_every_listed_balancing_method_builds_the_balancer_of_that_name():
    from recbole_mtl.balancing import build_balancer

    tasks = ["sequence", "interest"]
    built = {name: build_balancer({"loss_balance": name, "gradnorm_alpha": None, "gradnorm_lr": None,
                                   "dwa_temperature": None}, tasks, [1.0, 0.5]) for name in BALANCING_METHODS}
    assert {name: balancer.name for name, balancer in built.items()} == {name: name for name in BALANCING_METHODS}
    assert len({type(b) for b in built.values()}) == len(BALANCING_METHODS)  # one class per method


@pytest.mark.parametrize("key, value, message", [
    ("loss_balance", "gradnrom",
     "loss_balance must be one of fixed, uncertainty, gradnorm, dwa, pcgrad.*Did you mean: gradnorm"),
    ("gradnorm_alpha", -1.0, "gradnorm_alpha must be a number >= 0"),
    ("dwa_temperature", 0.0, "dwa_temperature must be a number > 0"),
])
def test_bad_balancing_settings_are_config_errors(key, value, message, data_root):
    overrides = {key: value}
    if key != "loss_balance":
        overrides["loss_balance"] = key.split("_")[0]
    with pytest.raises(ConfigError, match=message):
        build(data_root, **overrides)
