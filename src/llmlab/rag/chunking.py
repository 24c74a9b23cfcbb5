"""Cutting documents into chunks under a token budget; every chunk keeps its source and character offsets.

Three chunkers, each a function (text, count, size, overlap) -> [(start, end, meta)] over character offsets,
so `text[start:end]` is always the chunk's text exactly (edges trimmed of whitespace, nothing rewritten):
- `fixed_spans`: windows of at most `size` tokens over whitespace-separated words, each next window
  starting up to `overlap` tokens before the previous one ended;
- `recursive_spans`: split on paragraphs, then sentences, then lines, then words (then characters),
  and merge neighbouring pieces back while they fit (LangChain's RecursiveCharacterTextSplitter),
  carrying up to `overlap` tokens of trailing pieces into the next chunk;
- `markdown_spans`: sections at Markdown headings (not inside ``` fences), each split recursively;
  a chunk's `meta["heading"]` is its heading path, "Install > From source".
`count(text) -> int` is the embedder's token count (`token_counter`) or `word_count`. Token counts of pieces
are added, not recounted when pieces merge: with byte-level BPE a merged chunk can be a token or two off the
sum; the embedder cuts at its own limit anyway.

Worked example (`word_count`, size=2, overlap=1): "a b c d" -> "a b", "b c", "c d".
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmlab.common.errors import UserError

Count = Callable[[str], int]
Span = tuple[int, int, dict]
# paragraph, sentence end, line, word: the coarsest boundary that gives pieces under the budget wins
SEPARATORS = (re.compile(r"\n[ \t]*\n\s*"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\n\s*"), re.compile(r"\s+"))
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
FENCE = re.compile(r"^(```|~~~)", re.M)


@dataclass
class Chunk:
    source: str
    text: str
    start: int  # character offsets into the document: document.text[start:end] == text
    end: int
    meta: dict[str, Any] = field(default_factory=dict)


def word_count(text: str) -> int:
    """Whitespace-separated words: the budget unit when no tokenizer is given."""
    return len(text.split())


def _encode_len(tokenizer: Any, text: str) -> int:
    try:
        return len(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # llmlab's BPE tokenizer adds no special tokens to begin with
        return len(tokenizer.encode(text))


def token_counter(tokenizer: Any) -> Count:
    """Token count with the tokenizer's own encoding, special tokens left out; short texts (words) cached."""
    cache: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) > 64:  # paragraphs rarely repeat; words do
            return _encode_len(tokenizer, text)
        if text not in cache:
            if len(cache) > 200_000:
                cache.clear()
            cache[text] = _encode_len(tokenizer, text)
        return cache[text]

    return count


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _char_pieces(text: str, start: int, end: int, count: Count, size: int) -> list[tuple[int, int]]:
    """An unbreakable run (a long URL, a base64 blob) halved until each piece fits the budget."""
    if end - start <= 1 or count(text[start:end]) <= size:
        return [(start, end)]
    mid = (start + end) // 2
    return _char_pieces(text, start, mid, count, size) + _char_pieces(text, mid, end, count, size)


def _words(text: str, start: int, end: int, count: Count, size: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) of each whitespace-separated word, over-long words cut into pieces."""
    out = []
    for m in re.finditer(r"\S+", text[start:end]):
        for s, e in _char_pieces(text, start + m.start(), start + m.end(), count, size):
            out.append((s, e, count(text[s:e])))
    return out


def fixed_spans(text: str, count: Count, size: int, overlap: int = 0) -> list[Span]:
    """Windows of at most `size` tokens; each next one starts up to `overlap` tokens back, always moving on.

    >>> [("a b c d"[s:e]) for s, e, _ in fixed_spans("a b c d", word_count, 2, 1)]
    ['a b', 'b c', 'c d']
    """
    words = _words(text, 0, len(text), count, size)
    spans: list[Span] = []
    i = 0
    while i < len(words):
        j, total = i, 0
        while j < len(words) and (total + words[j][2] <= size or j == i):
            total += words[j][2]
            j += 1
        spans.append((words[i][0], words[j - 1][1], {}))
        if j == len(words):
            break
        k, back = j, 0
        while k - 1 > i and back + words[k - 1][2] <= overlap:
            k -= 1
            back += words[k][2]
        i = k
    return spans


def _split(text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """Pieces of text[start:end] between matches of SEPARATORS[level]; each piece keeps its separator."""
    pieces, last = [], start
    for m in SEPARATORS[level].finditer(text, start, end):
        if m.end() > last and m.start() > last:
            pieces.append((last, m.end()))
            last = m.end()
    if last < end:
        pieces.append((last, end))
    return pieces


def _recursive(text: str, start: int, end: int, count: Count, size: int, overlap: int, level: int
               ) -> list[tuple[int, int]]:
    if count(text[start:end]) <= size:
        return [(start, end)]
    if level == len(SEPARATORS):
        return _char_pieces(text, start, end, count, size)
    pieces = _split(text, start, end, level)
    if len(pieces) <= 1:
        return _recursive(text, start, end, count, size, overlap, level + 1)
    units: list[tuple[int, int, int]] = []  # pieces that fit, each with its token count
    for s, e in pieces:
        if count(text[s:e]) <= size:
            units.append((s, e, count(text[s:e])))
        else:
            units += [(a, b, count(text[a:b])) for a, b in _recursive(text, s, e, count, size, overlap, level + 1)]
    out: list[tuple[int, int]] = []
    window: list[tuple[int, int, int]] = []
    for unit in units:
        if window and sum(u[2] for u in window) + unit[2] > size:
            out.append((window[0][0], window[-1][1]))
            kept: list[tuple[int, int, int]] = []  # trailing pieces carried over as overlap
            for u in reversed(window):
                if sum(k[2] for k in kept) + u[2] > overlap or sum(k[2] for k in kept) + u[2] + unit[2] > size:
                    break
                kept.insert(0, u)
            window = kept
        window.append(unit)
    out.append((window[0][0], window[-1][1]))
    return out


def recursive_spans(text: str, count: Count, size: int, overlap: int = 0, start: int = 0, end: int | None = None
                    ) -> list[Span]:
    """Paragraphs, then sentences, lines, words: the coarsest pieces under `size`, merged back while they fit.

    >>> t = "One two. Three four.\\n\\nFive six seven."
    >>> [t[s:e] for s, e, _ in recursive_spans(t, word_count, 4)]
    ['One two. Three four.', 'Five six seven.']
    """
    end = len(text) if end is None else end
    spans = []
    for s, e in _recursive(text, start, end, count, size, overlap, 0):
        s, e = _trim(text, s, e)
        if e > s:
            spans.append((s, e, {}))
    return spans


def markdown_sections(text: str) -> list[tuple[int, int, str]]:
    """(start, end, heading path) per section; a section starts at its heading line. Fenced code is skipped."""
    fences = [m.start() for m in FENCE.finditer(text)]
    in_code = list(zip(fences[::2], fences[1::2] + [len(text)] * (len(fences) % 2), strict=False))
    headings = [m for m in HEADING.finditer(text) if not any(a < m.start() < b for a, b in in_code)]
    stack: list[tuple[int, str]] = []
    sections, prev, path = [], 0, ""
    for m in headings:
        if m.start() > prev:
            sections.append((prev, m.start(), path))
        level = len(m.group(1))
        stack = [h for h in stack if h[0] < level] + [(level, m.group(2))]
        path, prev = " > ".join(h[1] for h in stack), m.start()
    sections.append((prev, len(text), path))
    return sections


def markdown_spans(text: str, count: Count, size: int, overlap: int = 0) -> list[Span]:
    """Sections at headings (never a chunk across two), each split recursively; meta carries the heading path."""
    spans = []
    for s, e, path in markdown_sections(text):
        for a, b, meta in recursive_spans(text, count, size, overlap, s, e):
            spans.append((a, b, {**meta, "heading": path} if path else meta))
    return spans


CHUNKERS: dict[str, Callable[..., list[Span]]] = {"fixed": fixed_spans, "recursive": recursive_spans,
                                                  "markdown": markdown_spans}
METHODS = ("auto", *CHUNKERS)  # auto: markdown for .md sources, recursive for the rest


def chunk_documents(docs: list, method: str = "auto", size: int = 256, overlap: int = 32, count: Count | None = None
                    ) -> list[Chunk]:
    """Chunks of every document (`documents.Document`), in order, with source, offsets and metadata."""
    if method not in METHODS:
        raise UserError(f"chunker {method!r} is unknown; choose one of {', '.join(METHODS)}")
    if size < 1:
        raise UserError(f"chunk_tokens={size}: must be at least 1")
    if not 0 <= overlap < size:
        raise UserError(f"overlap={overlap}: must be at least 0 and below chunk_tokens ({size})")
    count = count or word_count
    chunks = []
    for doc in docs:
        name = method if method != "auto" else ("markdown" if doc.source.endswith(".md") else "recursive")
        for s, e, meta in CHUNKERS[name](doc.text, count, size, overlap):
            chunks.append(Chunk(doc.source, doc.text[s:e], s, e, {**doc.meta, **meta}))
    return chunks
