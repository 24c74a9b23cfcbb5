"""Retrieval metrics against scikit-learn's nDCG and by-hand definitions; reciprocal rank fusion as the paper
defines it."""

import random

import pytest

from llmlab.rag.hybrid import reciprocal_rank_fusion
from llmlab.rag.metrics import ndcg_at_k, recall_at_k, reciprocal_rank, retrieval_scores


def test_ndcg_equals_scikit_learn():
    ndcg_score = pytest.importorskip("sklearn.metrics").ndcg_score
    rng = random.Random(0)
    for _ in range(50):
        items = list(range(20))
        rng.shuffle(items)
        relevant = set(rng.sample(range(20), rng.randint(1, 6)))
        k = rng.choice([1, 3, 5, 10, 20])
        y_true = [[1.0 if i in relevant else 0.0 for i in range(20)]]
        y_score = [[20.0 - items.index(i) for i in range(20)]]  # rank -> descending score
        assert ndcg_at_k(items, relevant, k) == pytest.approx(ndcg_score(y_true, y_score, k=k))


def test_recall_and_mrr_by_hand():
    retrieved = ["x", "a", "a", "y", "b"]  # a repeated item counts once
    assert recall_at_k(retrieved, {"a", "b"}, 2) == 0.5
    assert recall_at_k(retrieved, {"a", "b"}, 4) == 1.0  # the repeat does not take a place
    assert reciprocal_rank(retrieved, {"b"}) == pytest.approx(1 / 4)
    assert reciprocal_rank(retrieved, {"z"}) == 0.0
    scores = retrieval_scores([(["a", "x"], {"a"}), (["x", "y"], {"a"})], (1, 2))
    assert scores == {"recall@1": 0.5, "recall@2": 0.5, "ndcg@1": 0.5, "ndcg@2": 0.5, "mrr": 0.5}


def test_rrf_is_the_sum_of_reciprocal_ranks():
    dense, lexical = ["a", "b", "c"], ["c", "d", "a"]
    fused = dict(reciprocal_rank_fusion([dense, lexical]))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 63)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)
    order = [i for i, _ in reciprocal_rank_fusion([dense, lexical], limit=2)]
    assert order == ["a", "c"]  # tied: first seen first
