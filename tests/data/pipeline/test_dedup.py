"""Deduplication: MinHash bit-for-bit against datasketch, LSH clusters against datasketch's index, and the
false-positive / false-negative rates on planted near-duplicates whose true Jaccard similarity is known."""

import random

import numpy as np
import pytest
import xxhash
from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from llmlab.data.pipeline.dedup import (
    ExactDedup,
    MinHashDedup,
    UnionFind,
    hash_shingles,
    jaccard_estimate,
    optimal_bands,
    permutations,
    shingles,
    signature,
)
from llmlab.data.pipeline.stage import StageStats

VOCAB = [f"w{i}" for i in range(3000)]


def datasketch_minhash(items: set[str], num_perm: int = 128, seed: int = 1, hashfunc=None) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=seed, **({"hashfunc": hashfunc} if hashfunc else {}))
    for s in items:
        m.update(s.encode("utf-8"))
    return m


def planted(n_base: int = 120, seed: int = 0) -> tuple[list[dict], list[tuple[int, int]]]:
    """Base documents of random words and, for each, copies with a share of words replaced."""
    rng = random.Random(seed)
    docs = []
    for b in range(n_base):
        words = rng.choices(VOCAB, k=rng.randint(80, 300))
        docs.append({"id": f"b{b}", "text": " ".join(words), "source": "t"})
        for edit in rng.sample([0.0, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3], 3):
            copy = [rng.choice(VOCAB) if rng.random() < edit else w for w in words]
            docs.append({"id": f"b{b}e{edit}", "text": " ".join(copy), "source": "t"})
    rng.shuffle(docs)
    pos = {d["id"]: i for i, d in enumerate(docs)}
    return docs, [(pos[d["id"].split("e")[0]], i) for i, d in enumerate(docs) if "e" in d["id"]]


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize("hash_name", ["sha1", "xxh32"])
def test_signatures_and_estimates_equal_datasketch(hash_name):
    rng = random.Random(1)
    a, b = permutations(128, seed=7)
    hashfunc = (lambda d: xxhash.xxh32_intdigest(d)) if hash_name == "xxh32" else None
    prev = None
    for _ in range(20):
        text = " ".join(rng.choices(VOCAB[:200], k=rng.randint(1, 120)))
        items = shingles(text, 3)
        ours = signature(hash_shingles(items, hash_name), a, b)
        theirs = datasketch_minhash(items, seed=7, hashfunc=hashfunc)
        assert np.array_equal(ours, theirs.hashvalues)
        if prev is not None:
            assert jaccard_estimate(ours, prev[0]) == theirs.jaccard(prev[1])
        prev = (ours, theirs)


def test_char_shingles_equal_datasketch():
    items = shingles("Near-duplicate detection, by characters.", 4, unit="char")
    a, b = permutations(64, seed=1)
    assert np.array_equal(signature(hash_shingles(items), a, b), datasketch_minhash(items, 64).hashvalues)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.7, 128), (0.8, 128), (0.85, 112), (0.9, 256)])
def test_bands_and_rows_equal_datasketch(threshold, num_perm):
    assert optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def clusters_of(stage, docs: list[dict], shard_sizes: list[int]) -> list[int]:
    """Run collect per shard and decide over all: each document's kept id's position (itself if kept)."""
    summaries, start = [], 0
    for size in shard_sizes:
        summaries.append(stage.collect(docs[start:start + size]))
        start += size
    decisions = stage.decide(summaries, StageStats(stage.name))
    pos = {d["id"]: i for i, d in enumerate(docs)}
    return [pos[k] for dec in decisions for k in dec["kept"].tolist()]


def test_lsh_clusters_equal_datasketch_index():
    docs, _ = planted(60)
    stage = MinHashDedup(threshold=0.8)
    ours = clusters_of(stage, docs, [len(docs) // 3, len(docs) // 3, len(docs) - 2 * (len(docs) // 3)])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    sketches = [datasketch_minhash(shingles(d["text"], 5)) for d in docs]
    for i, m in enumerate(sketches):
        lsh.insert(i, m)
    uf = UnionFind(len(docs))
    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            uf.union(i, j)
    assert ours == [uf.find(i) for i in range(len(docs))]


def test_planted_duplicates_false_positive_and_negative_rates(capsys):
    """Rates measured on planted pairs, held against LSH's own prediction for each pair's true Jaccard s:
    a pair becomes a candidate with probability 1 - (1 - s^r)^b (Leskovec et al., MMDS 3.4)."""
    docs, pairs = planted(150)
    stage = MinHashDedup(threshold=0.8)
    b, r = stage.band_rows()
    kept = clusters_of(stage, docs, [len(docs)])
    same = np.array([kept[i] == kept[j] for i, j in pairs])
    sims = np.array([true_jaccard(docs[i]["text"], docs[j]["text"]) for i, j in pairs])
    predicted = 1 - (1 - sims ** r) ** b
    rows = []
    for lo, hi in [(0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)]:
        m = (sims >= lo) & (sims < hi)
        rows.append((lo, hi, int(m.sum()), same[m].mean(), predicted[m].mean()))
    above, below = sims >= 0.8, sims < 0.6
    fn_rate, fp_rate = 1 - same[above].mean(), same[below].mean()
    with capsys.disabled():
        print(f"\nMinHash b={b} r={r}, threshold 0.8: false negatives {fn_rate:.1%} of {above.sum()} pairs with "
              f"J>=0.8, false positives {fp_rate:.1%} of {below.sum()} pairs with J<0.6")
        for lo, hi, n, got, want in rows:
            print(f"  J in [{lo:.1f}, {min(hi, 1):.1f}): {n} pairs, joined {got:.1%}, LSH predicts {want:.1%}")
    for lo, hi, n, got, want in rows:
        assert abs(got - want) <= 3 * np.sqrt(want * (1 - want) / n) + 0.03, (lo, hi, got, want)
    assert fn_rate <= 0.2 and fp_rate == 0
    assert 1 - same[sims >= 0.9].mean() <= 0.1
    unrelated = [(i, j) for i in range(0, len(docs), 7) for j in range(i + 1, len(docs), 11)
                 if true_jaccard(docs[i]["text"], docs[j]["text"]) < 0.5]
    assert len(unrelated) > 100 and not any(kept[i] == kept[j] for i, j in unrelated)


def test_verify_drops_weak_candidates():
    docs, pairs = planted(80, seed=5)
    loose = clusters_of(MinHashDedup(threshold=0.5, bands=32, rows=2), docs, [len(docs)])
    checked = clusters_of(MinHashDedup(threshold=0.5, bands=32, rows=2, verify=True), docs, [len(docs)])
    joined = lambda kept: sum(kept[i] == kept[j] for i, j in pairs)  # noqa: E731
    assert joined(checked) <= joined(loose)
    assert sum(k != i for i, k in enumerate(checked)) <= sum(k != i for i, k in enumerate(loose))


def test_exact_dedup_keeps_first_copy_across_shards():
    texts = ["a", "b", "a", "c", "b", "a", "d"]
    docs = [{"id": str(i), "text": t, "source": "s"} for i, t in enumerate(texts)]
    stage = ExactDedup()
    kept = clusters_of(stage, docs, [2, 3, 2])
    first = {}
    assert kept == [first.setdefault(t, i) for i, t in enumerate(texts)]
    stats = StageStats("exact")
    decisions = stage.decide([stage.collect(docs)], stats)
    out = stage.apply_decision(docs, decisions[0], stats)
    assert [d["text"] for d in out] == ["a", "b", "c", "d"]
    assert stats.info["clusters"] == 2 and stats.info["cluster sizes"] == {"2": 1, "3": 1}
    assert stats.dropped["exact duplicate"] == 3


def test_empty_documents_never_cluster():
    docs = [{"id": str(i), "text": "!!!", "source": "s"} for i in range(3)]
    assert clusters_of(MinHashDedup(), docs, [3]) == [0, 1, 2]


def test_union_find_roots_are_smallest():
    uf = UnionFind(6)
    uf.union(4, 2)
    uf.union(5, 4)
    uf.union(3, 1)
    assert [uf.find(i) for i in range(6)] == [0, 1, 2, 1, 2, 2]


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"unit": "line"}, {"hash": "md5"}, {"bands": 20, "rows": 10}])
def test_bad_options(bad):
    with pytest.raises(ValueError):
        MinHashDedup(**bad).check()
