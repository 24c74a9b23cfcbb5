"""Character n-gram models: counts against a plain scan, probabilities summing to 1, Kneser-Ney against an
independent recursive implementation of Chen & Goodman's formulas, add-k by hand, perplexity, sampling.

nltk's `KneserNeyInterpolated` is not used as the reference: its lowest order is the undiscounted continuation
distribution (not interpolated with the uniform one), so it gives unseen characters probability 0 and its
distributions do not match C&G's interpolated Kneser-Ney (checked with nltk 3.10: P(UNK | "ab") = 0).
"""

import math
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from llmlab.fundamentals import ngram as ng
from llmlab.fundamentals.ngram import BOS, UNK, NgramLM, count_ngrams, estimate_discounts

DOCS = ["abracadabra", "cadabra abba", "banana bandana", "a"]


def scan_counts(docs, n, k):
    """k-gram counts by checking every position of every padded document."""
    out = Counter()
    for d in docs:
        s = BOS * (n - 1) + d
        for i in range(n - 1, len(s)):
            out[s[i - k + 1:i + 1]] += 1
    return out


def test_counts_equal_a_plain_scan():
    c = count_ngrams(DOCS, 4)
    for k in range(1, 5):
        assert c.raw[k] == scan_counts(DOCS, 4, k)
    assert c.vocab == sorted(set("".join(DOCS)) | {UNK})
    assert sum(c.raw[1].values()) == sum(map(len, DOCS))


def kn_reference(docs, n, vocab, discounts):
    """P(w | context) straight from the definitions, recomputing every count by scanning the padded text.

    discounts[m] = (D1, D2, D3+) for order m. Top order: raw counts; lower orders: continuation counts
    N1+(. g) = number of distinct symbols right before g. Order 0 is uniform over the vocabulary."""
    padded = [BOS * (n - 1) + d for d in docs]

    def count(g, m):
        ends = [(s, i) for s in padded for i in range(n - 1, len(s)) if s[i - m + 1:i + 1] == g]
        return len(ends) if m == n else len({s[i - m] for s, i in ends})

    def p(w, h, m):
        if m == 0:
            return 1 / len(vocab)
        h = h[len(h) - m + 1:]
        cs = {v: count(h + v, m) for v in vocab}
        total = sum(cs.values())
        if total == 0:
            return p(w, h, m - 1)
        d = discounts[m]
        disc = {v: d[min(c, 3) - 1] if c else 0 for v, c in cs.items()}
        gamma = sum(disc.values()) / total
        return max(cs[w] - disc[w], 0) / total + gamma * p(w, h, m - 1)

    return lambda w, h: p(w, h, n)


CONTEXTS = ["", "a", "ab", "bra", "zzz", BOS * 3, BOS * 2 + "c", "ban", "a b"]


@pytest.mark.parametrize("smoothing", ["kn", "mkn"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_kneser_ney_equals_reference(smoothing, n):
    counts = count_ngrams(DOCS, 4)
    for discount in (None, 0.75):
        model = NgramLM(counts, n, smoothing, discount=discount)
        ref = kn_reference(DOCS, n, counts.vocab, model.discounts)
        for h in CONTEXTS:
            ctx = (BOS * 3 + h)[-(n - 1):] if n > 1 else ""
            for w in counts.vocab:
                assert model.prob(w, ctx) == pytest.approx(ref(w, ctx), rel=1e-12), (w, ctx)


def test_discount_formulas():
    # n1 = 4, n2 = 2, n3 = 1, n4 = 1: Y = 4 / 8 = 0.5
    counts = [1, 1, 1, 1, 2, 2, 3, 4, 9]
    assert estimate_discounts(counts, modified=False) == (0.5, 0.5, 0.5)
    d1, d2, d3 = estimate_discounts(counts, modified=True)
    assert d1 == pytest.approx(1 - 2 * 0.5 * 2 / 4)  # 0.5
    assert d2 == pytest.approx(2 - 3 * 0.5 * 1 / 2)  # 1.25
    assert d3 == pytest.approx(3 - 4 * 0.5 * 1 / 1)  # 1.0
    assert estimate_discounts([5, 6, 7], modified=True) == (ng.MIN_DISCOUNT,) * 3  # no n1: clamped, not zero


@pytest.mark.parametrize("smoothing", ng.SMOOTHINGS)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_distributions_sum_to_one(smoothing, n):
    counts = count_ngrams(DOCS, 5)
    model = NgramLM(counts, n, smoothing, k=0.5)
    for h in CONTEXTS:
        ctx = (BOS * 4 + h)[-(n - 1):] if n > 1 else ""
        dist = model.distribution(ctx)
        assert sum(dist) == pytest.approx(1.0, abs=1e-12)
        assert min(dist) > 0  # every character, UNK included, keeps some mass


def test_add_k_by_hand():
    counts = count_ngrams(["abab"], 2)
    model = NgramLM(counts, 2, "addk", k=1.0)
    # vocabulary {a, b, UNK}; after "a": c(ab) = 2, c(a.) = 2 -> (2 + 1) / (2 + 3)
    assert model.prob("b", "a") == pytest.approx(3 / 5)
    assert model.prob("a", "a") == pytest.approx(1 / 5)
    assert model.prob("a", BOS) == pytest.approx(2 / 4)  # c(BOS a) = 1, c(BOS .) = 1
    assert model.prob("a", "z") == pytest.approx(1 / 3)  # unseen context: uniform
    scored = model.score(["ab"])
    nll = -math.log(2 / 4) - math.log(3 / 5)
    assert scored["nll"] == pytest.approx(nll)
    assert scored["ppl"] == pytest.approx(math.exp(nll / 2))
    assert scored["bpc"] == pytest.approx(nll / 2 / math.log(2))


def stdlib_text(name="textwrap.py", chars=6000):
    return (Path(sysconfig.get_paths()["stdlib"]) / name).read_text(encoding="utf-8")[:chars]


@pytest.mark.parametrize("smoothing", ng.SMOOTHINGS)
def test_training_perplexity_falls_with_n(smoothing):
    text = stdlib_text()
    counts = count_ngrams([text], 5)
    ppl = [NgramLM(counts, n, smoothing, k=0.01).score([text])["ppl"] for n in range(1, 6)]
    assert all(a > b for a, b in zip(ppl, ppl[1:], strict=False)), ppl


def test_table_and_held_out_unknown_characters():
    rows = ng.perplexity_table([stdlib_text()], [stdlib_text("shlex.py", 3000) + "\u00e9\u4e2d"], [1, 3, 5], "mkn")
    assert [r["n"] for r in rows] == [1, 3, 5]
    assert all(math.isfinite(r["val_ppl"]) and r["val_bpc"] == pytest.approx(math.log2(r["val_ppl"])) for r in rows)
    assert rows[1]["val_ppl"] < rows[0]["val_ppl"]  # 3-grams beat unigrams on held-out code
    assert rows[2]["train_ppl"] < rows[1]["train_ppl"]


def test_sampling_is_seeded():
    counts = count_ngrams([stdlib_text()], 4)
    model = NgramLM(counts, 4, "mkn")
    a, b, c = model.sample(80, seed=1), model.sample(80, seed=1), model.sample(80, seed=2)
    assert a == b and a != c and len(a) == 80
    assert set(a) <= set(counts.vocab)
    assert model.sample(20, seed=1, prompt="def ") == model.sample(20, seed=1, prompt="def ")


def test_bad_input():
    counts = count_ngrams(DOCS, 3)
    with pytest.raises(ValueError, match="at least 1"):
        count_ngrams(DOCS, 0)
    with pytest.raises(ValueError, match="no training text"):
        count_ngrams(["", ""], 2)
    with pytest.raises(ValueError, match="1..3"):
        NgramLM(counts, 4)
    with pytest.raises(ValueError, match="unknown"):
        NgramLM(counts, 2, "witten-bell")
    with pytest.raises(ValueError, match="k > 0"):
        NgramLM(counts, 2, "addk", k=0)
    with pytest.raises(ValueError, match="discount"):
        NgramLM(counts, 2, "kn", discount=1.5)
    with pytest.raises(ValueError, match="no text"):
        NgramLM(counts, 2).score([""])
    assert ng.normalize("a" + BOS + "\u4e2d", {"a", UNK}) == "a" + UNK + UNK
