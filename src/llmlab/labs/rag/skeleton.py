"""Lab: retrieval. Fill in the bodies below, then run `llmlab labs check rag` (or the notebook).

The pieces of a retriever, in the order a question meets them: documents cut into overlapping chunks, each
chunk turned into one unit vector by mean pooling an encoder's token states, the closest chunks to a question
by cosine similarity, BM25 word-match scores, and reciprocal rank fusion of the two rankings.
Shapes use B texts, T token positions, C features, Q questions, N chunks.
"""

import math  # noqa: F401  (BM25's idf wants math.log)
import re  # noqa: F401  (re.finditer(r"\S+", text) finds the words with their offsets)
from collections import Counter  # noqa: F401  (term counts)

import torch
import torch.nn.functional as F  # noqa: F401  (F.normalize)


def chunk(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Fixed windows of `size` words, each next one starting `overlap` words before the previous one ended.

    Words are the runs of non-whitespace characters. The windows start at words 0, step, 2 * step, ... with
    step = size - overlap (0 <= overlap < size); the last one may be shorter, and no window starts after one
    has reached the last word. Returns (start, end) character offsets per window, from the first character
    of its first word to just after its last word, so text[start:end] is the chunk. No words: [].

    Example: chunk("a b c d", 2, 1) -> [(0, 3), (2, 5), (4, 7)], the chunks "a b", "b c", "c d".
    """
    raise NotImplementedError("TODO: find the words with their offsets, then step through them window by window")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence vectors from token states, as sentence-transformers makes them: the mean over real tokens, then
    L2-normalised.

    hidden: (B, T, C) an encoder's output; padded positions hold numbers too, which must not count.
    mask: (B, T), 1 (or True) at real tokens and 0 at padding, anywhere in the row; every row has a real token.
    Returns (B, C) vectors of length 1.
    """
    raise NotImplementedError("TODO: average hidden over the positions where mask is 1, then normalise")


def search(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest-neighbour search by cosine similarity.

    queries: (Q, C), docs: (N, C), neither necessarily of length 1; 1 <= k <= N.
    Returns (scores, indices), each (Q, k), best first: the cosine similarities of each query's k most similar
    documents, and those documents' row numbers in `docs`.
    """
    raise NotImplementedError("TODO: normalise both, score every pair with one matmul, keep the top k")


def bm25_scores(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> torch.Tensor:
    """BM25 (Lucene's form) of every document for a query; all given as lists of word tokens.

        score(d) = sum over tokens t of the query (a repeated token counts again) of
                   idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
        idf(t)   = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

    tf(t, d): how often t occurs in d; |d|: d's length in tokens, repeats included; avgdl: the mean |d| over
    the N documents; df(t): how many documents contain t. A query token in no document adds nothing.
    Returns (N,) float scores.
    """
    raise NotImplementedError("TODO: document lengths and frequencies first, then sum over the query's tokens")


def reciprocal_rank_fusion(rankings: list[list], k: int = 60) -> list[tuple[object, float]]:
    """Fuse ranked lists (best first) by rank alone: score(item) = sum over the lists holding it of
    1 / (k + its rank there), ranks counted from 1.

    Returns [(item, score)] for every item of any list, highest score first; equal scores keep the order in
    which the items first appear (the first list, then the next).
    Example: [["a", "b"], ["b", "c"]] -> b (1/62 + 1/61), then a (1/61), then c (1/62).
    """
    raise NotImplementedError("TODO: add up 1 / (k + rank) per item, then sort by score, highest first")
