"""Retrieval metrics on a labelled set: recall@k, MRR and nDCG@k, with binary relevance.

For one question with retrieved list r (best first) and relevant set R (sources, or chunk ids):
- recall@k = |R ∩ r[:k]| / |R|                          (1.0 when every relevant item is in the top k)
- MRR      = 1 / rank of the first relevant item in r    (0 when none is retrieved)
- nDCG@k   = DCG@k / IDCG@k, DCG@k = sum over relevant items at rank i <= k of 1 / log2(i + 1);
             IDCG@k puts all min(|R|, k) relevant items first (Järvelin & Kekäläinen 2002)
Repeats in r count once (the first time), as when several chunks of one relevant source are retrieved.
Each metric is averaged over the questions by `retrieval_scores`. The same definitions as pytrec_eval /
trec_eval's `recall_k`, `recip_rank` and `ndcg_cut_k` for binary judgements.

Worked example: r = [x, a, y, b], R = {a, b}: recall@2 = 0.5, MRR = 0.5,
nDCG@4 = (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3)) = 0.65.
"""

import math
from collections.abc import Hashable, Sequence


def _dedupe(retrieved: Sequence[Hashable]) -> list[Hashable]:
    seen: set = set()
    return [r for r in retrieved if not (r in seen or seen.add(r))]


def recall_at_k(retrieved: Sequence[Hashable], relevant: set, k: int) -> float:
    """The share of relevant items in the top k.

    >>> recall_at_k(["x", "a", "y", "b"], {"a", "b"}, 2)
    0.5
    """
    return len(set(_dedupe(retrieved)[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def reciprocal_rank(retrieved: Sequence[Hashable], relevant: set) -> float:
    for rank, item in enumerate(_dedupe(retrieved), 1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[Hashable], relevant: set, k: int) -> float:
    """Discounted gain of the relevant items in the top k, over the best possible.

    >>> round(ndcg_at_k(["x", "a", "y", "b"], {"a", "b"}, 4), 2)
    0.65
    """
    dcg = sum(1 / math.log2(i + 1) for i, item in enumerate(_dedupe(retrieved)[:k], 1) if item in relevant)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def retrieval_scores(runs: list[tuple[Sequence[Hashable], set]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean recall@k and nDCG@k for each k, and MRR, over (retrieved, relevant) pairs."""
    n = max(len(runs), 1)
    out = {f"recall@{k}": sum(recall_at_k(r, rel, k) for r, rel in runs) / n for k in ks}
    out.update({f"ndcg@{k}": sum(ndcg_at_k(r, rel, k) for r, rel in runs) / n for k in ks})
    out["mrr"] = sum(reciprocal_rank(r, rel) for r, rel in runs) / n
    return out
