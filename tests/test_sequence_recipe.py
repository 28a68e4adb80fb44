"""The next-item recipe keys, each against the loss computed by hand on a 3-item case:
normalised scores over a temperature (fixed or learned), sampled softmax with popularity or
in-batch negatives and the log-Q correction, and the learning-rate warm-up schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from recbole_mtl.errors import ConfigError
from recbole_mtl.tasks.sequence import SequenceTask
from recbole_mtl.utils import get_trainer
from tests.test_mtlrec import build

# three items (ids 1..3; 0 is padding), two positions
EMB = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
USER = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
TARGETS = torch.tensor([1, 3])
POPULARITY = torch.tensor([0.0, 0.2, 0.3, 0.5])  # Q(i) of items 1..3


class _Rows:
    """The part of a batch the sequence task reads: fixed user vectors and item embeddings."""

    all_positions, item = True, None

    def __init__(self, training=True):
        self.training, self.next_item = training, TARGETS

    def user(self, task):
        return USER

    def item_embedding(self, ids):
        return EMB[ids]


@pytest.fixture(scope="module")
def slice_data(data_root):
    config, dataset, train, _, _, model = build(data_root, tasks=["sequence"])
    return config, dataset, train


def task_for(slice_data, **keys):
    config, dataset, _ = slice_data
    for key, value in keys.items():
        config[key] = value
    try:
        task = SequenceTask(config, dataset, 2, 0.0)
    finally:
        for key in keys:
            config[key] = None
    task.n_items = 4  # the hand-built case: items 1..3
    task.popularity, task.log_popularity = POPULARITY, torch.log(POPULARITY.clamp(min=1e-12))
    with torch.no_grad():  # an identity head: the query is the user vector
        task.head.weight.copy_(torch.eye(2))
        task.head.bias.zero_()
    return task


def test_cosine_scores_over_a_temperature_in_full_softmax(slice_data):
    task = task_for(slice_data, sequence_score="cosine", sequence_temperature=0.1)
    batch = _Rows()
    task.items(batch)
    loss = task.loss(batch)
    q = USER / USER.norm(dim=1, keepdim=True)
    e = EMB.clone()
    e[1:] = e[1:] / e[1:].norm(dim=1, keepdim=True)
    expected = F.cross_entropy(q @ e.t() / 0.1, TARGETS)
    torch.testing.assert_close(loss, expected)
    # evaluation ranks by the same normalised scores
    task.eval()
    scores = task.predict(_Rows(training=False))
    task.items(_Rows(training=False))
    torch.testing.assert_close(task.predict(_Rows(training=False)), q @ e.t() / 0.1)
    assert scores.shape == (2, 4)
    # the dot product (the default) is a different loss on the same case
    dot = task_for(slice_data)
    dot.items(batch)
    torch.testing.assert_close(dot.loss(batch), F.cross_entropy(USER @ EMB.t(), TARGETS))
    assert not torch.isclose(dot.loss(batch), loss)


def test_learned_temperature_is_a_parameter_that_training_moves(slice_data):
    task = task_for(slice_data, sequence_score="cosine", sequence_temperature=0.5, learn_temperature=True)
    assert isinstance(task.log_scale, torch.nn.Parameter)
    torch.testing.assert_close(task.scale(), torch.tensor(2.0))
    batch = _Rows()
    task.items(batch)
    task.loss(batch).backward()
    assert task.log_scale.grad is not None and task.log_scale.grad.abs() > 0
    with pytest.raises(ConfigError, match="learn_temperature: True needs sequence_score: cosine"):
        task_for(slice_data, learn_temperature=True)


def test_popularity_negatives_with_log_q_correction(slice_data):
    task = task_for(slice_data, sequence_loss="sampled", negative_sampling="popularity", num_negatives=2)
    batch = _Rows()
    task.items(batch)
    task._candidates = torch.tensor([2, 3])  # 3 is the second row's target: an accidental hit
    loss = task.loss(batch)
    log_q = torch.log(POPULARITY.clamp(min=1e-12))
    pos = (USER * EMB[TARGETS]).sum(1, keepdim=True) - log_q[TARGETS].unsqueeze(1)
    neg = USER @ EMB[[2, 3]].t() - log_q[[2, 3]].unsqueeze(0)
    neg[1, 1] = float("-inf")
    expected = F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(loss, expected)
    uncorrected = task_for(slice_data, sequence_loss="sampled", negative_sampling="popularity", num_negatives=2,
                           logq_correction=False)
    uncorrected.items(batch)
    uncorrected._candidates = torch.tensor([2, 3])
    assert not torch.isclose(uncorrected.loss(batch), loss)


def test_popularity_negatives_follow_the_training_frequency(slice_data):
    config, dataset, _ = slice_data
    n = dataset.item_num - 1
    config["sequence_loss"], config["negative_sampling"], config["num_negatives"] = "sampled", "popularity", n
    try:
        task = SequenceTask(config, dataset, 2, 0.0)
    finally:
        config["sequence_loss"] = config["negative_sampling"] = config["num_negatives"] = None
    counts = torch.bincount(dataset.inter_feat[dataset.iid_field], minlength=dataset.item_num).float()
    counts[0] = 0
    batch = _Rows()
    drawn = sum(torch.bincount(task.items(batch)[:n], minlength=dataset.item_num).float() for _ in range(30))
    assert drawn[0] == 0  # padding is never drawn
    top = int(counts.argmax())
    assert abs(drawn[top] / drawn.sum() - counts[top] / counts.sum()) < 0.2 * counts[top] / counts.sum()
    assert drawn[counts == 0].sum() == 0


def test_in_batch_negatives_are_the_batch_targets_with_log_q(slice_data):
    task = task_for(slice_data, sequence_loss="sampled", negative_sampling="in_batch")
    batch = _Rows()
    wanted = task.items(batch)
    assert task._candidates.tolist() == [1, 3] and set(wanted.tolist()) == {1, 3}
    loss = task.loss(batch)
    log_q = torch.log(POPULARITY.clamp(min=1e-12))
    logits = USER @ EMB[[1, 3]].t() - log_q[[1, 3]].unsqueeze(0)
    pos = logits.gather(1, torch.tensor([[0], [1]]))
    logits[0, 0] = logits[1, 1] = float("-inf")  # each row's own target is its positive, not a negative
    expected = F.cross_entropy(torch.cat([pos, logits], 1), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("keys, message", [
    ({"sequence_score": "euclid"}, "sequence_score must be one of dot, cosine"),
    ({"negative_sampling": "hard"}, "negative_sampling must be one of uniform, popularity, in_batch"),
    ({"sequence_temperature": 0.0}, r"sequence_temperature must be in \(0, 10\]"),
    ({"sequence_loss": "sampled", "num_negatives": 0}, "num_negatives must be in"),
])
def test_bad_recipe_values_are_one_line_errors(slice_data, keys, message):
    with pytest.raises(ConfigError, match=message):
        task_for(slice_data, **keys)


def test_warmup_then_cosine_sets_the_rate_per_step(data_root):
    config, _, train, _, _, model = build(data_root, tasks=["sequence"], lr_scheduler="cosine", lr_warmup_steps=4,
                                          epochs=3, learning_rate=0.01)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    schedule = trainer.lr_scheduler
    schedule.start(steps_per_epoch=6, epoch=0)  # 18 steps in all, 4 of warm-up
    rates = [trainer.optimizer.param_groups[0]["lr"]]
    for _ in range(17):
        trainer.optimizer.step()  # the schedule follows the optimizer's steps
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    expected = [0.01 * (t + 1) / 4 for t in range(4)]
    expected += [0.01 * 0.5 * (1 + math.cos(math.pi * (t - 4) / 14)) for t in range(4, 18)]
    assert rates == pytest.approx(expected)
    # resuming at epoch 2 continues the schedule where it stood
    schedule.start(steps_per_epoch=6, epoch=2)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected[12])


def test_warmup_alone_is_constant_after_it_and_refuses_plateau(data_root):
    config, _, _, _, _, model = build(data_root, tasks=["sequence"], lr_warmup_steps=2, learning_rate=0.01)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.lr_scheduler.start(steps_per_epoch=5, epoch=0)
    rates = [trainer.optimizer.param_groups[0]["lr"]]
    for _ in range(4):
        trainer.optimizer.step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.005, 0.01, 0.01, 0.01, 0.01])
    config, _, _, _, _, model = build(data_root, tasks=["sequence"], lr_warmup_steps=2, lr_scheduler="plateau")
    with pytest.raises(ConfigError, match="lr_warmup_steps works with lr_scheduler: none or cosine"):
        get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
