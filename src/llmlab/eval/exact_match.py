"""Exact match by generation: greedy answers to held-out conversations, compared with the reference.

Each conversation's last assistant turn is the reference; the turns before it
are rendered with the model's chat template as the prompt. Answers are
compared loosely on form only (`normalize_answer`): first line, no surrounding
spaces or quotes, no final period. This is how fine-tuning shows what it bought.
SQuAD's normalised exact match and token F1, and math answers compared as
numbers, are in `llmlab.eval.answers`.
"""

import torch

from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.generate import generate_batch


def normalize_answer(text: str) -> str:
    """Compare answers loosely on form: first line, no surrounding spaces, quotes or final period.

    "  'Paris.'\\nMore text" -> "Paris".
    """
    lines = text.strip().splitlines()
    return (lines[0] if lines else "").strip().strip("'\"").rstrip(".").strip()


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def generate_answers(model: torch.nn.Module, tokenizer, conversations: list[list[dict]], max_new_tokens: int,
                     batch_size: int = 16) -> list[str]:
    """Greedy answers to each conversation's last assistant turn (the turns before it are the prompt)."""
    stops = end_of_turn_ids(tokenizer)
    prompts = []
    for messages in conversations:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(tokenizer.encode(tokenizer.render(messages[:last], add_generation_prompt=True),
                                        allowed_special="all"))
    answers = []
    for i in range(0, len(prompts), batch_size):
        outs = generate_batch(model, prompts[i:i + batch_size], max_new_tokens, temperature=0.0, stop_ids=stops)
        answers += [tokenizer.decode([t for t in out if t not in stops]) for out in outs]
    return answers


def exact_match_score(model: torch.nn.Module, tokenizer, conversations: list[list[dict]],
                      max_new_tokens: int) -> tuple[float, list[dict]]:
    """(share of conversations answered exactly, the first 8 answers beside their references)."""
    if not conversations:
        return float("nan"), []
    answers = generate_answers(model, tokenizer, conversations, max_new_tokens)
    refs = [[m for m in c if m["role"] == "assistant"][-1]["content"] for c in conversations]
    hits = [exact_match(a, r) for a, r in zip(answers, refs, strict=True)]
    return sum(hits) / len(hits), [{"answer": a, "reference": r} for a, r in zip(answers[:8], refs[:8], strict=True)]
