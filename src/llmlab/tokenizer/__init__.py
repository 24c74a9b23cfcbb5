"""Byte-level BPE tokenizers: train, encode, decode, import/export, chat templates, analysis.

    from llmlab.tokenizer import Tokenizer
    tok = Tokenizer.train("corpus.txt", vocab_size=4096)
    ids = tok.encode("hello world")
"""

from llmlab.tokenizer.patterns import GPT2, GPT4, PATTERNS
from llmlab.tokenizer.tokenizer import Tokenizer

__all__ = ["GPT2", "GPT4", "PATTERNS", "Tokenizer"]
