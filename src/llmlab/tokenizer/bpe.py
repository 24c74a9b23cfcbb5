"""Byte-level BPE as small pure functions: count pairs, merge, train, encode one chunk.

The data model shared by both trainers: the corpus is a dict of distinct
pre-token chunks (bytes) -> how often each occurs. A chunk starts as its bytes
(ids 0..255); merge i makes id 256 + i. Ties between equally frequent pairs go
to the smallest pair `(a, b)`, so a corpus gives the same merges on every machine.

- `train_reference` is the textbook loop (Sennrich et al. 2016; minbpe):
  recount every pair, merge the most frequent, repeat. Slow; for tests and small inputs.
- `train_fast` counts pairs once and, per merge, updates only the chunks that
  contain the merged pair, taking the best pair from a heap. Same merges, much faster.
- `encode_chunk` is the reference encoder: apply the lowest-ranked merge until none applies.

This file knows nothing about text, regexes, special tokens or files.
"""

import heapq
from collections.abc import Iterable
from itertools import pairwise

from tqdm import tqdm

Pair = tuple[int, int]


def get_stats(ids: list[int], counts: dict[Pair, int] | None = None, weight: int = 1) -> dict[Pair, int]:
    """Count adjacent pairs, adding `weight` per occurrence into `counts` (updated in place and returned).

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge(ids: list[int], pair: Pair, idx: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair`, left to right, with `idx`.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge([5, 5, 5], (5, 5), 6)
    [6, 5]
    """
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def best_pair(stats: dict[Pair, int]) -> Pair:
    """The most frequent pair; ties go to the smallest pair (deterministic on every machine).

    >>> best_pair({(3, 1): 2, (1, 2): 2, (2, 3): 1})
    (1, 2)
    """
    return min(stats, key=lambda p: (-stats[p], p))


def train_reference(chunks: dict[bytes, int], num_merges: int) -> list[Pair]:
    """Textbook BPE over chunk counts: recount all pairs, merge the best, repeat.

    Returns the merges in order; merge i creates id 256 + i. Stops early when no pair is left.

    >>> train_reference({b"abab": 1, b"ab": 2}, 2)
    [(97, 98), (256, 256)]
    """
    words = [(list(chunk), count) for chunk, count in chunks.items()]
    merges: list[Pair] = []
    for i in range(num_merges):
        stats: dict[Pair, int] = {}
        for ids, count in words:
            get_stats(ids, stats, count)
        if not stats:
            break
        pair = best_pair(stats)
        words = [(merge(ids, pair, 256 + i), count) for ids, count in words]
        merges.append(pair)
    return merges


def train_fast(chunks: dict[bytes, int], num_merges: int, progress: bool = False) -> list[Pair]:
    """The same merges as `train_reference`, with incremental pair counts and a heap.

    Each distinct chunk is stored once with its count. `where[pair]` lists the
    chunks that (may) contain the pair, so a merge touches only those. The heap
    holds (-count, pair) entries; an entry whose count is out of date is skipped
    when popped (every change of a count pushes a fresh entry).
    """
    words = [list(chunk) for chunk in chunks]
    counts = list(chunks.values())
    stats: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for w, (ids, count) in enumerate(zip(words, counts, strict=True)):
        for pair in pairwise(ids):
            stats[pair] = stats.get(pair, 0) + count
            where.setdefault(pair, set()).add(w)
    heap = [(-c, p) for p, c in stats.items()]
    heapq.heapify(heap)

    merges: list[Pair] = []
    bar = tqdm(total=num_merges, desc="merges", disable=not progress, unit="merge")
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if stats.get(pair, 0) != -neg:
            continue  # stale entry: a fresher one is in the heap
        idx = 256 + len(merges)
        merges.append(pair)
        bar.update(1)
        changed: set[Pair] = set()
        for w in where.pop(pair):
            old = words[w]
            new = merge(old, pair, idx)
            if len(new) == len(old):
                continue  # the pair left this chunk in an earlier merge
            words[w] = new
            count = counts[w]
            for p in pairwise(old):
                stats[p] -= count
                changed.add(p)
            for p in pairwise(new):
                stats[p] = stats.get(p, 0) + count
                changed.add(p)
                if idx in p:
                    where.setdefault(p, set()).add(w)
        stats.pop(pair, None)
        changed.discard(pair)
        for p in changed:
            c = stats[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del stats[p]
                where.pop(p, None)
    bar.close()
    return merges


def encode_chunk(ids: Iterable[int], ranks: dict[Pair, tuple[int, int]]) -> list[int]:
    """Reference encoder: apply the lowest-ranked merge until none applies.

    `ranks[(a, b)] = (rank, new_id)`; `ids` are the chunk's byte ids.

    >>> encode_chunk([1, 2, 3], {(2, 3): (0, 5), (1, 5): (1, 6), (1, 2): (2, 4)})
    [6]
    """
    ids = list(ids)
    never = (float("inf"), -1)
    while len(ids) >= 2:
        pair = min(pairwise(ids), key=lambda p: ranks.get(p, never)[0])
        if pair not in ranks:
            break
        ids = merge(ids, pair, ranks[pair][1])
    return ids
