"""Quality filters: each drops documents for a named reason, with the thresholds of the paper it comes from.

- `gopher_quality`: MassiveText's quality rules (Rae et al. 2021, "Scaling Language Models: Methods,
  Analysis & Insights from Training Gopher", appendix A.1.1): 50..100,000 words, mean word length 3..10,
  symbol-to-word ratio (`#`, `...`) at most 0.1, at most 90% of lines starting with a bullet and 30%
  ending in an ellipsis, at least 80% of words with a letter, at least two of eight English stop words.
- `gopher_repetition`: the same paper's repetition rules (table A1): duplicate line and paragraph
  fractions (by count and by characters), the share of characters in the most frequent 2-, 3-, 4-gram,
  and the share of characters in duplicated 5- to 10-grams.
- `c4`: C4's rules (Raffel et al. 2020, section 2.2, and its TFDS code): remove Wikipedia citation marks,
  keep only lines ending in terminal punctuation with at least 3 words, drop lines mentioning javascript
  or cookie/terms-of-use boilerplate, drop pages with "lorem ipsum", a curly brace, a bad word, or fewer
  than 5 sentences left.
- `language`: language identification with py3langid (a maintained fork of langid.py, Lui & Baldwin
  2012): a 4.5 MB naive Bayes model shipped inside the wheel, so it runs offline with nothing downloaded,
  at about a millisecond per page. (fastText's lid.176 model, which FineWeb used, is downloaded at run
  time by its Python wrappers; lingua's wheel is far larger.) Adds `language` and `language_score`.
- `length`: a length filter in tokens, counted with any tokenizer `Tokenizer.load` opens, or in UTF-8
  bytes (the byte-level tokenizer: one token per byte).

Rule definitions follow datatrove's implementations where the papers leave details open (what a word is
aside: here, a run of word characters or a run of punctuation), and tests hold them equal to datatrove's
on the same words. Thresholds are options; set one to None to switch its rule off.
"""

import dataclasses
from collections import Counter
from functools import lru_cache

import numpy as np
import regex

from llmlab.data.pipeline.stage import Doc, DocStage, StageStats

WORD = regex.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")
WORD_CHAR = regex.compile(r"\w")
SENTENCE_END = regex.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")
PARAGRAPH = regex.compile(r"\n{2,}")
LINES = regex.compile(r"\n+")
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
CITATION = regex.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A few words from the LDNOOBW English list that C4 used; give the full list with `bad_words_file`.
BAD_WORDS = ("fuck", "shit", "cunt", "bitch", "porn", "xxx", "dildo", "blowjob", "motherfucker", "whore")


def words_of(text: str) -> list[str]:
    """Words and punctuation runs: "Don't stop... now!" -> ["Don't", "stop", "...", "now", "!"]."""
    return WORD.findall(text)


def count_sentences(text: str) -> int:
    """Sentence ends (., !, ? or … before a space or the end): 'A b. C d! E' -> 2, and 1 at least for text."""
    return max(len(SENTENCE_END.findall(text)), 1 if text.strip() else 0)


def gopher_quality_reason(text: str, words: list[str], s: "GopherQuality") -> str | None:
    """The first Gopher quality rule `text` breaks, or None."""
    n_words = len(words)
    if n_words == 0:
        return "no words"
    counts = Counter(words)  # every statistic below is a sum over distinct words: text repeats words a lot
    non_symbol = {w: c for w, c in counts.items() if WORD_CHAR.match(w)}  # not runs of punctuation/symbols
    n_non_symbol = sum(non_symbol.values())
    if s.min_words is not None and n_non_symbol < s.min_words:
        return "too few words"
    if s.max_words is not None and n_non_symbol > s.max_words:
        return "too many words"
    mean_len = sum(len(w) * c for w, c in non_symbol.items()) / max(n_non_symbol, 1)
    if s.min_mean_word_length is not None and mean_len < s.min_mean_word_length:
        return "mean word length too short"
    if s.max_mean_word_length is not None and mean_len > s.max_mean_word_length:
        return "mean word length too long"
    if s.max_symbol_word_ratio is not None:
        if text.count("#") / n_words > s.max_symbol_word_ratio:
            return "too many # symbols"
        if (text.count("...") + text.count("…")) / n_words > s.max_symbol_word_ratio:
            return "too many ellipses"
    lines = text.splitlines() or [""]
    if s.max_bullet_lines is not None:
        bullets = sum(line.lstrip().startswith(("•", "-")) for line in lines)
        if bullets / len(lines) > s.max_bullet_lines:
            return "too many bullet lines"
    if s.max_ellipsis_lines is not None:
        ellipses = sum(line.rstrip().endswith(("...", "…")) for line in lines)
        if ellipses / len(lines) > s.max_ellipsis_lines:
            return "too many lines ending in an ellipsis"
    if s.min_alpha_words is not None:
        with_letter = sum(c for w, c in counts.items() if any(ch.isalpha() for ch in w))
        if with_letter / n_words < s.min_alpha_words:
            return "too few words with a letter"
    if s.min_stop_words is not None and sum(w in counts for w in STOP_WORDS) < s.min_stop_words:
        return "too few stop words"
    return None


@dataclasses.dataclass
class GopherQuality(DocStage):
    name = "gopher_quality"
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3
    max_mean_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines: float | None = 0.9
    max_ellipsis_lines: float | None = 0.3
    min_alpha_words: float | None = 0.8
    min_stop_words: int | None = 2

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        reason = gopher_quality_reason(doc["text"], words_of(doc["text"]), self)
        if reason:
            stats.drop(doc, reason)
            return None
        return doc


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(elements that repeat an earlier one, their characters): ['a', 'bb', 'a', 'a'] -> (2, 2)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (its length times its count). Readable reference."""
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def _duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams that repeat an earlier one, each word counted once (skip past a repeat).
    Readable reference; the stage runs `_duplicated_ngram_chars_fast`."""
    seen: set[str] = set()
    chars, i = 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


WINDOW_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for the polynomial window hash


def encode_words(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(word ids + 1 as uint64, prefix sums of word lengths): computed once per document, used for every n."""
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64) + np.uint64(1)
    return ids, np.concatenate([[0], np.cumsum([len(w) for w in words], dtype=np.int64)])


def _windows(encoded: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(a 64-bit hash of each n-word window, the window's characters without separators), both (m,).

    A window hash is a polynomial in word ids: equal windows hash equal, and two different windows
    collide with probability about 2^-64.
    """
    ids, csum = encoded
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for k in range(n):  # (m,) += ids shifted by k; uint64 arithmetic wraps
        h = h * WINDOW_MUL + ids[k:k + m]
    return h, csum[n:n + m] - csum[:m]


def _top_ngram_chars_fast(words: list[str], n: int, encoded: tuple | None = None) -> int:
    """`_top_ngram_chars` with numpy: ties go to the n-gram seen first, as Counter.most_common does."""
    if len(words) < n:
        return 0
    h, chars = _windows(encoded or encode_words(words), n)
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    top = counts.max()
    i = first[counts == top].min()
    return int((chars[i] + n - 1) * top)  # + the spaces of " ".join


def _duplicated_ngram_chars_fast(words: list[str], n: int, encoded: tuple | None = None) -> int:
    """`_duplicated_ngram_chars`, stepping only through windows whose n-gram occurred before."""
    return _duplicated_chars(encoded or encode_words(words), n)[0]


def _duplicated_chars(encoded: tuple[np.ndarray, np.ndarray], n: int) -> tuple[int, bool]:
    """(duplicated characters, whether any n-gram repeats at all: if none does, no longer one does either).

    Between two windows whose n-gram occurred before, every window is new and visited, so the walk jumps.
    A repeat counts when an earlier occurrence was visited (not inside a skipped stretch); each occurrence
    is checked once.
    """
    m = len(encoded[0]) - n + 1
    if m <= 0:
        return 0, False
    h, chars = _windows(encoded, n)
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    candidates = np.flatnonzero(first[inverse] < np.arange(m)).tolist()
    if not candidates:
        return 0, False
    occurrences: dict[int, list[int]] = {}
    for c in candidates:
        occurrences.setdefault(int(inverse[c]), [int(first[inverse[c]])]).append(c)
    checked = dict.fromkeys(occurrences, 0)  # per n-gram: occurrences looked at so far
    seen: set[int] = set()  # n-grams with a visited occurrence
    skipped: set[int] = set()
    total, idx = 0, 0
    for c in candidates:
        if c < idx:
            continue
        v = int(inverse[c])
        occ = occurrences[v]
        while checked[v] < len(occ) and occ[checked[v]] < c:
            if occ[checked[v]] not in skipped:
                seen.add(v)
            checked[v] += 1
        if v in seen:
            total += int(chars[c])
            skipped.update(range(c + 1, c + n))
            idx = c + n
        else:
            idx = c + 1
    return total, True


@dataclasses.dataclass
class GopherRepetition(DocStage):
    name = "gopher_repetition"
    max_dup_lines: float | None = 0.3
    max_dup_paragraphs: float | None = 0.3
    max_dup_line_chars: float | None = 0.2
    max_dup_paragraph_chars: float | None = 0.2
    top_ngrams: dict = dataclasses.field(default_factory=lambda: {"2": 0.2, "3": 0.18, "4": 0.16})
    dup_ngrams: dict = dataclasses.field(
        default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})

    def reason(self, text: str, words: list[str]) -> str | None:
        paragraphs = PARAGRAPH.split(text.strip())
        n, chars = _duplicates(paragraphs)
        if self.max_dup_paragraphs is not None and n / len(paragraphs) > self.max_dup_paragraphs:
            return "duplicate paragraphs"
        if self.max_dup_paragraph_chars is not None and chars / len(text) > self.max_dup_paragraph_chars:
            return "duplicate paragraph characters"
        lines = LINES.split(text)
        n, chars = _duplicates(lines)
        if self.max_dup_lines is not None and n / len(lines) > self.max_dup_lines:
            return "duplicate lines"
        if self.max_dup_line_chars is not None and chars / len(text) > self.max_dup_line_chars:
            return "duplicate line characters"
        encoded = encode_words(words)
        for n_str, frac in self.top_ngrams.items():
            if _top_ngram_chars_fast(words, int(n_str), encoded) / len(text) > frac:
                return f"top {n_str}-gram too frequent"
        for n_str, frac in sorted(self.dup_ngrams.items(), key=lambda kv: int(kv[0])):
            chars, any_repeat = _duplicated_chars(encoded, int(n_str))
            if chars / len(text) > frac:
                return f"duplicated {n_str}-grams"
            if not any_repeat:
                break
        return None

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        reason = self.reason(doc["text"], words_of(doc["text"]))
        if reason:
            stats.drop(doc, reason)
            return None
        return doc


@lru_cache(maxsize=8)
def _bad_word_pattern(words: tuple[str, ...]) -> regex.Pattern:
    return regex.compile(r"\b(?:" + "|".join(regex.escape(w) for w in words) + r")\b", regex.IGNORECASE)


@dataclasses.dataclass
class C4(DocStage):
    name = "c4"
    terminal_punctuation: bool = True
    remove_citations: bool = True  # Wikipedia's "[1]", "[edit]", "[citation needed]", as C4's code does
    min_words_per_line: int = 3
    max_word_length: int = 1000
    min_sentences: int = 5
    javascript: bool = True
    policy: bool = True
    lorem_ipsum: bool = True
    curly_brace: bool = True
    bad_words: list[str] = dataclasses.field(default_factory=lambda: list(BAD_WORDS))
    bad_words_file: str | None = None

    def _bad_words(self) -> tuple[str, ...]:
        words = list(self.bad_words)
        if self.bad_words_file:
            words += _read_word_list(self.bad_words_file)
        return tuple(sorted(set(w.strip().lower() for w in words if w.strip())))

    def clean(self, text: str, stats: StageStats) -> tuple[str | None, str]:
        """(the kept lines, '') or (None, why the page goes)."""
        kept, sentences = [], 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > self.max_word_length for w in words):
                stats.counters["lines dropped: word too long"] += 1
                continue
            if self.remove_citations:
                line = CITATION.sub("", line)
            if self.terminal_punctuation and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                stats.counters["lines dropped: no terminal punctuation"] += 1
                continue
            if len(words) < self.min_words_per_line:
                stats.counters["lines dropped: too few words"] += 1
                continue
            lower = line.lower()
            if self.lorem_ipsum and "lorem ipsum" in lower:
                return None, "lorem ipsum"
            if self.javascript and "javascript" in lower:
                stats.counters["lines dropped: javascript"] += 1
                continue
            if self.curly_brace and "{" in line:
                return None, "curly brace"
            if self.policy and any(p in lower for p in POLICY):
                stats.counters["lines dropped: policy boilerplate"] += 1
                continue
            sentences += count_sentences(line)
            kept.append(line)
        if sentences < self.min_sentences:
            return None, "too few sentences"
        return "\n".join(kept).strip(), ""

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        bad = self._bad_words()
        if bad:
            m = _bad_word_pattern(bad).search(doc["text"])
            if m:
                stats.drop(doc, "bad word", m.group(0))
                return None
        text, reason = self.clean(doc["text"], stats)
        if text is None:
            stats.drop(doc, reason)
            return None
        if text != doc["text"]:
            stats.counters["documents with lines removed"] += 1
        return {**doc, "text": text}


@lru_cache(maxsize=8)
def _read_word_list(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


@lru_cache(maxsize=1)
def language_identifier():
    """py3langid's model with probabilities normalised to sum to one (loaded once per process, ~1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@dataclasses.dataclass
class Language(DocStage):
    name = "language"
    languages: list[str] = dataclasses.field(default_factory=lambda: ["en"])
    threshold: float = 0.65  # FineWeb's threshold for its English score
    max_chars: int = 10_000  # the first 10k characters decide: longer adds time, not accuracy

    def check(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold}: must be between 0 and 1")

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        lang, score = language_identifier().classify(doc["text"][: self.max_chars].replace("\n", " "))
        stats.counters[f"identified as {lang}"] += 1
        if self.languages and lang not in self.languages:
            stats.drop(doc, f"language {lang}")
            return None
        if score < self.threshold:
            stats.drop(doc, "language score below threshold", f"{lang} {score:.2f}")
            return None
        return {**doc, "language": lang, "language_score": round(float(score), 4)}


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from llmlab.tokenizer import Tokenizer

    return Tokenizer.load(path)


def count_tokens(text: str, tokenizer: str) -> int:
    """Tokens in `text`: UTF-8 bytes for 'bytes', else with the tokenizer file at that path."""
    if tokenizer == "bytes":
        return len(text.encode("utf-8"))
    return len(load_tokenizer(tokenizer).encode(text))


@dataclasses.dataclass
class Length(DocStage):
    name = "length"
    min_tokens: int | None = 32
    max_tokens: int | None = None
    tokenizer: str = "bytes"

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        n = count_tokens(doc["text"], self.tokenizer)
        if self.min_tokens is not None and n < self.min_tokens:
            stats.drop(doc, "too few tokens", str(n))
            return None
        if self.max_tokens is not None and n > self.max_tokens:
            stats.drop(doc, "too many tokens", str(n))
            return None
        return doc
