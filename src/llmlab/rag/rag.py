"""Retrieval-augmented generation: retrieve, number the sources under a token budget, generate citing [n].

Lewis et al. 2020 (RAG). The pipeline, one small function each:
1. `index.search(question, k, mode)` finds the top-k chunks;
2. `build_messages` numbers them [1], [2], ... into one user message, in rank order, while their tokens
   (in the generator's tokenizer) fit `context_tokens`; the first source is cut to fit rather than dropped;
3. `prompt_ids` renders the messages with the model's chat template (a model without one gets a plain
   "Sources / Question / Answer:" prompt), and `answer_stream` streams the reply through the model's own
   `stream` (`llmlab.infer`: greedy by default);
4. `format_sources` lists the numbered sources after the answer.
`closed_book_messages` asks the same question with no sources, for comparisons. The generator is anything
with `.stream`, `.chat_ids`, `.encode` and `.tokenizer` (`llmlab.infer.pretrained.Pretrained`, what
`llmlab.load` returns); this file never loads a model.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from llmlab.common.errors import UserError

SYSTEM = ("Answer the question using only the numbered sources. Cite the sources you use as [1], [2]. "
          "If the sources do not contain the answer, say that you do not know. Be brief.")
CLOSED_BOOK = "Answer the question briefly."


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text))


def _cut(tokenizer: Any, text: str, tokens: int) -> str:
    return tokenizer.decode(tokenizer.encode(text)[:max(tokens, 0)])


def build_messages(question: str, hits: list[dict], tokenizer: Any, context_tokens: int = 1024,
                   system: str = SYSTEM) -> tuple[list[dict], list[dict]]:
    """(chat messages, the hits used, numbered from 1): sources in rank order while they fit the budget."""
    if context_tokens < 1:
        raise UserError(f"context_tokens={context_tokens}: must be at least 1")
    used, blocks, left = [], [], context_tokens
    for hit in hits:
        block = f"[{len(used) + 1}] ({hit['source']})\n{hit['text']}"
        need = _count(tokenizer, block)
        if need > left:
            if used:
                break
            block = _cut(tokenizer, block, left)  # the best source, cut, beats no source at all
        used.append({**hit, "n": len(used) + 1})
        blocks.append(block)
        left -= min(need, left)
    user = "Sources:\n\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], used


def closed_book_messages(question: str, system: str = CLOSED_BOOK) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Question: {question}"}]


def prompt_ids(generator: Any, messages: list[dict]) -> list[int]:
    """The model's chat template when it has one; else "system\\n\\nuser\\nAnswer:" as plain text."""
    if getattr(generator.tokenizer, "chat_template", None):
        return generator.chat_ids(messages)
    text = "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
    return generator.encode(text)


@dataclass
class Answer:
    question: str
    text: str
    sources: list[dict] = field(default_factory=list)  # hits used, each with its number "n"
    hits: list[dict] = field(default_factory=list)  # everything retrieved, used or not
    retrieve_s: float = 0.0
    generate_s: float = 0.0


def answer_stream(generator: Any, index: Any, question: str, k: int = 5, mode: str = "dense",
                  context_tokens: int = 1024, max_new_tokens: int = 256, **sampling) -> tuple[Iterator[str], Answer]:
    """(text pieces as they are generated, the Answer filled in as they come). Greedy unless sampling says."""
    t0 = time.perf_counter()
    hits = index.search(question, k=k, mode=mode) if index is not None else []
    retrieve_s = time.perf_counter() - t0
    if index is not None:
        messages, used = build_messages(question, hits, generator.tokenizer, context_tokens)
    else:
        messages, used = closed_book_messages(question), []
    result = Answer(question, "", used, hits, retrieve_s)
    sampling.setdefault("temperature", 0.0)
    ids = prompt_ids(generator, messages)

    def pieces() -> Iterator[str]:
        start = time.perf_counter()
        for piece in generator.stream(ids, max_new_tokens, text=True, truncate=True, **sampling):
            result.text += piece
            yield piece
        result.generate_s = time.perf_counter() - start
        result.text = result.text.strip()

    return pieces(), result


def answer(generator: Any, index: Any, question: str, **kwargs) -> Answer:
    """The whole answer at once (index None: closed-book, no retrieval)."""
    stream, result = answer_stream(generator, index, question, **kwargs)
    for _ in stream:
        pass
    return result


def format_sources(sources: list[dict]) -> str:
    """One line per numbered source: `[1] guide/intro.md (characters 120-980)`."""
    return "\n".join(f"[{s['n']}] {s['source']} (characters {s['start']}-{s['end']})" for s in sources)
