"""The sparse arch: KJT conversion and fused TorchRec/FBGEMM tables against plain PyTorch."""

from __future__ import annotations

import io
import unittest

import torch
from torch.nn import functional as F
from torchrec import EmbeddingBagConfig, EmbeddingConfig
from torchrec.modules.embedding_configs import PoolingType

from recbole_mtl.embedding import build_kjt
from recbole_mtl.embedding.fused import (
    fused_embedding_bag_collection,
    fused_embedding_collection,
    sparse_optimizer,
)


class BuildKJTTest(unittest.TestCase):
    def test_tokens_sequences_padding_rows_and_single_bags(self):
        kjt = build_kjt(
            {"user_id": torch.tensor([4, 0, 7]),
             "item_id_list": torch.tensor([[3, 5, 0], [2, 0, 0], [9, 8, 1]]),
             "title@category": torch.tensor([[1, 2], [0, 0]])},
            stride=3,
            single_bags={"candidate_item": torch.tensor([1, 2, 3, 4])},
        )
        d = kjt.to_dict()
        self.assertEqual(kjt.keys(), ["user_id", "item_id_list", "title@category", "candidate_item"])
        self.assertEqual(d["user_id"].lengths().tolist(), [1, 0, 1])
        self.assertEqual(d["user_id"].values().tolist(), [4, 7])
        self.assertEqual(d["item_id_list"].lengths().tolist(), [2, 1, 3])
        self.assertEqual(d["item_id_list"].values().tolist(), [3, 5, 2, 9, 8, 1])
        self.assertEqual(d["title@category"].lengths().tolist(), [2, 0, 0])  # 2 rows padded to stride 3
        self.assertEqual(d["candidate_item"].lengths().tolist(), [4, 0, 0])

    def test_too_many_rows_is_an_error(self):
        with self.assertRaises(ValueError):
            build_kjt({"x": torch.tensor([1, 2, 3])}, stride=2)


class FusedTablesTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.sgd = sparse_optimizer("sgd", torch.device("cpu"))

    def test_unpooled_lookup_and_fused_update_match_nn_embedding(self):
        ec = fused_embedding_collection(
            [EmbeddingConfig(name="item_id", embedding_dim=8, num_embeddings=30,
                             feature_names=["item_id_list", "candidate_item"])],
            self.sgd, {"lr": 0.1}, torch.device("cpu"))
        weight = ec.state_dict()["embeddings.item_id.weight"].clone()
        reference = torch.nn.Embedding.from_pretrained(weight.clone(), freeze=False)
        seq = torch.tensor([[3, 5, 0], [7, 0, 0]])
        cands = torch.arange(1, 30)
        out = ec(build_kjt({"item_id_list": seq}, 2, {"candidate_item": cands}))
        padded = out["item_id_list"].to_padded_dense(desired_length=3)
        expected = reference(seq) * (seq != 0).unsqueeze(-1)
        torch.testing.assert_close(padded, expected)
        torch.testing.assert_close(out["candidate_item"].values(), reference(cands))
        # one SGD step fused into backward == a plain SGD step on nn.Embedding
        loss = (padded.sum(1) @ out["candidate_item"].values().t()).logsumexp(1).sum()
        loss.backward()
        ref_seq = reference(seq) * (seq != 0).unsqueeze(-1)
        ref_loss = (ref_seq.sum(1) @ reference(cands).t()).logsumexp(1).sum()
        ref_loss.backward()
        with torch.no_grad():
            expected_weight = reference.weight - 0.1 * reference.weight.grad
        torch.testing.assert_close(ec.state_dict()["embeddings.item_id.weight"], expected_weight)
        self.assertFalse(torch.equal(ec.state_dict()["embeddings.item_id.weight"], weight))

    def test_pooled_mean_lookup_and_update_match_embedding_bag(self):
        ebc = fused_embedding_bag_collection(
            [EmbeddingBagConfig(name="title", embedding_dim=4, num_embeddings=12, feature_names=["title"],
                                pooling=PoolingType.MEAN)], self.sgd, {"lr": 0.5}, torch.device("cpu"))
        weight = ebc.state_dict()["embedding_bags.title.weight"].clone().requires_grad_(True)
        ids = torch.tensor([[1, 4, 0], [0, 0, 0], [2, 2, 7]])
        pooled = ebc(build_kjt({"title": ids}, 3))["title"]
        bags = [r[r != 0] for r in ids]
        expected = torch.stack([F.embedding(b, weight).mean(0) if len(b) else weight.new_zeros(4) for b in bags])
        torch.testing.assert_close(pooled, expected)
        (pooled ** 2).sum().backward()
        (expected ** 2).sum().backward()
        torch.testing.assert_close(ebc.state_dict()["embedding_bags.title.weight"], (weight - 0.5 * weight.grad).detach())

    def test_state_dict_is_plain_and_loads_with_weights_only(self):
        ec = fused_embedding_collection(
            [EmbeddingConfig(name="item_id", embedding_dim=4, num_embeddings=10, feature_names=["x"])],
            sparse_optimizer("rowwise_adagrad", torch.device("cpu")), {"lr": 0.1, "eps": 1e-8},
            torch.device("cpu"))
        buf = io.BytesIO()
        torch.save({"state_dict": ec.state_dict(), "opt": ec.fused_optimizer().state_dict()}, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        fresh = fused_embedding_collection(
            [EmbeddingConfig(name="item_id", embedding_dim=4, num_embeddings=10, feature_names=["x"])],
            sparse_optimizer("rowwise_adagrad", torch.device("cpu")), {"lr": 0.1, "eps": 1e-8},
            torch.device("cpu"))
        fresh.load_state_dict(loaded["state_dict"])
        ids = torch.tensor([[1, 2], [3, 0]])
        torch.testing.assert_close(fresh(build_kjt({"x": ids}, 2))["x"].values(), ec(build_kjt({"x": ids}, 2))["x"].values())

    def test_adam_on_cpu_is_refused_clearly(self):
        with self.assertRaisesRegex(ValueError, "cannot be fused into FBGEMM's CPU kernels"):
            sparse_optimizer("adam", torch.device("cpu"))


class RowKeyedInitTest(unittest.TestCase):
    """A row's initial value depends only on (seed, table, row): shards fill in what the whole table has."""

    ROWS, DIM = 9000, 8  # three blocks of BLOCK_ROWS (4096), the last one partial

    def whole(self, table="item_id", seed=3):
        from recbole_mtl.embedding.init import fill_rows

        out = torch.empty(self.ROWS, self.DIM)
        fill_rows(out, table, self.ROWS, seed)
        return out

    def test_any_shard_gets_the_rows_of_the_whole_table(self):
        from recbole_mtl.embedding.init import fill_rows

        whole = self.whole()
        for rows, cols in [((0, 4500), (0, 8)), ((4500, 9000), (0, 8)), ((4095, 4097), (2, 6)),
                           ((3000, 3001), (4, 8)), ((8191, 9000), (0, 4))]:
            part = torch.empty(rows[1] - rows[0], cols[1] - cols[0])
            fill_rows(part, "item_id", self.ROWS, 3, row_offset=rows[0], col_offset=cols[0], dim=self.DIM)
            torch.testing.assert_close(part, whole[rows[0]:rows[1], cols[0]:cols[1]], atol=0, rtol=0)

    def test_values_follow_fbgemms_default_and_differ_by_table_and_seed(self):
        whole = self.whole()
        bound = 1.0 / self.ROWS ** 0.5
        self.assertLessEqual(whole.abs().max().item(), bound)
        self.assertGreater(whole.abs().max().item(), 0.9 * bound)
        self.assertAlmostEqual(whole.mean().item(), 0.0, delta=0.02 * bound)
        n = self.ROWS - 2 * 4096  # rows of the last, partial block
        for a, b in [(0, 4096), (0, 8192), (4096, 8192)]:  # no block repeats another's values
            self.assertLess((whole[a:a + n] == whole[b:b + n]).float().mean().item(), 1e-3, (a, b))
        self.assertFalse(torch.equal(whole, self.whole(table="user_id")))
        self.assertFalse(torch.equal(whole, self.whole(seed=4)))
        torch.testing.assert_close(whole, self.whole(), atol=0, rtol=0)

    def test_building_tables_leaves_the_global_random_stream_alone(self):
        from recbole_mtl.embedding.features import FeatureSpec
        from recbole_mtl.embedding.sparse_arch import build_sparse_arch

        spec = FeatureSpec(n_items=5000, user_fields=[], item_fields=[], user_floats=[], item_floats=[])
        for backend, optimizer in [("fused", "rowwise_adagrad"), ("nn", "adagrad")]:
            torch.manual_seed(0)
            arch = build_sparse_arch(spec, 8, optimizer, 0.1, torch.device("cpu"), backend=backend, seed=3)
            after = torch.rand(4)
            torch.manual_seed(0)
            self.assertTrue(torch.equal(after, torch.rand(4)), backend)
            table = arch.state_dict()["item_collection.embeddings.item_id.weight"]
            expected = torch.empty(5000, 8)
            from recbole_mtl.embedding.init import fill_rows
            fill_rows(expected, "item_id", 5000, 3)
            torch.testing.assert_close(table, expected, atol=0, rtol=0, msg=backend)
