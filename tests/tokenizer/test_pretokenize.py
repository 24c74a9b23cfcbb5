"""Streaming pre-tokenisation: counting block by block (and on several processes) is exact."""

from collections import Counter

import regex

from llmlab.tokenizer import pretokenize
from llmlab.tokenizer.patterns import GPT2, GPT2_SPLIT_DIGITS, GPT4


def whole(text, pattern):
    return {k.encode(): v for k, v in Counter(regex.findall(pattern, text)).items()}


def test_blocks_count_exactly_like_the_whole_text(monkeypatch, tmp_path, text):
    monkeypatch.setattr(pretokenize, "BLOCK_CHARS", 1000)
    tricky = text[:40_000] + "\n  \nx\n\n\ny 12\n\t\nz" * 50
    path = tmp_path / "corpus.txt"
    path.write_text(tricky, encoding="utf-8")
    for pattern in (GPT2, GPT4, GPT2_SPLIT_DIGITS):
        expected = whole(tricky, pattern)
        assert pretokenize.count_chunks([tricky], [], pattern, num_workers=1) == expected
        assert pretokenize.count_chunks([], [path], pattern, num_workers=1) == expected
    assert len(list(pretokenize.iter_blocks(path))) > 10


def test_several_processes_count_the_same(monkeypatch, tmp_path, text):
    monkeypatch.setattr(pretokenize, "BLOCK_CHARS", 4000)
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    assert pretokenize.count_chunks([], [path], GPT4, num_workers=2) == whole(text, GPT4)


def test_cut_point():
    assert pretokenize.cut_point("ab\ncd\n12") == 3
    assert pretokenize.cut_point("no newline") == -1
