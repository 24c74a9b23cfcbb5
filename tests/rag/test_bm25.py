"""BM25 against bm25s (method "lucene") on the same tokens: scores equal, also after adds and deletes
(compared with bm25s indexing the remaining documents anew), and the saved state reopens equal."""

import random

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.rag.bm25 import BM25, tokenize

bm25s = pytest.importorskip("bm25s")


def corpus(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]
    weights = [1 / (i + 1) for i in range(60)]  # Zipf-like: some words in most documents, some in few
    return [rng.choices(vocab, weights, k=rng.randint(1, 40)) for _ in range(n)]


def reference(docs: list[list[str]], query: list[str], k1: float = 1.5, b: float = 0.75) -> torch.Tensor:
    r = bm25s.BM25(method="lucene", k1=k1, b=b)
    r.index(docs, show_progress=False)
    return torch.tensor(r.get_scores(query), dtype=torch.float32)


QUERIES = [["w0"], ["w1", "w7", "w1"], ["w30", "w59", "absent"], ["w3", "w4", "w5", "w6"]]


@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.3), (0.9, 1.0)])
def test_scores_equal_bm25s_lucene(k1, b):
    docs = corpus(300)
    ours = BM25(k1, b)
    ours.add(docs[:100])
    ours.add(docs[100:])  # two adds: the same as one
    for q in QUERIES:
        torch.testing.assert_close(ours.scores(q), reference(docs, q, k1, b), rtol=1e-5, atol=1e-5)


def test_delete_equals_indexing_the_rest_again():
    docs = corpus(200, seed=1)
    ours = BM25()
    ours.add(docs)
    keep = torch.tensor([i % 3 != 0 for i in range(len(docs))])
    ours.delete(keep)
    rest = [d for d, k in zip(docs, keep.tolist(), strict=True) if k]
    ours.add(corpus(20, seed=2))
    rest += corpus(20, seed=2)
    for q in QUERIES:
        torch.testing.assert_close(ours.scores(q), reference(rest, q), rtol=1e-5, atol=1e-5)


def test_search_and_state_round_trip():
    docs = corpus(100, seed=3)
    ours = BM25()
    ours.add(docs)
    scores, rows = ours.search(["w2", "w40"], 5)
    full = ours.scores(["w2", "w40"])
    assert scores.tolist() == sorted(full.tolist(), reverse=True)[:5]
    assert torch.equal(full[rows], scores)
    tensors, fields = ours.state()
    again = BM25.from_state(tensors, fields)
    torch.testing.assert_close(again.scores(["w2", "w40"]), full)
    assert ours.search(["absent"], 5)[1].numel() == 0  # nothing matches: nothing returned


def test_tokenize_and_bad_settings():
    assert tokenize("What does the zip() function do? ZIP it!") == ["zip", "function", "zip"]
    with pytest.raises(UserError, match="k1 >= 0"):
        BM25(k1=-1)
    assert BM25().scores(["w1"]).numel() == 0
