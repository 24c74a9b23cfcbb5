"""Streaming pre-tokenisation: counting block by block (and on several processes) is exact, and
training from a plain script (no main guard, or read from stdin) finishes instead of hanging."""

import hashlib
import subprocess
import sys
import time
from collections import Counter

import pytest
import regex

from llmlab.tokenizer import Tokenizer, pretokenize
from llmlab.tokenizer.patterns import GPT2, GPT2_SPLIT_DIGITS, GPT4

TIMEOUT = 240  # seconds; a run that hangs fails the test instead of the suite


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


# ---- real-size blocks on real processes ----------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory, text):
    """A little over two default blocks of varied text, so counting takes the process pool."""
    n = 2 * pretokenize.BLOCK_CHARS + 200_000
    path = tmp_path_factory.mktemp("big") / "big.txt"
    path.write_text((text * (n // len(text) + 1))[:n], encoding="utf-8")
    assert len(list(pretokenize.iter_blocks(path))) > 2
    return path


def summary(tok) -> str:
    return f"{tok.vocab_size} {hashlib.sha256(repr(tok.merges).encode()).hexdigest()}"


# What a newcomer writes: no `if __name__ == "__main__":` guard.
SCRIPT = """\
import hashlib
{setup}from llmlab.tokenizer import Tokenizer
tok = Tokenizer.train(["big.txt"], vocab_size=300)
print(tok.vocab_size, hashlib.sha256(repr(tok.merges).encode()).hexdigest())
"""
FORCE_SPAWN = """\
import multiprocessing
from llmlab.tokenizer import pretokenize
pretokenize.pool_context = lambda: multiprocessing.get_context("spawn")
"""


def run_script(directory, how: str, setup: str = "") -> subprocess.CompletedProcess:
    script = directory / "train.py"
    script.write_text(SCRIPT.format(setup=setup), encoding="utf-8")
    if how == "file":
        return subprocess.run([sys.executable, script.name], cwd=directory, capture_output=True, text=True,
                              timeout=TIMEOUT)
    with open(script, encoding="utf-8") as stdin:
        return subprocess.run([sys.executable, "-"], cwd=directory, stdin=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT)


def test_pool_counts_the_same_as_one_process(big_file):
    one = pretokenize.count_chunks([], [big_file], GPT4, num_workers=1)
    assert pretokenize.count_chunks([], [big_file], GPT4, num_workers=2) == one
    text = big_file.read_text(encoding="utf-8")
    assert pretokenize.count_chunks([text], [], GPT4, num_workers=2) == one


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_script_without_main_guard_trains(big_file, how):
    expected = summary(Tokenizer.train([big_file], vocab_size=300, num_workers=1))
    result = run_script(big_file.parent, how)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert "counting in this process" not in result.stderr  # on Linux the forked pool just works


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_spawned_workers_that_cannot_start_fall_back_to_one_process(big_file, how):
    # Spawned workers re-import __main__: without a guard they train again (and fail to start a
    # pool of their own); from stdin there is no file to import. Either way the pool breaks.
    expected = summary(Tokenizer.train([big_file], vocab_size=300, num_workers=1))
    result = run_script(big_file.parent, how, setup=FORCE_SPAWN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    assert result.stderr.count("pre-tokenising: worker processes failed to start or died") == 1


def sleepy_count_block(args):
    time.sleep(60)


def test_stuck_workers_raise_instead_of_hanging(monkeypatch, big_file):
    monkeypatch.setattr(pretokenize, "count_block", sleepy_count_block)
    monkeypatch.setattr(pretokenize, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(pretokenize, "STALL_SECONDS", 1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="look stuck"):
        pretokenize.count_chunks([], [big_file], GPT4, num_workers=2)
    assert time.monotonic() - start < 30  # the sleeping workers were stopped, not waited for
