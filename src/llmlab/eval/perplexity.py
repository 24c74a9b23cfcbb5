"""Perplexity of documents in the units lm-evaluation-harness reports: per token, word and byte, and bits per byte.

A document's log-likelihood is `loglik.loglikelihood_rolling` (every token scored once, in windows the
model fits). Then, as lm-eval's `loglikelihood_rolling` tasks (wikitext) aggregate it:

    word_perplexity = exp(-sum(loglik) / sum(words))      words = len(re.split(r"\\s+", doc))
    byte_perplexity = exp(-sum(loglik) / sum(bytes))      bytes = len(doc.encode("utf-8"))
    bits_per_byte   = -sum(loglik) / sum(bytes) / ln 2

Sums run over all documents (lm-eval's `weighted_perplexity`), so a long document weighs more than a
short one. Token perplexity divides by the tokens scored instead; it depends on the tokenizer, so it
compares only models that share one. The word count is lm-eval's, leading or trailing whitespace
included: " a b " counts 4 (two empty strings at the ends), an empty document 1.

What a document is: a string is one, a list gives one per item. A text file read whole is one document
(wikitext's documents are whole articles); split it yourself (paragraphs, lines) and pass the list to
score pieces separately, each then starting from the prefix token with no context.

Not here: held-out loss over token shards during training (`loss.py`, `bpb.py`).
"""

import math
import re

from llmlab.common.errors import UserError
from llmlab.eval.loglik import loglikelihood_rolling, tokenizer_of


def count_words(doc: str) -> int:
    """lm-eval's word count: pieces between runs of whitespace. "a  b\\nc" -> 3, " a" -> 2, "" -> 1."""
    return len(re.split(r"\s+", doc))


def units(loglik: float, tokens: int, words: int, n_bytes: int) -> dict:
    """Perplexities and bits per byte of a total log-likelihood (nats) over its tokens, words and bytes.

    loglik=-8 ln 2 over 4 bytes -> bits_per_byte 2.0, byte_perplexity 4.0.
    """
    def ppl(n: int) -> float:
        return math.exp(-loglik / n) if n else float("nan")

    return {"token_perplexity": ppl(tokens), "word_perplexity": ppl(words), "byte_perplexity": ppl(n_bytes),
            "bits_per_byte": -loglik / n_bytes / math.log(2) if n_bytes else float("nan")}


def perplexity(lm, text_or_texts: str | list[str], max_length: int | None = None, stride: int | None = None,
               batch_size: int = 16, progress: bool = False) -> dict:
    """Token, word and byte perplexity and bits per byte over documents, weighted as lm-eval weighs them.

    Returns those four, the totals (`loglikelihood` in nats, `tokens`, `words`, `bytes`, `documents`)
    and `per_document`: the same figures for each document, in order. `max_length` and `stride` as in
    `loglik.rolling_windows` (default: the model's window, lm-eval's disjoint windows).
    """
    docs = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise UserError(f"texts[{i}]: expected a string, got {type(doc).__name__}")
    if not any(docs):
        raise UserError("perplexity: no text to score; pass a non-empty string or list of strings")
    tokenizer = tokenizer_of(lm)
    logliks = loglikelihood_rolling(lm, docs, max_length, stride, batch_size, progress)
    per_doc = []
    for doc, ll in zip(docs, logliks, strict=True):
        counts = {"tokens": len(tokenizer.encode(doc, allowed_special="all")), "words": count_words(doc),
                  "bytes": len(doc.encode("utf-8"))}
        per_doc.append({"loglikelihood": ll, **counts, **units(ll, counts["tokens"], counts["words"], counts["bytes"])})
    total = {key: sum(d[key] for d in per_doc) for key in ("loglikelihood", "tokens", "words", "bytes")}
    return {**units(total["loglikelihood"], total["tokens"], total["words"], total["bytes"]), **total,
            "documents": len(docs), "per_document": per_doc}
