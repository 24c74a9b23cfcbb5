"""Reference-based text metrics: corpus BLEU and chrF as sacrebleu computes them, ROUGE-1/2/L as rouge-score does.

Each takes hypotheses (one string per sample) and references: `references[i]` belongs to
`hypotheses[i]` and is one string or a list of strings (any number, at least one). sacrebleu takes
its references the other way round, as reference *streams* (`refs[j][i]`); the tests transpose.

- `bleu` (Papineni et al. 2002): sacrebleu's defaults. Text is split with mteval's 13a tokenizer;
  n-gram matches are clipped by the largest count in any reference and summed over the corpus; the
  brevity penalty uses, per sentence, the reference length closest to the hypothesis (the shorter
  on ties); orders with no match get NIST's exponential smoothing ('exp': 1/2, 1/4, ... matches).
  Scores are 0-100.
- `chrf` (Popović 2015): character n-grams up to 6, spaces removed, F-beta with beta = 2 (recall
  counts twice as much), statistics of each sentence's best reference summed over the corpus,
  precision and recall averaged over the orders that exist. 0-100.
- `rouge` (Lin 2004): rouge-score's tokenizer (lowercase, anything but a-z0-9 is a space, Porter
  stems of tokens longer than 3 letters), n-gram overlap for rouge1/rouge2, longest common
  subsequence for rougeL (not the summary-level rougeLsum); with several references the one with
  the best F-measure counts, per type. Precision, recall and F are averaged over samples. 0-1.

Nothing here detokenizes, lowercases for BLEU, or segments sentences.
"""

import math
import re
from collections import Counter

from llmlab.eval.porter import stem

BLEU_ORDER, CHRF_ORDER, CHRF_BETA = 4, 6, 2
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_13A = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation, not the apostrophe
        (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
        (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... or before one
        (re.compile(r"([0-9])(-)"), r"\1 \2 ")]  # a dash after a digit


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a's tokenization, which sacrebleu's BLEU uses by default.

    "Hello, world! It's 3.5-4 km." -> ["Hello", ",", "world", "!", "It's", "3.5", "-", "4", "km", "."]
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A:
        line = pattern.sub(replacement, line)
    return line.split()


def ngrams(tokens: list, n: int) -> Counter:
    """Counts of the n-grams of a sequence: ["a", "b", "a", "b"], 2 -> {("a","b"): 2, ("b","a"): 1}."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict:
    """Corpus BLEU: {"bleu", "bleu_precisions" (per order, %), "bleu_counts", "bleu_totals", "bleu_bp", ...}.

    Also "bleu_sys_len" and "bleu_ref_len"; every key starts with "bleu" so results of several
    metrics merge into one dict.
    """
    refs = _reference_lists(hypotheses, references)
    correct, total = [0] * BLEU_ORDER, [0] * BLEU_ORDER
    sys_len = ref_len = 0
    for hyp, hyp_refs in zip(hypotheses, refs, strict=True):
        tokens = tokenize_13a(hyp.rstrip())
        ref_tokens = [tokenize_13a(r.rstrip()) for r in hyp_refs]
        sys_len += len(tokens)
        ref_len += min((abs(len(r) - len(tokens)), len(r)) for r in ref_tokens)[1]  # closest, shorter on ties
        for n in range(1, BLEU_ORDER + 1):
            clip = Counter()
            for r in ref_tokens:
                clip |= ngrams(r, n)  # | keeps the largest count of each n-gram
            hyp_ngrams = ngrams(tokens, n)
            total[n - 1] += sum(hyp_ngrams.values())
            correct[n - 1] += sum(min(c, clip[g]) for g, c in hyp_ngrams.items())
    return bleu_from_counts(correct, total, sys_len, ref_len)


def bleu_from_counts(correct: list[int], total: list[int], sys_len: int, ref_len: int) -> dict:
    """BLEU from its sufficient statistics, with sacrebleu's 'exp' smoothing (keys as `bleu`'s).

    The brevity penalty is exp(1 - ref_len / sys_len) when the system is shorter. An order
    without matches gets precision 1 / (2^k * total), k counting such orders so far; an order
    without any n-gram (all sentences too short) gives log 0, floored as sacrebleu floors it.
    """
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    precisions = [0.0] * len(correct)
    out = {"bleu_counts": list(correct), "bleu_totals": list(total), "bleu_bp": bp, "bleu_sys_len": sys_len,
           "bleu_ref_len": ref_len}
    if not any(correct):
        return {"bleu": 0.0, "bleu_precisions": precisions, **out}
    halvings = 1.0
    for n, (c, t) in enumerate(zip(correct, total, strict=True)):
        if t == 0:
            break
        if c == 0:
            halvings *= 2
            precisions[n] = 100.0 / (halvings * t)
        else:
            precisions[n] = 100.0 * c / t
    log_mean = sum(math.log(p) if p > 0 else -9999999999 for p in precisions) / len(precisions)
    return {"bleu": bp * math.exp(log_mean), "bleu_precisions": precisions, **out}


def chrf(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict:
    """Corpus chrF (character 6-grams, beta 2): {"chrf": score on 0-100}."""
    refs = _reference_lists(hypotheses, references)
    stats = [0] * (3 * CHRF_ORDER)
    for hyp, hyp_refs in zip(hypotheses, refs, strict=True):
        hyp_ngrams = _char_ngrams(hyp)
        candidates = [_chrf_stats(hyp_ngrams, _char_ngrams(r)) for r in hyp_refs]
        best = max(candidates, key=_chrf_score)  # the first of equals, as sacrebleu
        stats = [a + b for a, b in zip(stats, best, strict=True)]
    return {"chrf": _chrf_score(stats)}


def _char_ngrams(text: str) -> list[Counter]:
    text = "".join(text.split())
    return [Counter(text[i:i + n] for i in range(len(text) - n + 1)) for n in range(1, CHRF_ORDER + 1)]


def _chrf_stats(hyp: list[Counter], ref: list[Counter]) -> list[int]:
    """(hypothesis, reference, matched) n-gram counts per order; where the reference has none, hypothesis counts 0."""
    stats = []
    for h, r in zip(hyp, ref, strict=True):
        stats += [sum(h.values()) if r else 0, sum(r.values()), sum(min(c, r[g]) for g, c in h.items())]
    return stats


def _chrf_score(stats: list[int]) -> float:
    """F-beta of precision and recall averaged over the orders where both sides have n-grams."""
    precisions, recalls = [], []
    for i in range(0, len(stats), 3):
        n_hyp, n_ref, n_match = stats[i:i + 3]
        if n_hyp > 0 and n_ref > 0:
            precisions.append(n_match / n_hyp)
            recalls.append(n_match / n_ref)
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    factor = CHRF_BETA ** 2
    return 100 * (1 + factor) * p * r / (factor * p + r) if p + r else 0.0


def rouge_tokens(text: str, use_stemmer: bool = True) -> list[str]:
    """rouge-score's tokenizer: "The cats' 2 TOYS!" -> ["the", "cat", "2", "toy"] (stemmed when longer than 3)."""
    tokens = re.split(r"\s+", re.sub(r"[^a-z0-9]+", " ", text.lower()))
    if use_stemmer:
        tokens = [stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if re.fullmatch(r"[a-z0-9]+", t)]


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence: ["a","b","c","d"], ["a","c","x","d"] -> 3 ("a c d")."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge(hypotheses: list[str], references: list[str] | list[list[str]], use_stemmer: bool = True) -> dict:
    """Mean ROUGE over samples: {"rouge1": F, "rouge1_precision": P, "rouge1_recall": R, "rouge2"..., "rougeL"...}."""
    refs = _reference_lists(hypotheses, references)
    totals = dict.fromkeys((f"{t}{part}" for t in ROUGE_TYPES for part in ("", "_precision", "_recall")), 0.0)
    for hyp, hyp_refs in zip(hypotheses, refs, strict=True):
        pred = rouge_tokens(hyp, use_stemmer)
        scored = [_rouge_pair(pred, rouge_tokens(r, use_stemmer)) for r in hyp_refs]
        for kind in ROUGE_TYPES:
            p, r, f = max((s[kind] for s in scored), key=lambda prf: prf[2])  # the first of equal F
            totals[kind] += f
            totals[f"{kind}_precision"] += p
            totals[f"{kind}_recall"] += r
    return {key: value / len(hypotheses) for key, value in totals.items()}


def _rouge_pair(pred: list[str], target: list[str]) -> dict[str, tuple[float, float, float]]:
    """(precision, recall, F) of each ROUGE type for one hypothesis against one reference."""
    out = {}
    for n in (1, 2):
        p_ngrams, t_ngrams = ngrams(pred, n), ngrams(target, n)
        overlap = sum(min(c, p_ngrams[g]) for g, c in t_ngrams.items())
        out[f"rouge{n}"] = _prf(overlap, max(sum(p_ngrams.values()), 1), max(sum(t_ngrams.values()), 1))
    out["rougeL"] = _prf(lcs_length(target, pred), len(pred), len(target)) if pred and target else (0.0, 0.0, 0.0)
    return out


def _prf(overlap: int, n_pred: int, n_target: int) -> tuple[float, float, float]:
    p, r = overlap / n_pred, overlap / n_target
    return p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0


def _reference_lists(hypotheses: list[str], references: list[str] | list[list[str]]) -> list[list[str]]:
    """Each hypothesis's references as a list, after checking the shapes."""
    if not hypotheses:
        raise ValueError("hypotheses is empty: nothing to score")
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} references; references[i] "
                         "must be the reference (or list of references) of hypotheses[i]")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if not all(refs) or not all(isinstance(x, str) for r in refs for x in r) or \
            not all(isinstance(h, str) for h in hypotheses):
        raise ValueError("every hypothesis must be a string with at least one reference string")
    return refs
