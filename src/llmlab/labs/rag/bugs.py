"""Lab: retrieval, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers (loops, float64 inside, a sum for a
mean before normalising) the checks must accept."""

from llmlab.labs.registry import Bug, planted

CHUNK = r'''
import re


def chunk(text, size, overlap):
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    spans, i = [], 0
    while i < len(words):
        last = min(i + size, len(words)) - 1
        spans.append((words[i][0], words[last][1]))
        if last == len(words) - 1:
            break
        i += size - overlap
    return spans
'''

SPLIT_ON_SPACES = r'''
def chunk(text, size, overlap):
    words, pos = [], 0
    for piece in text.split(" "):
        if piece:
            words.append((pos, pos + len(piece)))
        pos += len(piece) + 1
    spans, i = [], 0
    while i < len(words):
        last = min(i + size, len(words)) - 1
        spans.append((words[i][0], words[last][1]))
        if last == len(words) - 1:
            break
        i += size - overlap
    return spans
'''

POOL = '''
import torch
import torch.nn.functional as F


def mean_pool(hidden, mask):
    m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
    mean = (hidden * m).sum(1) / m.sum(1)
    return F.normalize(mean, dim=-1)
'''

SEARCH = '''
import torch.nn.functional as F


def search(queries, docs, k):
    scores = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T  # (Q, N)
    return scores.topk(k, dim=-1)
'''

BM25 = '''
import math
from collections import Counter

import torch


def bm25_scores(query, docs, k1=1.5, b=0.75):
    N = len(docs)
    avgdl = sum(len(d) for d in docs) / N
    df = Counter(t for d in docs for t in set(d))
    scores = torch.zeros(N)
    for i, d in enumerate(docs):
        tf = Counter(d)
        for t in query:
            if tf[t]:
                idf = math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5))
                scores[i] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return scores
'''

RRF = '''
def reciprocal_rank_fusion(rankings, k=60):
    scores = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1 / (k + rank)
    return sorted(scores.items(), key=lambda pair: pair[1], reverse=True)
'''

BUGS = [
    Bug("chunk-no-overlap", "chunk", planted(CHUNK, "i += size - overlap", "i += size"), "do not overlap"),
    Bug("chunk-extra-tails", "chunk", planted(CHUNK, "        if last == len(words) - 1:\n            break\n", ""),
        "stop once a window has reached the last word"),
    Bug("chunk-end-inclusive", "chunk", planted(CHUNK, "words[last][1])", "words[last][1] - 1)"),
        "end offsets are one character short"),
    Bug("chunk-word-numbers", "chunk", planted(CHUNK, "spans.append((words[i][0], words[last][1]))",
                                               "spans.append((i, last + 1))"), "you returned word numbers"),
    Bug("chunk-texts", "chunk", planted(CHUNK, "spans.append((words[i][0], words[last][1]))",
                                        "spans.append(text[words[i][0]:words[last][1]])"),
        "you returned the chunks' text"),
    Bug("chunk-split-on-spaces", "chunk", SPLIT_ON_SPACES, "wrong for newlines, tabs"),
    Bug("pool-counts-padding", "mean_pool", planted(POOL, "(hidden * m).sum(1) / m.sum(1)", "hidden.mean(1)"),
        "padding counts in your mean"),
    Bug("pool-not-normalised", "mean_pool", planted(POOL, "return F.normalize(mean, dim=-1)", "return mean"),
        "not of length 1"),
    Bug("pool-normalised-over-batch", "mean_pool", planted(POOL, "dim=-1", "dim=0"), "over the batch"),
    Bug("pool-right-padding-only", "mean_pool", planted(
        POOL, "    mean = (hidden * m).sum(1) / m.sum(1)\n",
        "    mean = torch.stack([h[:int(n)].mean(0) for h, n in zip(hidden, mask.sum(1))])\n"),
        "padding can be on the left too"),
    Bug("pool-epsilon", "mean_pool", planted(POOL, "F.normalize(mean, dim=-1)",
                                             "mean / (mean.norm(dim=-1, keepdim=True) + 1e-6)"),
        "is an epsilon added to the length too large"),
    Bug("pool-detached", "mean_pool", planted(POOL, "F.normalize(mean, dim=-1)", "F.normalize(mean.detach(), dim=-1)"),
        "the output has no gradient"),
    Bug("search-dot-product", "search", planted(
        SEARCH, "F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T", "queries @ docs.T"),
        "you ranked by the dot product"),
    Bug("search-queries-unnormalised", "search", planted(SEARCH, "F.normalize(queries, dim=-1) @", "queries @"),
        "normalise the queries too"),
    Bug("search-least-similar", "search", planted(SEARCH, "topk(k, dim=-1)", "topk(k, dim=-1, largest=False)"),
        "the least similar documents"),
    Bug("bm25-robertson-idf", "bm25_scores", planted(BM25, "math.log(1 + (N", "math.log((N"), "Robertson's"),
    Bug("bm25-no-saturation", "bm25_scores", planted(
        BM25, "idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))", "idf * tf[t]"), "not saturated"),
    Bug("bm25-no-length-norm", "bm25_scores", planted(BM25, "k1 * (1 - b + b * len(d) / avgdl)", "k1"),
        "document length does not change your scores"),
    Bug("bm25-classic-numerator", "bm25_scores", planted(BM25, "idf * tf[t] / (", "idf * tf[t] * (k1 + 1) / ("),
        "(k1 + 1) in the numerator"),
    Bug("bm25-query-set", "bm25_scores", planted(BM25, "for t in query:", "for t in set(query):"),
        "a word repeated in the query must count again"),
    Bug("bm25-df-total", "bm25_scores", planted(BM25, "for t in set(d))", "for t in d)"),
        "the number of documents containing t"),
    Bug("bm25-distinct-lengths", "bm25_scores", planted(planted(
        BM25, "sum(len(d) for d in docs)", "sum(len(set(d)) for d in docs)"), "len(d) / avgdl", "len(set(d)) / avgdl"),
        "not its number of distinct words"),
    Bug("rrf-ranks-from-0", "reciprocal_rank_fusion", planted(RRF, "enumerate(ranking, start=1)", "enumerate(ranking)"),
        "your ranks start at 0"),
    Bug("rrf-no-k", "reciprocal_rank_fusion", planted(RRF, "1 / (k + rank)", "1 / rank"), "you left out k"),
    Bug("rrf-max", "reciprocal_rank_fusion", planted(RRF, "scores.get(item, 0.0) + 1 / (k + rank)",
                                                     "max(scores.get(item, 0.0), 1 / (k + rank))"), "not the largest"),
    Bug("rrf-worst-first", "reciprocal_rank_fusion", planted(RRF, ", reverse=True", ""), "worst first"),
    Bug("rrf-fixed-60", "reciprocal_rank_fusion", planted(RRF, "1 / (k + rank)", "1 / (60 + rank)"),
        "the k you are given is not used"),
    Bug("rrf-ties-by-name", "reciprocal_rank_fusion", planted(
        RRF, "key=lambda pair: pair[1], reverse=True", "key=lambda pair: (-pair[1], str(pair[0]))"),
        "the order in which the items first appear"),
]

ALTERNATIVES = [  # words found by str.split and str.find; windows by range(); a loop over rows in float64
    r'''
def chunk(text, size, overlap):
    words, pos = [], 0
    for word in text.split():
        start = text.find(word, pos)
        words.append((start, start + len(word)))
        pos = start + len(word)
    if not words:
        return []
    return [(words[i][0], words[min(i + size, len(words)) - 1][1])
            for i in range(0, max(len(words) - overlap, 1), size - overlap)]
''',
    '''
import torch


def mean_pool(hidden, mask):
    rows = [hidden[i][mask[i].bool()].double().sum(0) for i in range(len(hidden))]  # a sum: the length goes anyway
    v = torch.stack(rows)
    return (v / v.norm(dim=-1, keepdim=True)).to(hidden.dtype)
''',
    '''
import math

import torch


def search(queries, docs, k):
    q = queries / queries.norm(dim=1, keepdim=True)
    d = docs / docs.norm(dim=1, keepdim=True)
    scores, order = torch.sort(q @ d.T, dim=1, descending=True)
    return scores[:, :k], order[:, :k]


def bm25_scores(query, docs, k1=1.5, b=0.75):
    N = len(docs)
    avgdl = sum(map(len, docs)) / N
    out = []
    for d in docs:
        total = 0.0
        for t in query:
            tf = d.count(t)
            if tf == 0:
                continue
            df = sum(t in other for other in docs)
            total += math.log(1 + (N - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * len(d) / avgdl))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def reciprocal_rank_fusion(rankings, k=60):
    from collections import defaultdict

    fused = defaultdict(float)
    for ranking in rankings:
        for i, item in enumerate(ranking):
            fused[item] += 1.0 / (k + i + 1)
    return [(item, fused[item]) for item in sorted(fused, key=fused.get, reverse=True)]
''',
]
