"""BLEU and chrF equal sacrebleu's corpus scores, ROUGE equals rouge-score's, the Porter stemmer equals nltk's."""

import random
import re
import sysconfig
from pathlib import Path

import pytest
import sacrebleu
from nltk.stem.porter import PorterStemmer
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from llmlab.eval import porter
from llmlab.eval.metrics import ROUGE_TYPES, bleu, chrf, lcs_length, ngrams, rouge, rouge_tokens, tokenize_13a

VOCAB = ("the a cat dog sat on mat running runs ran quickly quick brown fox jumps over lazy dogs . , ! ? ' \" 3.5 "
         "1,000 well-known e-mail (x) [y] café naïve 東京 über don't it's 12-3 &amp; &quot; <skipped> - -- ; "
         "Generalizations HAPPY").split()
REAL = [("The cat sat on the mat.", ["A cat was sitting on the mat.", "The cat sat on a mat."]),
        ("It is raining heavily in Paris today.", ["Heavy rain is falling in Paris today."]),
        ("The quick brown fox jumps over the lazy dog", ["A quick brown fox jumped over a lazy dog."]),
        ("Prices rose by 3.5% in 2024, the bank said.", ["The bank said prices rose 3.5% in 2024."]),
        ("", ["Nothing was said."]),
        ("Café owners in Zürich opened 1,000 new shops!", ["In Zürich, café owners opened 1,000 shops."])]


def random_sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 14)))


def random_corpus(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    n, k = rng.randint(1, 6), rng.randint(1, 3)
    return [random_sentence(rng) for _ in range(n)], [[random_sentence(rng) for _ in range(k)] for _ in range(n)]


def streams(references: list[list[str]]) -> list[list[str]]:
    """Our references[i] (per hypothesis) -> sacrebleu's refs[j][i] (per reference set)."""
    return [list(refs) for refs in zip(*references, strict=True)]


def test_tokenize_13a_equals_sacrebleu():
    rng = random.Random(1)
    tokenizer = Tokenizer13a()
    for _ in range(500):
        line = random_sentence(rng)
        assert tokenize_13a(line) == tokenizer(line).split()
    assert tokenize_13a("Hello, world! It's 3.5-4 km.") == ["Hello", ",", "world", "!", "It's", "3.5", "-", "4", "km",
                                                            "."]


def test_bleu_equals_sacrebleu_on_random_corpora():
    rng = random.Random(0)
    for _ in range(150):
        hyps, refs = random_corpus(rng)
        ours, theirs = bleu(hyps, refs), sacrebleu.corpus_bleu(hyps, streams(refs))
        assert ours["bleu"] == pytest.approx(theirs.score, abs=1e-9)
        assert ours["bleu_counts"] == theirs.counts and ours["bleu_totals"] == theirs.totals
        assert (ours["bleu_sys_len"], ours["bleu_ref_len"]) == (theirs.sys_len, theirs.ref_len)
        assert ours["bleu_bp"] == pytest.approx(theirs.bp, abs=1e-12)
        assert ours["bleu_precisions"] == pytest.approx(theirs.precisions, abs=1e-9)


def test_bleu_on_real_sentences_with_uneven_reference_counts():
    hyps = [h for h, _ in REAL]
    refs = [r for _, r in REAL]
    padded = [r + [None] * (2 - len(r)) for r in refs]  # sacrebleu marks a missing reference with None
    theirs = sacrebleu.corpus_bleu(hyps, streams(padded))
    assert bleu(hyps, refs)["bleu"] == pytest.approx(theirs.score, abs=1e-9)
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100.0)
    assert bleu(["completely different"], ["nothing alike here"])["bleu"] == 0.0


def test_bleu_empty_hypotheses_and_short_sentences():
    for hyps, refs in [([""], ["a b c"]), (["", ""], ["x", ""]), (["a b"], ["a b"]), (["a"], ["a b c d e"])]:
        assert bleu(hyps, refs)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_chrf_equals_sacrebleu():
    rng = random.Random(2)
    for _ in range(150):
        hyps, refs = random_corpus(rng)
        assert chrf(hyps, refs)["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams(refs)).score, abs=1e-9)
    hyps, refs = [h for h, _ in REAL], [r[:1] for _, r in REAL]
    assert chrf(hyps, refs)["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams(refs)).score, abs=1e-9)
    assert chrf([""], [""])["chrf"] == sacrebleu.corpus_chrf([""], [[""]]).score == 0.0


def rouge_score_mean(hyps: list[str], refs: list[list[str]]) -> dict:
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score_multi(r, h) for h, r in zip(hyps, refs, strict=True)]
    out = {}
    for kind in ROUGE_TYPES:
        for suffix, attr in (("", "fmeasure"), ("_precision", "precision"), ("_recall", "recall")):
            out[kind + suffix] = sum(getattr(s[kind], attr) for s in scores) / len(scores)
    return out


def test_rouge_equals_rouge_score():
    rng = random.Random(3)
    for _ in range(150):
        hyps, refs = random_corpus(rng)
        assert rouge(hyps, refs) == pytest.approx(rouge_score_mean(hyps, refs), abs=1e-12)
    hyps, refs = [h for h, _ in REAL], [r for _, r in REAL]
    assert rouge(hyps, refs) == pytest.approx(rouge_score_mean(hyps, refs), abs=1e-12)
    single = rouge(["the cats are running"], ["The cat runs"])  # a single reference string per hypothesis
    assert single == pytest.approx(rouge_score_mean(["the cats are running"], [["The cat runs"]]), abs=1e-12)
    unstemmed = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False).score("The cat runs", "the cats ran")
    assert rouge(["the cats ran"], ["The cat runs"], use_stemmer=False)["rouge1"] == pytest.approx(
        unstemmed["rouge1"].fmeasure)


def test_rouge_pieces():
    assert rouge_tokens("The cats' 2 TOYS!") == ["the", "cat", "2", "toy"]
    assert rouge_tokens("Zürich café") == ["z", "rich", "caf"]  # non-ASCII letters split words, as in rouge-score
    assert lcs_length(list("abcd"), list("acxd")) == 3 and lcs_length([], ["a"]) == 0
    assert ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert rouge([""], ["something"])["rougeL"] == 0.0


@pytest.mark.parametrize("metric", [bleu, chrf, rouge])
def test_bad_shapes_are_refused(metric):
    with pytest.raises(ValueError, match="hypotheses is empty"):
        metric([], [])
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metric(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        metric(["a"], [[]])


def stdlib_words(limit: int) -> list[str]:
    """Distinct lowercase words from the standard library's sources, in a fixed order."""
    words: dict[str, None] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        for word in re.findall(r"[a-z]+", path.read_text(encoding="utf-8", errors="ignore").lower()):
            words.setdefault(word)
        if len(words) >= limit:
            break
    return list(words)[:limit]


def test_porter_stemmer_equals_nltk():
    nltk_stemmer = PorterStemmer()  # the default NLTK_EXTENSIONS mode, which rouge-score uses
    words = stdlib_words(5000) + ["caresses", "ponies", "ties", "died", "cried", "skies", "dying", "hopping",
                                  "falling", "hissing", "filing", "agreed", "feed", "generalizations", "yyyy",
                                  "syzygy", "happy", "sky", "logically", "fully", "conditional", "Running"]
    assert len(words) > 4000
    mismatches = [(w, porter.stem(w), nltk_stemmer.stem(w)) for w in words if porter.stem(w) != nltk_stemmer.stem(w)]
    assert mismatches == []


def test_porter_measure_examples():
    assert [porter.measure(w) for w in ("tree", "by", "trouble", "oats", "troubles", "private")] == [0, 0, 1, 1, 2, 2]
    assert porter.consonants("toy") == [True, False, True]
