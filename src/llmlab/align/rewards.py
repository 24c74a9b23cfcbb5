"""Verifiable rewards (R1-style, DeepSeek-AI 2025): scores a program computes from a completion, no reward model.

A reward function takes one `Sample` (the prompt, the completion as text and ids, the reference answer) and
returns a float. The ones here:

    correct   1 when the final answer equals the reference (numbers compared exactly by
              `llmlab.eval.answers`, other answers by SQuAD exact match), else 0
    format    1 when the completion is `<think>…</think>` and then a non-empty answer, else 0
    answer    1 when there is a non-empty answer (after `</think>` when thinking is used), else 0
    terse     1 when the answer is at most TERSE_WORDS words, decaying to 0 at four times that; 0 when
              the completion was cut off at the token limit

The final answer is the text after the last `</think>` when there is one, nothing when a `<think>` was
opened and never closed (a thought cut off at the token limit has not answered yet, even if its last line
holds the right number), else the whole completion.
`score_samples` combines several functions with weights (TRL's `reward_weights`, summed before the
group normalisation) and stops on a function that raises, naming the sample, unless asked to skip: then
that function gives the sample 0 and the error is counted. A non-finite reward always stops.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from llmlab.common.errors import UserError
from llmlab.data.reasoning import THINK_CLOSE, THINK_OPEN
from llmlab.eval.answers import exact_match, math_equal, parse_number, squad_normalize

TERSE_WORDS = 4  # the built-in answers are one number or word; a sentence around it is still fine


@dataclass
class Sample:
    """One completion to score. `answer` is the reference (None when there is none, e.g. under a reward model)."""

    prompt: str
    completion: str
    answer: str | None = None
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    truncated: bool = False  # it hit the token limit without ending its turn


RewardFn = Callable[[Sample], float]


def final_answer(completion: str) -> str:
    """The answer part: after the last `</think>` if any, stripped. "<think>\\n3+4=7\\n</think>\\n7" -> "7";
    "<think>\\n3+4=7" (never closed) -> ""."""
    if THINK_OPEN in completion and THINK_CLOSE not in completion:
        return ""
    return completion.rsplit(THINK_CLOSE, 1)[-1].strip()


def answer_is_correct(completion: str, reference: str) -> bool:
    """Whether the completion's final answer is the reference: as numbers when the reference is one
    ("12 pens" and "12.0" both equal "12"), else SQuAD exact match of the answer's first line (case-insensitive
    equality when the reference is only an article, "a", which SQuAD's normalisation would erase)."""
    answer = final_answer(completion)
    if parse_number(reference) is not None:
        return math_equal(answer, reference)
    first = (answer.splitlines() or [""])[0]
    if not squad_normalize(reference):  # "a", "the": SQuAD's normalisation would erase the whole reference
        return first.strip().strip("'\".").lower() == reference.strip().lower()
    return bool(exact_match(first, reference))


def correct(sample: Sample) -> float:
    if sample.answer is None:
        raise ValueError("the 'correct' reward needs a reference answer; the data gave none")
    return float(answer_is_correct(sample.completion, sample.answer))


def think_format(sample: Sample) -> float:
    """1.0 for exactly one `<think>…</think>` (the open tag first, when the completion writes it) and an answer."""
    text = sample.completion.strip()
    if text.count(THINK_CLOSE) != 1 or text.count(THINK_OPEN) > 1:
        return 0.0
    thinking, answer = text.split(THINK_CLOSE)
    if THINK_OPEN in thinking and not thinking.startswith(THINK_OPEN):
        return 0.0
    return float(bool(thinking.replace(THINK_OPEN, "").strip()) and bool(answer.strip()))


def answer_present(sample: Sample) -> float:
    return float(bool(final_answer(sample.completion)))


def terse(sample: Sample) -> float:
    """1.0 up to TERSE_WORDS words in the answer, falling linearly to 0 at 4 x TERSE_WORDS; 0 if cut off."""
    words = len(final_answer(sample.completion).split())
    if words == 0 or sample.truncated:
        return 0.0
    return max(0.0, min(1.0, (4 * TERSE_WORDS - words) / (3 * TERSE_WORDS)))


REWARDS: dict[str, RewardFn] = {"correct": correct, "format": think_format, "answer": answer_present,
                                "terse": terse}


@dataclass
class Scores:
    """Rewards for N samples: the weighted total (N,), each function's values, and how many calls raised."""

    total: torch.Tensor
    per_function: dict[str, list[float]]
    errors: int = 0


def resolve_rewards(names: list[str], weights: list[float] | None = None) -> tuple[dict[str, RewardFn], list[float]]:
    """Built-in reward functions by name, with their weights (1.0 each by default)."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown or not names:
        raise UserError(f"rewards {unknown or names}: unknown; choose from {', '.join(REWARDS)}")
    weights = [1.0] * len(names) if not weights else list(weights)
    if len(weights) != len(names):
        raise UserError(f"reward weights: {len(weights)} given for {len(names)} reward functions; give one each")
    return {n: REWARDS[n] for n in names}, weights


def score_samples(samples: list[Sample], functions: dict[str, RewardFn], weights: list[float] | None = None,
                  skip_errors: bool = False) -> Scores:
    """Run every function on every sample; total = sum of weight x value (TRL's "sum_then_normalize")."""
    weights = [1.0] * len(functions) if weights is None else weights
    per: dict[str, list[float]] = {name: [] for name in functions}
    errors = 0
    for s in samples:
        for name, fn in functions.items():
            try:
                value = float(fn(s))
            except Exception as e:  # a user's reward function may raise anything; name the sample that did it
                if not skip_errors:
                    raise UserError(f"reward {name!r} raised {type(e).__name__}: {e}; on prompt {s.prompt[-200:]!r} "
                                    f"-> completion {s.completion[:200]!r}; fix the function, or skip such samples "
                                    "(--skip-reward-errors)") from e
                errors += 1
                value = 0.0
            if not math.isfinite(value):
                raise UserError(f"reward {name!r} returned {value} (not finite) for completion {s.completion[:200]!r};"
                                " rewards must be finite numbers")
            per[name].append(value)
    columns = torch.tensor([per[n] for n in functions], dtype=torch.float32).reshape(len(functions), len(samples))
    total = (torch.tensor(weights, dtype=torch.float32)[:, None] * columns).sum(0)  # (N,)
    return Scores(total, per, errors)
