"""Quality filters against datatrove's implementations of the same papers, and language/length against truth.

datatrove splits words with spaCy (not installed here) and has its own punctuation list; the comparison
gives both sides our word splitter and our idea of a symbol (no word character), so what is compared is
the rules themselves: each document's keep/drop decision, and for C4 the text that is kept.
"""

import sysconfig
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import c4_filters, gopher_quality_filter, gopher_repetition_filter

from llmlab.data.pipeline.filters import (
    C4,
    GopherQuality,
    GopherRepetition,
    Language,
    Length,
    _duplicated_ngram_chars,
    _duplicated_ngram_chars_fast,
    _top_ngram_chars,
    _top_ngram_chars_fast,
    count_sentences,
    words_of,
)
from llmlab.data.pipeline.stage import StageStats

STDLIB = Path(sysconfig.get_paths()["stdlib"])
EDGE_CASES = [
    "- one\n- two\n- three\n" * 30,
    "word... " * 80,
    "# heading " * 60,
    " ".join(["supercalifragilisticexpialidocious"] * 60),
    "a b c d e f g " * 20,
    "the cat and the dog. " * 3,
    ("The farmer visited the market. It was a fine day to be with friends, and to have fun.\n" * 3
     + "Unique closing line with enough words to matter here.\n") * 5,
    "A line without an end\nAnother one with lorem ipsum inside.\n" * 10,
]


class NotWordChar:
    """datatrove's punctuation set, redefined as 'not a word character', like ours."""

    def __contains__(self, ch: str) -> bool:
        return not (ch.isalnum() or ch == "_")


@pytest.fixture
def datatrove_like_ours(monkeypatch):
    monkeypatch.setattr(gopher_quality_filter, "split_into_words", lambda text, language=None: words_of(text))
    monkeypatch.setattr(gopher_repetition_filter, "split_into_words", lambda text, language=None: words_of(text))
    monkeypatch.setattr(gopher_quality_filter, "PUNCTUATION_SET", NotWordChar())
    monkeypatch.setattr(c4_filters, "split_into_sentences",
                        lambda text, language=None: ["s"] * count_sentences(text))


def corpus(noisy_rows) -> list[str]:
    stdlib = [(STDLIB / name).read_text(encoding="utf-8") for name in ("textwrap.py", "heapq.py", "this.py")]
    return [r["text"] for r in noisy_rows[:400]] + stdlib + EDGE_CASES


def test_gopher_quality_matches_datatrove(datatrove_like_ours, noisy_rows):
    ours, theirs = GopherQuality(), gopher_quality_filter.GopherQualityFilter()
    texts = corpus(noisy_rows)
    kept = [ours.apply({"id": "x", "text": t, "source": "s"}, StageStats("g")) is not None for t in texts]
    expected = [theirs.filter(Document(text=t, id="x")) is True for t in texts]
    assert kept == expected
    assert 0 < sum(kept) < len(kept)  # the corpus exercises both outcomes


def test_gopher_repetition_matches_datatrove(datatrove_like_ours, noisy_rows):
    ours, theirs = GopherRepetition(), gopher_repetition_filter.GopherRepetitionFilter()
    texts = corpus(noisy_rows)
    kept = [ours.apply({"id": "x", "text": t, "source": "s"}, StageStats("g")) is not None for t in texts]
    expected = [theirs.filter(Document(text=t, id="x")) is True for t in texts]
    assert kept == expected
    assert 0 < sum(kept) < len(kept)


def test_c4_matches_datatrove(datatrove_like_ours, noisy_rows):
    ours, theirs = C4(bad_words=[]), c4_filters.C4QualityFilter()  # datatrove's C4 filter has no bad-word rule
    n_kept = 0
    for text in corpus(noisy_rows):
        new = ours.apply({"id": "x", "text": text, "source": "s"}, StageStats("c4"))
        doc = Document(text=text, id="x")
        keep = theirs.filter(doc) is True
        assert (new is not None) == keep, text[:200]
        if keep:
            assert new["text"] == doc.text
            n_kept += 1
    assert n_kept > 100


def test_fast_ngram_counts_equal_the_readable_ones(noisy_rows):
    """The vectorised n-gram statistics against the loops written like the paper's definitions."""
    import random

    rng = random.Random(0)
    texts = [r["text"] for r in noisy_rows[:150]]
    texts += [" ".join(rng.choice("ab") for _ in range(rng.randint(0, 60))) for _ in range(200)]  # many repeats
    for text in texts:
        words = words_of(text)
        for n in (2, 3, 4):
            assert _top_ngram_chars_fast(words, n) == _top_ngram_chars(words, n)
        for n in range(5, 11):
            assert _duplicated_ngram_chars_fast(words, n) == _duplicated_ngram_chars(words, n), (text, n)


def test_gopher_reasons_on_hand_made_pages():
    stats = StageStats("g")
    prose = "The farmer and the baker went to the market with their friends to have a good day. "
    assert GopherQuality().apply({"id": "a", "text": prose * 6, "source": "s"}, stats) is not None
    assert GopherQuality().apply({"id": "b", "text": prose, "source": "s"}, stats) is None  # 18 words < 50
    bullets = "\n".join(f"- the item number {i} with the words to have" for i in range(20))
    assert GopherQuality().apply({"id": "c", "text": bullets, "source": "s"}, stats) is None
    assert dict(stats.dropped) == {"too few words": 1, "too many bullet lines": 1}
    assert GopherQuality(min_words=None).apply({"id": "b", "text": prose, "source": "s"}, stats) is not None


def test_c4_bad_words_and_boilerplate_lines():
    stats = StageStats("c4")
    page = ("Home | About\n" + "The committee funded a new bridge over the river last year. " * 2 + "\n") * 3
    page += "This website uses cookies to improve your experience.\n"
    out = C4().apply({"id": "p", "text": page, "source": "s"}, stats)
    assert out is not None and "cookies" not in out["text"] and "Home" not in out["text"]
    assert stats.counters["lines dropped: policy boilerplate"] == 1
    assert C4().apply({"id": "q", "text": page + "What the fuck is this.", "source": "s"}, stats) is None
    assert stats.dropped["bad word"] == 1


def test_language_filter_against_the_planted_languages(noisy_rows):
    stage, stats = Language(languages=["en"], threshold=0.5), StageStats("language")
    prose = [r for r in noisy_rows if r["kind"] in ("clean", "pii", "lang_fr", "lang_de", "lang_es")][:300]
    kept = [stage.apply({"id": r["id"], "text": r["text"], "source": "s"}, stats) is not None for r in prose]
    truth = [r["kind"] in ("clean", "pii") for r in prose]
    accuracy = sum(k == t for k, t in zip(kept, truth, strict=True)) / len(truth)
    assert accuracy >= 0.98, accuracy
    fr = next(r for r in noisy_rows if r["kind"] == "lang_fr")
    out = Language(languages=[]).apply({"id": "f", "text": fr["text"], "source": "s"}, stats)
    assert out["language"] == "fr" and 0.5 < out["language_score"] <= 1


def test_length_filter_counts_tokens(data_dir):
    from llmlab.tokenizer import Tokenizer

    tok_path = str(data_dir / "tokenizer.llmlab.json")
    text = "def add(a, b):\n    return a + b\n" * 4
    n = len(Tokenizer.load(tok_path).encode(text))
    stats = StageStats("length")
    assert Length(min_tokens=n, tokenizer=tok_path).apply({"id": "a", "text": text, "source": "s"}, stats)
    assert Length(min_tokens=n + 1, tokenizer=tok_path).apply({"id": "a", "text": text, "source": "s"}, stats) is None
    assert Length(max_tokens=len(text.encode()) - 1).apply({"id": "a", "text": text, "source": "s"}, stats) is None
    assert dict(stats.dropped) == {"too few tokens": 1, "too many tokens": 1}
