"""Shared fixtures: a tiny corpus, its tokenizer and prepared shards, made once per test session."""

import sysconfig
from pathlib import Path

import pytest

from llmlab.common import log

log.set_quiet(True)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CORPUS_FILES = ["textwrap.py", "shlex.py", "bisect.py", "colorsys.py", "fnmatch.py", "keyword.py", "glob.py",
                "heapq.py", "copy.py", "string.py"]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Ten small standard-library modules as a folder of text files."""
    d = tmp_path_factory.mktemp("corpus")
    for name in CORPUS_FILES:
        (d / name.replace(".py", ".txt")).write_text((STDLIB / name).read_text(encoding="utf-8"), encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, corpus_dir) -> Path:
    """The corpus prepared into shards with a 320-token BPE tokenizer."""
    from llmlab.recipes.prepare import PrepareArgs, run

    out = tmp_path_factory.mktemp("data")
    run(PrepareArgs(data=[str(corpus_dir)], out=str(out), vocab_size=320, val_fraction=0.2))
    return out
