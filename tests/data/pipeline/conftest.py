"""Shared inputs for the pipeline tests: a small noisy web-like corpus made by the benchmark's generator."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def load_generator():
    spec = importlib.util.spec_from_file_location("make_noisy_corpus", ROOT / "benchmarks" / "make_noisy_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def noisy_rows() -> list[dict]:
    """About 600 KB of generated pages, each with its planted `kind`."""
    return list(load_generator().generate(0.6, seed=3))


@pytest.fixture(scope="session")
def noisy_file(tmp_path_factory, noisy_rows) -> Path:
    path = tmp_path_factory.mktemp("noisy") / "web.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in noisy_rows), encoding="utf-8")
    return path
