"""Documents and chunkers: every chunk is an exact slice of its document, within its budget, with its source;
overlap and heading paths as documented; bad input is a one-line error."""

import json

import pytest

from llmlab.common.errors import UserError
from llmlab.rag.chunking import (
    chunk_documents,
    fixed_spans,
    markdown_sections,
    markdown_spans,
    recursive_spans,
    token_counter,
    word_count,
)
from llmlab.rag.documents import Document, read_documents

PROSE = ("Retrieval finds passages. Generation answers from them. " * 6 + "\n\n" +
         "A second paragraph is here. It has three sentences. The last one is short.\n\n" +
         "word " * 70 + "\n\nEnd.")
MARKDOWN = ("Preface text.\n\n# Install\n\nRun the installer. It takes a minute.\n\n## From source\n\n"
            "Clone the repository first.\n\n```\n# a comment, not a heading\n```\n\n# Use\n\nCall the function.\n")


def test_fixed_windows_match_a_naive_reference():
    words = PROSE.split()
    for size, overlap in ((10, 0), (10, 3), (7, 6), (1, 0)):
        got = [PROSE[s:e].split() for s, e, _ in fixed_spans(PROSE, word_count, size, overlap)]
        expected, i = [], 0  # the definition, word by word: windows of `size`, stepping `size - overlap`
        while True:
            expected.append(words[i:i + size])
            if i + size >= len(words):
                break
            i += max(size - overlap, 1)
        assert got == expected


@pytest.mark.parametrize("chunker", [fixed_spans, recursive_spans, markdown_spans])
def test_chunks_are_exact_slices_within_budget(chunker):
    for text in (PROSE, MARKDOWN):
        spans = chunker(text, word_count, 12, 2)
        assert spans
        for s, e, _ in spans:
            piece = text[s:e]
            assert piece == piece.strip() and piece
            assert word_count(piece) <= 12
        assert [w for s, e, _ in spans for w in text[s:e].split()][:3] == text.split()[:3]


def test_recursive_prefers_paragraphs_then_sentences():
    spans = [PROSE[s:e] for s, e, _ in recursive_spans(PROSE, word_count, 20)]
    assert "A second paragraph is here. It has three sentences. The last one is short." in spans
    assert all(s.endswith((".", "word")) for s in spans)  # cut at sentence ends, or inside the run of words
    covered = " ".join(spans).split()
    assert covered == PROSE.split()  # no overlap asked: every word exactly once, in order


def test_recursive_overlap_carries_trailing_sentences():
    text = "One two three. Four five six. Seven eight nine. Ten eleven twelve."
    spans = [text[s:e] for s, e, _ in recursive_spans(text, word_count, 6, 3)]
    assert spans == ["One two three. Four five six.", "Four five six. Seven eight nine.",
                     "Seven eight nine. Ten eleven twelve."]


def test_markdown_sections_follow_headings_not_code():
    sections = markdown_sections(MARKDOWN)
    assert [p for _, _, p in sections] == ["", "Install", "Install > From source", "Use"]
    spans = markdown_spans(MARKDOWN, word_count, 50)
    by_heading = {m.get("heading", ""): MARKDOWN[s:e] for s, e, m in spans}
    assert by_heading["Install > From source"].startswith("## From source")
    assert "# a comment, not a heading" in by_heading["Install > From source"]


def test_long_unbroken_text_is_cut_to_the_budget():
    text = "x" * 5000
    count = lambda t: len(t) // 100 + 1  # noqa: E731  (a token every 100 characters)
    for chunker in (fixed_spans, recursive_spans):
        spans = chunker(text, count, 5, 0)
        assert all(count(text[s:e]) <= 5 for s, e, _ in spans)
        assert "".join(text[s:e] for s, e, _ in spans) == text


def test_token_counter_uses_the_tokenizer():
    class Chars:
        def encode(self, text, add_special_tokens=True):
            return list(text) + ([0, 0] if add_special_tokens else [])

    assert token_counter(Chars())("hello") == 5  # special tokens left out


def test_documents_from_a_folder(tmp_path):
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "intro.md").write_text(MARKDOWN)
    (tmp_path / "a.txt").write_text(PROSE)
    (tmp_path / "code.py").write_text("def f():\n    return 1\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "row one", "lang": "en"}) + "\n\n" +
                                         json.dumps({"text": "row two", "source": "custom/2"}) + "\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\x00\x00")
    (tmp_path / ".hidden.txt").write_text("secret")
    docs = read_documents(tmp_path)
    assert [d.source for d in docs] == ["a.txt", "code.py", "guide/intro.md", "rows.jsonl:1", "custom/2"]
    assert docs[3].meta == {"lang": "en"}
    chunks = chunk_documents(docs, "auto", 20, 4)
    for c in chunks:
        doc = next(d for d in docs if d.source == c.source)
        assert doc.text[c.start:c.end] == c.text
    assert any(c.meta.get("heading") == "Install" for c in chunks if c.source == "guide/intro.md")


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_documents(tmp_path / "missing")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        read_documents(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"body": "no text"}\n')
    with pytest.raises(UserError, match="string field 'text'"):
        read_documents(tmp_path)
    (tmp_path / "bad.jsonl").unlink()
    with pytest.raises(UserError, match="no text found"):
        read_documents(tmp_path)
    doc = [Document("a.txt", PROSE)]
    for kwargs, message in (({"method": "semantic"}, "unknown"), ({"size": 0}, "at least 1"),
                            ({"size": 10, "overlap": 10}, "below chunk_tokens")):
        with pytest.raises(UserError, match=message) as e:
            chunk_documents(doc, **kwargs)
        assert "\n" not in str(e.value)
