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


def test_ranges_lists_every_index():
    assert vectors_module.ranges(torch.tensor([4, 10]), torch.tensor([2, 3])).tolist() == [4, 5, 10, 11, 12]
    first, count = torch.tensor([7, 0, 3, 9]), torch.tensor([0, 3, 1, 2])
    expected = [i for f, c in zip(first.tolist(), count.tolist(), strict=True) for i in range(f, f + c)]
    assert vectors_module.ranges(first, count).tolist() == expected


@pytest.mark.parametrize("budget", [1 << 23, 40_000])  # 40k floats: chunks of two pages, some runs, some gathers
def test_ivf_equals_faiss_ivf_with_the_same_cells(monkeypatch, budget):
    monkeypatch.setattr(vectors_module, "SCORE_BUDGET", budget)
    x, q = clustered(4000, 32, centers=30, seed=5), clustered(300, 32, centers=30, seed=6)
    ours = VectorIndex(32, "ivf", nlist=40)
    ours.add(x[:3000], torch.arange(3000) * 2)
    ours.add(x[3000:], torch.arange(3000, 4000) * 2)  # later vectors go to the trained cells
    quantizer = faiss.IndexFlatIP(32)
    quantizer.add(ours.centroids.numpy())  # the same cells: faiss assigns and probes by inner product too
    theirs = faiss.IndexIVFFlat(quantizer, 32, 40, faiss.METRIC_INNER_PRODUCT)
    assert theirs.is_trained
    theirs.add_with_ids(x.numpy(), (torch.arange(4000) * 2).numpy())
    for nprobe, batch in ((1, 300), (3, 300), (40, 300), (2, 3)):  # 3 queries: their few pages are copied out
        theirs.nprobe = nprobe
        d, i = theirs.search(q[:batch].numpy(), 10)
        scores, ids = ours.search(q[:batch], 10, nprobe)
        assert torch.equal(ids, torch.from_numpy(i))  # -1 where the probed cells hold fewer than 10
        found = ids >= 0
        torch.testing.assert_close(scores[found], torch.from_numpy(d)[found], rtol=1e-5, atol=1e-5)
    assert (ours.ids == -1).any() and len(ours) == 4000  # cells end in padding, never returned


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_int8_scores_are_the_dequantised_vectors(monkeypatch, kind):
    monkeypatch.setattr(vectors_module, "SCORE_BUDGET", 20_000)  # several blocks / chunks
    x, q = clustered(2000, 32, seed=7), clustered(40, 32, seed=8)
    index = VectorIndex(32, kind, int8=True, nlist=10, nprobe=10)
    index.add(x, torch.arange(2000))
    qx, scale = quantize_int8(x)
    truth = q @ (qx.float() * scale[:, None]).T  # every cell probed: int8 search is exact on these vectors
    scores, ids = index.search(q, 5)
    top = truth.topk(5, dim=1)
    assert torch.equal(ids, top.indices)
    torch.testing.assert_close(scores, top.values, rtol=1e-5, atol=1e-5)


def test_empty_and_fewer_than_k():
    index = VectorIndex(8, "ivf", nlist=4, nprobe=1)
    scores, ids = index.search(torch.randn(3, 8), 2)  # nothing stored yet
    assert ids.tolist() == [[-1, -1]] * 3 and torch.isinf(scores).all()
    index.add(torch.randn(6, 8), torch.arange(6))
    assert index.search(torch.randn(0, 8), 3)[1].shape == (0, 3)
    _, ids = index.search(torch.randn(5, 8), 6)
    assert ((ids >= 0).sum(1) <= 6).all() and (ids[ids >= 0] < 6).all()
    assert index.delete(torch.arange(6)) == 6 and len(index) == 0
    assert index.search(torch.randn(1, 8), 2)[1].tolist() == [[-1, -1]]
