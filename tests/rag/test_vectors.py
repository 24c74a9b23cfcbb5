"""The vector index: exact top-k ids equal faiss IndexFlatIP (blocked or not), IVF recall@10 against exact is
at least 0.95 at the default settings on embedding-like (clustered) vectors, int8 stays close, adds and
deletes behave, and the saved state reopens to the same answers."""

import pytest
import torch
import torch.nn.functional as F

import llmlab.rag.vectors as vectors_module
from llmlab.common.errors import UserError
from llmlab.rag.vectors import VectorIndex, kmeans, quantize_int8

faiss = pytest.importorskip("faiss")


def clustered(n: int, d: int, centers: int = 100, seed: int = 0) -> torch.Tensor:
    """Unit vectors around `centers` topics, as sentence embeddings of a corpus are (not uniform on the sphere)."""
    c = F.normalize(torch.randn(centers, d, generator=torch.Generator().manual_seed(1234)), dim=1)  # shared topics
    g = torch.Generator().manual_seed(seed)
    x = c[torch.randint(centers, (n,), generator=g)] + 0.6 * torch.randn(n, d, generator=g) / d ** 0.5
    return F.normalize(x, dim=1)


def recall(ids: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exact, strict=True)) / exact.numel()


@pytest.mark.parametrize("budget", [1 << 23, 64 * 1000])
def test_exact_equals_faiss_flat_ip(monkeypatch, budget):
    monkeypatch.setattr(vectors_module, "SCORE_BUDGET", budget)  # blocked over the corpus: the same answer
    x = torch.randn(5000, 48, generator=torch.Generator().manual_seed(1))
    q = torch.randn(64, 48, generator=torch.Generator().manual_seed(2))
    index = VectorIndex(48)
    index.add(x, torch.arange(5000) + 100)  # ids are not positions
    scores, ids = index.search(q, 10)
    flat = faiss.IndexFlatIP(48)
    flat.add(x.numpy())
    d, i = flat.search(q.numpy(), 10)
    assert torch.equal(ids, torch.from_numpy(i) + 100)
    torch.testing.assert_close(scores, torch.from_numpy(d), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True])
def test_ivf_recall_at_defaults(int8):
    x, q = clustered(20000, 64), clustered(200, 64, seed=1)[:, :]
    exact = VectorIndex(64)
    exact.add(x, torch.arange(len(x)))
    _, truth = exact.search(q, 10)
    ivf = VectorIndex(64, "ivf", int8=int8)
    ivf.add(x, torch.arange(len(x)))
    assert ivf.nlist == round(len(x) ** 0.5)
    _, ids = ivf.search(q, 10)  # batched path: one matmul per probed cell
    assert recall(ids, truth) >= 0.95
    few = torch.cat([ivf.search(row, 10)[1] for row in q[:20]])  # one query at a time: gathered path
    assert torch.equal(few, ids[:20])
    assert recall(ivf.search(q, 10, nprobe=ivf.nlist)[1], truth) >= (0.99 if not int8 else 0.97)


def test_ivf_add_delete_and_state_round_trip():
    x = clustered(3000, 32, seed=3)
    index = VectorIndex(32, "ivf", nlist=20, nprobe=20)  # every cell probed: exact answers
    index.add(x[:2000], torch.arange(2000))
    index.add(x[2000:], torch.arange(2000, 3000))  # assigned to the trained cells
    assert index.delete(torch.arange(0, 3000, 2)) == 1500
    assert index.delete([0, 2, 4]) == 0
    exact = VectorIndex(32)
    exact.add(x[1::2], torch.arange(1, 3000, 2))
    q = clustered(50, 32, seed=4)
    assert torch.equal(index.search(q, 5)[1], exact.search(q, 5)[1])
    tensors, fields = index.state()
    again = VectorIndex.from_state(tensors, fields)
    assert torch.equal(again.search(q, 5)[1], index.search(q, 5)[1])


def test_int8_quantisation_and_short_results():
    x = torch.randn(100, 16)
    qx, scale = quantize_int8(x)
    assert qx.dtype == torch.int8 and (qx.float() * scale[:, None] - x).abs().max() <= scale.max() / 2 + 1e-6
    index = VectorIndex(16, int8=True)
    index.add(x[:3], torch.tensor([7, 8, 9]))
    scores, ids = index.search(x[0], 5)
    assert ids[0, :3].tolist()[0] == 7 and ids[0, 3:].tolist() == [-1, -1]
    assert torch.isinf(scores[0, 3:]).all()


def test_kmeans_finds_planted_clusters():
    centers = F.normalize(torch.eye(8)[:4] * 5 + 0.1, dim=1)
    x = torch.cat([c + 0.01 * torch.randn(50, 8, generator=torch.Generator().manual_seed(i)) for i, c in
                   enumerate(centers)])
    found = kmeans(x, 4)
    assert (found @ centers.T).max(dim=0).values.min() > 0.99


def test_bad_input_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown"):
        VectorIndex(8, "hnsw")
    index = VectorIndex(8)
    with pytest.raises(UserError, match="another embedder"):
        index.add(torch.randn(3, 9), torch.arange(3))
    with pytest.raises(UserError, match="dimension"):
        index.search(torch.randn(2, 4), 1)
    with pytest.raises(UserError, match="needs vectors"):
        VectorIndex(8, "ivf").train(torch.empty(0, 8))
