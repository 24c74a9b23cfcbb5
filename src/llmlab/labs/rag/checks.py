"""Lab: retrieval, the checks. The references are llmlab's own retrieval code (`fixed_spans`, `Bert.pool`, the
exact `VectorIndex`, `BM25`, `reciprocal_rank_fusion`) and torch's formulas. Each check also computes a few
typical mistakes (windows without overlap, padding in the mean, dot products for cosines, Robertson's idf,
ranks from 0) with the small references below and names the one the learner's answer equals.
"""

import math
import operator
import random
import re
from collections import Counter

import torch
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.models.bert import Bert, BertConfig
from llmlab.rag.bm25 import BM25
from llmlab.rag.chunking import fixed_spans, word_count
from llmlab.rag.hybrid import reciprocal_rank_fusion
from llmlab.rag.vectors import VectorIndex

CHECKS = CheckList()
WHITESPACE = "right for words between single spaces, wrong for newlines, tabs, runs of spaces or spaces at the edges"


# ---- chunk -----------------------------------------------------------------------------------------------

def _windows(text: str, size: int, step: int, tails: bool = False, end_shift: int = 0, word_ids: bool = False):
    """Windows of `size` words every `step` words (the right answer for step = size - overlap), with knobs for
    typical mistakes: more windows after the last word is reached, end offsets moved, word numbers."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    out, i = [], 0
    while i < len(words) and size > 0 and step > 0:
        last = min(i + size, len(words)) - 1
        out.append((i, last + 1) if word_ids else (words[i][0], words[last][1] + end_shift))
        if last == len(words) - 1 and not tails:
            break
        i += step
    return out


def _spans(out, what: str) -> list[tuple[int, int]]:
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(out, str) or not hasattr(out, "__iter__"):
        raise CheckFailed(f"{what} returned {type(out).__name__}, not a list of (start, end) pairs")
    out = list(out)
    if any(isinstance(p, str) for p in out):
        raise CheckFailed("you returned the chunks' text; return (start, end) character offsets, so that "
                          "text[start:end] is the chunk")
    try:
        pairs = [(operator.index(s), operator.index(e)) for s, e in out]
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} should return a list of (start, end) pairs of ints, got {out[:3]!r}") from None
    return pairs


def _chunk(ws: Workspace, text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    return _spans(call(ws.get("chunk"), text, size, overlap), f"chunk(text, {size}, {overlap})")


def _expect_chunks(out: list, text: str, size: int, overlap: int) -> None:
    expected = [(s, e) for s, e, _ in fixed_spans(text, word_count, size, overlap)]  # llmlab's chunker
    if out == expected:
        return
    if not expected and out:
        raise CheckFailed(f"a text without words has no chunks: return [] (got {out[:2]})")
    step = size - overlap
    mistakes = {
        "your windows do not overlap: each next window starts `overlap` words before the previous one ended "
        "(step by size - overlap words)": (size, size, {}),
        "you step by `overlap` words; step by size - overlap": (size, overlap, {}),
        "your windows hold size + 1 words": (size + 1, step, {}),
        "your windows hold size - 1 words": (size - 1, step, {}),
        "after the window that reaches the last word you make more, each inside the one before: stop once a "
        "window has reached the last word": (size, step, {"tails": True}),
        "your end offsets are one character short: end is exclusive, as in text[start:end], the index just after "
        "the last word's last character": (size, step, {"end_shift": -1}),
        "your end offsets are one character too far: end is the index just after the last word's last character":
            (size, step, {"end_shift": 1}),
        "you returned word numbers; return character offsets, so that text[start:end] is the chunk":
            (size, step, {"word_ids": True}),
    }
    for message, (n, s, knobs) in mistakes.items():
        if out == _windows(text, n, s, **knobs):
            raise CheckFailed(message)
    shown = text if len(text) < 40 else text[:37] + "..."
    raise CheckFailed(f"chunk({shown!r}, {size}, {overlap}) returned {out[:4]}{'...' if len(out) > 4 else ''}, "
                      f"expected {expected[:4]}{'...' if len(expected) > 4 else ''}")


def _messy_text(rng: random.Random, n_words: int) -> str:
    words = ["".join(rng.choice("abcdefgh.,()_=-") for _ in range(rng.randint(1, 8))) for _ in range(n_words)]
    gaps = [rng.choice([" ", " ", "  ", "\n", "\t", " \n\n  "]) for _ in words]
    return rng.choice(["", " ", "\n  "]) + "".join(w + g for w, g in zip(words, gaps, strict=True)).rstrip(" ")


@CHECKS.add("chunk", "windows of size words, stepping by size - overlap, as (start, end) character offsets")
def chunk_windows(ws: Workspace) -> None:
    sentence = "the quick brown fox jumps over the lazy dog and runs"
    for text, size, overlap in (("a b c d", 2, 1), (sentence, 4, 1), (sentence, 5, 2), (sentence, 3, 0)):
        _expect_chunks(_chunk(ws, text, size, overlap), text, size, overlap)


@CHECKS.add("chunk", "any whitespace between words and at the edges; one word; no words at all")
def chunk_whitespace(ws: Workspace) -> None:
    rng = random.Random(0)
    cases = [("word", 3, 1), ("", 3, 1), ("  \n\t ", 2, 0), ("  lead and trail \n", 2, 1)]
    cases += [(_messy_text(rng, n), size, overlap) for n, size, overlap in ((12, 4, 1), (23, 6, 2), (9, 2, 1))]
    for text, size, overlap in cases:
        out = _chunk(ws, text, size, overlap)
        plain = " ".join(text.split())
        if out != _windows(text, size, size - overlap) and _chunk(ws, plain, size, overlap) == _windows(
                plain, size, size - overlap):
            raise CheckFailed(f"{WHITESPACE}: find the words with re.finditer(r'\\S+', text), which gives each "
                              "one's start and end")
        _expect_chunks(out, text, size, overlap)


@CHECKS.add("chunk", "every size and overlap: one-word windows, overlap size - 1, a text shorter than a window")
def chunk_sizes(ws: Workspace) -> None:
    rng = random.Random(1)
    for size, overlap, n_words in ((1, 0, 5), (2, 1, 6), (7, 6, 10), (50, 10, 13), (3, 2, 3), (4, 0, 8)):
        text = " ".join(_messy_text(rng, n_words).split())
        _expect_chunks(_chunk(ws, text, size, overlap), text, size, overlap)


# ---- mean_pool -------------------------------------------------------------------------------------------

def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-30)  # (B, C)


def _padded_batch(B: int, T: int, C: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """States (B, T, C) whose padding holds large numbers, and a 0/1 mask padded on the right or the left."""
    mask = torch.zeros(B, T, dtype=torch.long)
    for i in range(B):
        n = 1 + (i * 5 + 2) % max(T - 1, 1)  # every row padded when T > 1
        mask[i, :n] = 1
        if i % 2:
            mask[i] = mask[i].flip(0)  # left padding
    hidden = torch.randn(B, T, C) * scale
    return torch.where(mask[..., None].bool(), hidden, 3 * scale + hidden.abs() * 4), mask


def _pool_mistakes(hidden: torch.Tensor, mask: torch.Tensor) -> dict:
    lengths = mask.sum(1).tolist()
    return {
        "your vectors are not of length 1: L2-normalise the mean, F.normalize(v, dim=-1)": _masked_mean(hidden, mask),
        "padding counts in your mean: multiply by the mask (or select with it) and divide by the number of real "
        "tokens": (F.normalize(hidden.mean(1), dim=-1), hidden.mean(1)),
        "you normalised over the batch (dim 0): normalise each vector over its C features (dim=-1)":
            F.normalize(_masked_mean(hidden, mask), dim=0),
        "normalise after averaging: you normalised each token's state first":
            (F.normalize(_masked_mean(F.normalize(hidden, dim=-1), mask), dim=-1),
             _masked_mean(F.normalize(hidden, dim=-1), mask)),
        "you averaged over the padding: mask is 1 at real tokens and 0 at padding":
            F.normalize(_masked_mean(hidden, 1 - mask), dim=-1),
        "you averaged the first mask.sum() positions of each row: padding can be on the left too; use the mask "
        "itself": F.normalize(torch.stack([h[:n].mean(0) for h, n in zip(hidden, lengths, strict=True)]), dim=-1),
    }


@CHECKS.add("mean_pool", "the mean over real tokens, L2-normalised; padding on either side; 0/1 or bool masks")
def mean_pool_values(ws: Workspace) -> None:
    fn = ws.get("mean_pool")
    hidden, mask = _padded_batch(4, 6, 8)
    expected = F.normalize(_masked_mean(hidden, mask), dim=-1)
    out = expect_tensor(call(fn, hidden, mask), (4, 8), "mean_pool(hidden (4, 6, 8), mask (4, 6))")
    diagnose(out, expected, _pool_mistakes(hidden, mask), "differs from the normalised mean over real tokens")
    for kind, m in (("bool", mask.bool()), ("float", mask.float())):
        out = expect_tensor(call(fn, hidden, m), (4, 8), f"mean_pool with a {kind} mask")
        if not close(out, expected):
            raise CheckFailed(f"right for a 0/1 integer mask, wrong for a {kind} one: turn the mask into numbers "
                              "first, mask.to(hidden.dtype)")


@CHECKS.add("mean_pool", "every shape and magnitude: batch 1, one token, odd widths, tiny and huge states")
def mean_pool_shapes(ws: Workspace) -> None:
    fn = ws.get("mean_pool")
    for B, T, C in ((1, 1, 5), (1, 4, 3), (3, 7, 1), (2, 16, 384)):
        hidden, mask = _padded_batch(B, T, C)
        out = expect_tensor(call(fn, hidden, mask), (B, C), f"for hidden of shape {(B, T, C)}, mean_pool")
        diagnose(out, F.normalize(_masked_mean(hidden, mask), dim=-1), _pool_mistakes(hidden, mask),
                 f"wrong for hidden of shape {(B, T, C)}: are sizes hard-coded, or taken from the wrong dimension?")
    for scale, words in ((1e-7, "tiny"), (1e6, "huge")):
        hidden, mask = _padded_batch(3, 5, 16, scale)
        out = expect_tensor(call(fn, hidden, mask), (3, 16), f"mean_pool of {words} states")
        if not close(out, F.normalize(_masked_mean(hidden.double(), mask), dim=-1)):
            raise CheckFailed(f"wrong for {words} states (scale {scale:g}): is an epsilon added to the length too "
                              "large for them? F.normalize(v, dim=-1) only keeps the length away from 0")


@CHECKS.add("mean_pool", "equals llmlab's sentence embedding of a BERT encoder's states, gradients included")
def mean_pool_bert(ws: Workspace) -> None:
    model = Bert(BertConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, seq_len=16, head="none"))
    idx = torch.randint(1, 50, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7])
    with torch.no_grad():
        hidden = model.encode(idx.masked_fill(mask == 0, 0), mask)  # (3, 9, 16), padding included
    hidden.requires_grad_()
    out = expect_tensor(call(ws.get("mean_pool"), hidden, mask), (3, 16), "mean_pool of BERT states")
    expected = F.normalize(model.pool(hidden, mask, "mean"), dim=-1)
    with torch.no_grad():
        diagnose(out, expected, _pool_mistakes(hidden, mask),
                 "differs from llmlab's sentence embedding (Bert.pool, then F.normalize) of the same states")
    if not out.requires_grad:
        raise CheckFailed("the output has no gradient: training an embedder backpropagates through the pooling; "
                          "did you use .detach(), .item() or torch.no_grad()?")
    weights = torch.randn(3, 16)
    (ours,) = torch.autograd.grad((out * weights).sum(), hidden, allow_unused=True)
    (ref,) = torch.autograd.grad((expected * weights).sum(), hidden)
    if ours is None or not close(ours, ref):
        raise CheckFailed("the gradient with respect to the states differs from autograd's through the formula")


# ---- search ----------------------------------------------------------------------------------------------

def _vectors(n: int, C: int, scale: float = 1.0) -> torch.Tensor:
    """Rows of very different lengths, so a dot product and a cosine rank them differently."""
    return torch.randn(n, C) * (torch.randn(n, 1) * 1.5).exp() * scale


def _search(ws: Workspace, queries: torch.Tensor, docs: torch.Tensor, k: int, what: str):
    out = call(ws.get("search"), queries, docs, k)
    if not isinstance(out, tuple) or len(out) != 2:
        raise CheckFailed(f"{what} should return a pair (scores, indices), got {type(out).__name__}")
    Q = len(queries)
    scores = expect_tensor(out[0], (Q, k), f"{what}: the scores")
    indices = expect_tensor(out[1], (Q, k), f"{what}: the indices")
    if indices.is_floating_point():
        raise CheckFailed(f"{what}: the indices are floats; return the row numbers as integers (topk's .indices)")
    return scores, indices.long()


def _cosine_topk(queries: torch.Tensor, docs: torch.Tensor, k: int, largest: bool = True):
    top = (F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T).topk(k, dim=1, largest=largest)
    return top.values, top.indices


def _expect_search(ws: Workspace, queries: torch.Tensor, docs: torch.Tensor, k: int, what: str) -> None:
    scores, indices = _search(ws, queries, docs, k, what)
    index = VectorIndex(docs.shape[1], "exact")  # llmlab's exact inner-product index, so unit vectors go in
    index.add(F.normalize(docs, dim=-1), torch.arange(len(docs)))
    ref_scores, ref_indices = index.search(F.normalize(queries, dim=-1), k)
    if not torch.equal(indices, ref_indices):
        if torch.equal(indices, (queries @ docs.T).topk(k, dim=1).indices):
            raise CheckFailed(f"{what}: you ranked by the dot product, so long document vectors win whatever their "
                              "direction: normalise the documents (and the queries) to get cosines")
        if torch.equal(indices, ref_indices.flip(1)):
            raise CheckFailed(f"{what}: the right documents, worst first: sort them best first")
        if torch.equal(indices, _cosine_topk(queries, docs, k, largest=False)[1]):
            raise CheckFailed(f"{what}: you returned the least similar documents: take the largest scores")
        if torch.equal(indices, torch.cdist(queries, docs).topk(k, dim=1, largest=False).indices):
            raise CheckFailed(f"{what}: you ranked by Euclidean distance on unnormalised vectors: normalise first")
        hint = ("is an epsilon added to the lengths too large for them? F.normalize only keeps a length away from 0"
                if queries.abs().max() < 1e-3 else "are sizes hard-coded, or is k taken from the wrong dimension?")
        raise CheckFailed(f"{what}: not the k documents of highest cosine similarity, best first; {hint}")
    diagnose(scores, ref_scores, {
        "the right documents, but your scores are not cosines: normalise the queries too":
            ref_scores * queries.norm(dim=-1, keepdim=True),
        "the right documents, but your scores are dot products: return the cosine similarities":
            (queries @ docs.T).gather(1, ref_indices),
    }, f"{what}: the right documents, but the scores differ from their cosine similarities")


@CHECKS.add("search", "the k most similar documents by cosine, best first: scores and row numbers (Q, k)")
def search_cosine(ws: Workspace) -> None:
    _expect_search(ws, _vectors(5, 12), _vectors(40, 12), 6, "search(queries (5, 12), docs (40, 12), k=6)")


@CHECKS.add("search", "every shape and magnitude: one query, k = 1 and k = N, odd widths, tiny and huge vectors")
def search_shapes(ws: Workspace) -> None:
    cases = [(1, 5, 3, 1, 1.0), (4, 9, 7, 9, 1.0), (2, 50, 384, 5, 1.0), (3, 20, 16, 4, 1e-7), (3, 20, 16, 4, 1e6)]
    for Q, N, C, k, scale in cases:
        what = f"search(queries ({Q}, {C}), docs ({N}, {C}), k={k})" + (f" of scale {scale:g}" if scale != 1 else "")
        _expect_search(ws, _vectors(Q, C, scale), _vectors(N, C, scale), k, what)


# ---- bm25_scores -----------------------------------------------------------------------------------------

def _bm25(query: list[str], docs: list[list[str]], k1: float, b: float, idf: str = "lucene", saturate: bool = True,
          length_norm: bool = True, repeats: bool = True, classic: bool = False, df_total: bool = False,
          unique_len: bool = False) -> torch.Tensor:
    """BM25 in float64 with one knob per typical mistake; the defaults give llmlab's (Lucene's) scores."""
    lengths = [len(set(d)) if unique_len else len(d) for d in docs]
    N, avgdl = len(docs), sum(lengths) / len(docs)
    df = Counter(t for d in docs for t in (d if df_total else set(d)))
    idfs = {"lucene": lambda n: math.log(1 + (N - n + 0.5) / (n + 0.5)),
            "robertson": lambda n: math.log((N - n + 0.5) / (n + 0.5)), "plain": lambda n: math.log(N / n)}
    out = torch.zeros(N, dtype=torch.float64)
    for i, d in enumerate(docs):
        tf = Counter(d)
        for t in (query if repeats else set(query)):
            if tf[t]:
                norm = k1 * (1 - b + b * lengths[i] / avgdl) if length_norm else k1
                out[i] += idfs[idf](df[t]) * (tf[t] * (k1 + 1 if classic else 1) / (tf[t] + norm) if saturate
                                              else tf[t])
    return out


def _bm25_check(ws: Workspace, query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
    bm = BM25(k1, b)  # llmlab's, held equal to bm25s (method "lucene") by its tests
    bm.add(docs)
    expected = bm.scores(query)
    what = f"bm25_scores for {len(docs)} documents, k1={k1}, b={b}"
    out = call(ws.get("bm25_scores"), query, docs, k1=k1, b=b)
    if isinstance(out, list | tuple):
        out = torch.tensor(out, dtype=torch.float64)
    out = expect_tensor(out, (len(docs),), what)
    variants = {knob: lambda knob=knob: _bm25(query, docs, k1, b, **dict([knob])) for knob in (
        ("idf", "robertson"), ("idf", "plain"), ("saturate", False), ("length_norm", False), ("classic", True),
        ("repeats", False), ("df_total", True), ("unique_len", True))}
    diagnose(out, expected, {
        "your idf is Robertson's log((N - df + 0.5) / (df + 0.5)), negative for words in most documents; Lucene's "
        "(this lab's) adds 1 inside the log: log(1 + (N - df + 0.5) / (df + 0.5))": variants[("idf", "robertson")],
        "your idf is log(N / df); BM25's here is log(1 + (N - df + 0.5) / (df + 0.5))": variants[("idf", "plain")],
        "your term frequency is not saturated: use tf / (tf + k1 * (1 - b + b * |d| / avgdl)), so each repeat adds "
        "less": variants[("saturate", False)],
        "document length does not change your scores: the denominator is tf + k1 * (1 - b + b * |d| / avgdl)":
            variants[("length_norm", False)],
        "your scores have the classic (k1 + 1) in the numerator; Lucene's form (this lab's) leaves that factor out":
            variants[("classic", True)],
        "a word repeated in the query must count again: sum over the query's tokens, repeats included":
            variants[("repeats", False)],
        "df(t) is the number of documents containing t, not how often t occurs in the whole corpus":
            variants[("df_total", True)],
        "|d| is the document's length with repeats, len(d), not its number of distinct words":
            variants[("unique_len", True)],
    }, f"{what}: differs from llmlab's BM25", rtol=1e-4, atol=1e-5)


@CHECKS.add("bm25_scores", "Lucene's BM25 on a small corpus: idf, saturated tf, length normalisation, repeats")
def bm25_small(ws: Workspace) -> None:
    docs = [["cat", "sat", "on", "the", "mat"], ["the", "dog", "sat"], ["the", "cat", "cat", "cat", "ran", "off"],
            ["a", "the", "log"], ["the", "the", "end"]]
    _bm25_check(ws, ["the", "cat", "cat", "sat", "zebra"], docs)


@CHECKS.add("bm25_scores", "random corpora: one document, long ones, other k1 and b, empty and unknown queries")
def bm25_random(ws: Workspace) -> None:
    rng = random.Random(2)
    vocab = [f"w{i}" for i in range(30)]
    weights = [1 / (i + 1) for i in range(30)]  # Zipf-like: a few common words, many rare ones
    for n_docs, k1, b in ((1, 1.5, 0.75), (2, 1.2, 0.0), (17, 2.0, 1.0), (60, 0.9, 0.4)):
        docs = [rng.choices(vocab, weights, k=rng.randint(1, 40)) for _ in range(n_docs)]
        _bm25_check(ws, rng.choices(vocab, weights, k=6) + ["unseen"], docs, k1, b)
        _bm25_check(ws, [], docs, k1, b)


# ---- reciprocal_rank_fusion ------------------------------------------------------------------------------

def _pairs(out, what: str) -> list[tuple[object, float]]:
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    try:
        pairs = [(item, float(score)) for item, score in out]
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} should return a list of (item, score) pairs, best first") from None
    return pairs


def _rrf(rankings: list[list], k: int, start: int = 1, combine=operator.add) -> list[tuple[object, float]]:
    scores: dict = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start):
            scores[item] = combine(scores[item], 1 / (k + rank)) if item in scores else 1 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def _same(out: list, expected: list) -> bool:
    return [i for i, _ in out] == [i for i, _ in expected] and all(
        math.isclose(a, b, rel_tol=1e-9) for (_, a), (_, b) in zip(out, expected, strict=True))


def _fusion_check(ws: Workspace, rankings: list[list], k: int) -> None:
    what = f"reciprocal_rank_fusion({rankings if len(str(rankings)) < 60 else '...'}, k={k})"
    out = _pairs(call(ws.get("reciprocal_rank_fusion"), rankings, k=k), what)
    expected = reciprocal_rank_fusion(rankings, k=k)  # llmlab's, used by hybrid search
    if _same(out, expected):
        return
    by_item, scores = dict(out), [s for _, s in out]
    if len(out) == len(expected) and all(math.isclose(by_item.get(i, -1), s, rel_tol=1e-9) for i, s in expected):
        if all(a >= b - 1e-12 for a, b in zip(scores, scores[1:], strict=False)):
            raise CheckFailed(f"{what}: right scores, but equal scores must keep the order in which the items first "
                              "appear: sort by score alone (Python's sort is stable; reverse=True keeps that)")
        if all(a <= b + 1e-12 for a, b in zip(scores, scores[1:], strict=False)):
            raise CheckFailed(f"{what}: right scores, worst first: sort by score, highest first")
        raise CheckFailed(f"{what}: right scores, but not sorted highest first")
    mistakes = {
        "your ranks start at 0; the best item of a list has rank 1, so its score is 1 / (k + 1)": _rrf(rankings, k, 0),
        "you left out k: the score is 1 / (k + rank), not 1 / rank": _rrf(rankings, 0),
        "an item in several lists gets the sum of its 1 / (k + rank), not the largest": _rrf(rankings, k, 1, max),
        "the k you are given is not used (a fixed 60?)": _rrf(rankings, 60),
    }
    for message, wrong in mistakes.items():
        if len(out) == len(wrong) and all(math.isclose(by_item.get(i, -1), s, rel_tol=1e-9) for i, s in wrong):
            raise CheckFailed(f"{what}: {message}")
    raise CheckFailed(f"{what} returned {out[:3]}..., expected {expected[:3]}...")


@CHECKS.add("reciprocal_rank_fusion", "1 / (k + rank) summed over the lists, ranks from 1, highest first")
def fusion_values(ws: Workspace) -> None:
    _fusion_check(ws, [["a", "b"], ["b", "c"]], 60)
    _fusion_check(ws, [[3, 1, 4, 5], [5, 9, 2], [1, 5]], 10)


@CHECKS.add("reciprocal_rank_fusion", "ties keep the order of first appearance; one list, many lists, any items")
def fusion_ties(ws: Workspace) -> None:
    _fusion_check(ws, [["z", "y", "x"], ["x", "y", "z"]], 60)
    _fusion_check(ws, [["only", "one", "list"]], 60)
    rng = random.Random(3)
    for n_lists, k in ((2, 60), (5, 1), (8, 30)):
        rankings = [rng.sample(range(25), rng.randint(1, 12)) for _ in range(n_lists)]
        _fusion_check(ws, rankings, k)
