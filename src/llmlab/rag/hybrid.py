"""Hybrid retrieval: reciprocal rank fusion of ranked lists (dense and BM25), by rank only, never by score.

Cormack, Clarke & Büttcher 2009: score(d) = sum over lists of 1 / (k + rank of d in that list), ranks from 1,
k = 60. Ranks sidestep the problem that cosine similarities (about -1..1) and BM25 scores (0..tens) live on
different scales. Ties keep the order of first appearance (dense first when passed first).

Worked example: dense [a, b], bm25 [b, c] -> b: 1/62 + 1/61, a: 1/61, c: 1/62 -> [b, a, c].
"""

from collections.abc import Hashable, Sequence

RRF_K = 60  # the paper's constant: damps the weight of the very top ranks so one list cannot dominate


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K, limit: int | None = None
                           ) -> list[tuple[Hashable, float]]:
    """(item, fused score) best first, over every item in any ranking.

    >>> [i for i, _ in reciprocal_rank_fusion([["a", "b"], ["b", "c"]])]
    ['b', 'a', 'c']
    """
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda kv: -kv[1])  # stable: first appearance breaks ties
    return fused[:limit] if limit is not None else fused
