"""Model as judge: a chat model grades answers on a rubric, or picks the better of two.

After MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and
Chatbot Arena"):

- Single-answer grading: the judge reads the question, the answer, the rubric
  (and a reference answer if there is one), explains, then rates 1-10 as
  "Rating: [[7]]". `parse_rating` reads that, with fallbacks for "Rating: 7"
  and "7/10"; a reply with no rating in 1..10 scores None and is counted as
  unparseable, never guessed. The judge's raw text is kept beside the score.
- Pairwise comparison: the judge answers "[[A]]", "[[B]]" or "[[C]]" (tie).
  Judges favour whichever answer they read first, so every pair is judged in
  both orders and a win counts only when it survives the swap; anything else
  is a tie. The summary reports how often the verdict changed with the order
  (position bias) and how often the first-shown answer was picked.
- Agreement: how well the judge's scores rank answers the way a reference-based
  metric (exact match, ROUGE) does, as Spearman and Kendall correlations with
  bootstrap intervals (`llmlab.eval.stats`).

The judge is any `llmlab.infer.api.ChatModel`: a local model (`LocalChat`) or
an OpenAI-compatible endpoint (`EndpointChat`). This file writes prompts and
reads verdicts; it does not load models or talk HTTP.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llmlab.eval.stats import bootstrap_ci, correlation_ci, mean_stderr
from llmlab.infer.api import ChatModel, Messages, chat_all

SYSTEM = "You are a careful, impartial judge of answers written by AI assistants."
DEFAULT_RUBRIC = "helpfulness, relevance, accuracy, depth and level of detail"

GRADE_TEMPLATE = """\
Evaluate the answer an AI assistant gave to the question below. Judge it on: {rubric}.{reference_note} \
Begin with a short explanation and be as objective as possible. Then rate the answer from 1 to 10 \
in exactly this format: "Rating: [[5]]".

[Question]
{question}
{reference_block}
[The Start of the Assistant's Answer]
{answer}
[The End of the Assistant's Answer]"""

PAIR_TEMPLATE = """\
Compare the answers two AI assistants gave to the question below and decide which is better. \
Judge them on: {rubric}.{reference_note} Do not let the order of the answers, their length or the \
assistants' names sway you. Begin with a short explanation and be as objective as possible. Then give \
your verdict in exactly this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, \
"[[C]]" for a tie.

[Question]
{question}
{reference_block}
[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]"""

REFERENCE_NOTE = " A correct reference answer is given; check the answer against it."
REFERENCE_BLOCK = "\n[The Start of the Reference Answer]\n{reference}\n[The End of the Reference Answer]\n"

# in order of trust: the requested [[7]], then "Rating: 7", then "7/10"; the last match in the text wins
RATING_PATTERNS = (re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
                   re.compile(r"rating\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
                   re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10\b"))
VERDICT_PATTERN = re.compile(r"\[\[\s*([ABC])\s*\]\]", re.IGNORECASE)


@dataclass
class Grade:
    """One judged answer: a score in 1..10 (None when the reply had none) and the judge's own words."""

    score: float | None
    raw: str


@dataclass
class Comparison:
    """One pair judged in both orders.

    `verdicts` are the judge's letters as it saw them ("A" = first shown): with A
    first, then with B first. `winner` is in the true labels: "A", "B", "tie",
    or None when either reply had no verdict.
    """

    winner: str | None
    verdicts: tuple[str | None, str | None]
    raw: tuple[str, str]


def _context(rubric: str | None, reference: str | None) -> dict[str, str]:
    return {"rubric": rubric or DEFAULT_RUBRIC, "reference_note": REFERENCE_NOTE if reference is not None else "",
            "reference_block": REFERENCE_BLOCK.format(reference=reference) if reference is not None else ""}


def grade_messages(question: str, answer: str, rubric: str | None = None, reference: str | None = None) -> Messages:
    """The conversation asking the judge to rate one answer 1-10."""
    user = GRADE_TEMPLATE.format(question=question, answer=answer, **_context(rubric, reference))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def pair_messages(question: str, answer_a: str, answer_b: str, rubric: str | None = None,
                  reference: str | None = None) -> Messages:
    """The conversation asking the judge which of two answers is better (A shown first)."""
    user = PAIR_TEMPLATE.format(question=question, answer_a=answer_a, answer_b=answer_b,
                                **_context(rubric, reference))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_rating(text: str) -> float | None:
    """The judge's 1-10 rating, or None when there is none in range.

    "Clear and correct. Rating: [[7]]" -> 7.0; "Rating: 8" -> 8.0; "about 6.5/10" -> 6.5;
    "Rating: [[rating]]" -> None; "[[11]]" -> None (out of range: not guessed).
    """
    for pattern in RATING_PATTERNS:
        found = pattern.findall(text)
        if found:
            score = float(found[-1])
            return score if 1 <= score <= 10 else None
    return None


def parse_verdict(text: str) -> str | None:
    """The judge's last "[[A]]", "[[B]]" or "[[C]]" (tie) as "A", "B" or "C"; None when there is none.

    "B is more accurate. [[B]]" -> "B"; "I cannot decide." -> None.
    """
    found = VERDICT_PATTERN.findall(text)
    return found[-1].upper() if found else None


def combine_orders(first: str | None, second: str | None) -> str | None:
    """The winner over both orders: `first` judged with A shown first, `second` with B shown first.

    In `second` the judge's "A" is our B. A win must survive the swap, else it is a tie:
    ("A", "B") -> "A" (A won both times); ("A", "A") -> "tie" (the first-shown won both times);
    ("B", "C") -> "tie"; ("C", "C") -> "tie"; (None, "B") -> None.
    """
    if first is None or second is None:
        return None
    unswapped = {"A": "B", "B": "A", "C": "C"}[second]
    return first if first == unswapped and first != "C" else "tie"


def grade_answers(judge: ChatModel, questions: Sequence[str], answers: Sequence[str], rubric: str | None = None,
                  references: Sequence[str] | None = None, max_new_tokens: int = 512, workers: int = 1,
                  progress: bool = False) -> list[Grade]:
    """Rate each answer 1-10 with the judge at temperature 0."""
    refs = _check_lengths(questions, answers, references)
    conversations = [grade_messages(q, a, rubric, r) for q, a, r in zip(questions, answers, refs, strict=True)]
    replies = chat_all(judge, conversations, max_new_tokens, temperature=0.0, workers=workers, progress=progress)
    return [Grade(parse_rating(text), text) for text in replies]


def compare_answers(judge: ChatModel, questions: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                    rubric: str | None = None, references: Sequence[str] | None = None, max_new_tokens: int = 512,
                    workers: int = 1, progress: bool = False) -> list[Comparison]:
    """Judge each pair in both orders (A first, then B first) and combine the two verdicts."""
    refs = _check_lengths(questions, answers_a, references, answers_b)
    conversations = []
    for q, a, b, r in zip(questions, answers_a, answers_b, refs, strict=True):
        conversations += [pair_messages(q, a, b, rubric, r), pair_messages(q, b, a, rubric, r)]
    replies = chat_all(judge, conversations, max_new_tokens, temperature=0.0, workers=workers, progress=progress)
    out = []
    for ab, ba in zip(replies[::2], replies[1::2], strict=True):
        verdicts = (parse_verdict(ab), parse_verdict(ba))
        out.append(Comparison(combine_orders(*verdicts), verdicts, (ab, ba)))
    return out


def _check_lengths(questions: Sequence[str], answers: Sequence[str], references: Sequence[str] | None,
                   other: Sequence[str] | None = None) -> list[str | None]:
    """The references (None per item when there are none), after checking every list pairs with the questions."""
    refs = [None] * len(questions) if references is None else list(references)
    lengths = {len(questions), len(answers), len(refs)} | ({len(other)} if other is not None else set())
    if len(lengths) != 1:
        raise ValueError(f"questions, answers and references must have one entry per item, got lengths "
                         f"{len(questions)}, {len(answers)}{', ' + str(len(other)) if other is not None else ''}, "
                         f"{len(refs)}")
    return refs


def summarize_grades(grades: Sequence[Grade], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean score with its standard error and 95% bootstrap interval, over the parsed grades.

    Scores [7, 9, None] -> mean 8.0, n 2, unparseable 1.
    """
    scores = [g.score for g in grades if g.score is not None]
    mean, stderr = mean_stderr(scores)
    low, high = bootstrap_ci(np.mean, scores, n_boot=n_boot, seed=seed)
    return {"mean": mean, "stderr": stderr, "low": low, "high": high, "n": len(scores),
            "unparseable": len(grades) - len(scores)}


def summarize_comparisons(comparisons: Sequence[Comparison], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Win, loss and tie rates of A against B over the comparisons that have a verdict, and the judge's biases.

    - score_a: A's wins plus half its ties, per comparison, with a 95% bootstrap interval (low, high).
    - position_bias: the share of comparisons whose verdict changed when the order was swapped.
    - first_position_rate: of the single-order verdicts that named a winner, the share naming the
      first-shown answer (0.5 for an unbiased judge).
    Winners ["A", "tie", None] -> a_wins 1, ties 1, unparseable 1, win_rate_a 0.5, score_a 0.75.
    """
    valid = [c for c in comparisons if c.winner is not None]
    n = len(valid)
    points = [{"A": 1.0, "tie": 0.5, "B": 0.0}[c.winner] for c in valid]
    low, high = bootstrap_ci(np.mean, points, n_boot=n_boot, seed=seed)
    named = [v for c in comparisons for v in c.verdicts if v in ("A", "B")]
    flips = sum(c.verdicts[0] != {"A": "B", "B": "A", "C": "C"}[c.verdicts[1]] for c in valid)
    wins = {w: sum(c.winner == w for c in valid) for w in ("A", "B", "tie")}
    return {"n": n, "a_wins": wins["A"], "b_wins": wins["B"], "ties": wins["tie"],
            "unparseable": len(comparisons) - n,
            "win_rate_a": _ratio(wins["A"], n), "win_rate_b": _ratio(wins["B"], n), "tie_rate": _ratio(wins["tie"], n),
            "score_a": _ratio(sum(points), n), "score_a_low": low, "score_a_high": high,
            "position_bias": _ratio(flips, n), "first_position_rate": _ratio(named.count("A"), len(named))}


def _ratio(a: float, b: int) -> float:
    return a / b if b else math.nan


def agreement(judge_scores: Sequence[float | None], metric_values: Sequence[float], n_boot: int = 1000,
              seed: int = 0) -> dict:
    """How well the judge ranks items like a reference-based metric: Spearman and Kendall tau-b, 95% bootstrap CIs.

    Items the judge could not score (None) or the metric could not (nan) are dropped and counted.
    Returns {"n", "dropped", "spearman": {"value", "low", "high", "n"}, "kendall": {...}}.
    """
    if len(judge_scores) != len(metric_values):
        raise ValueError(f"judge_scores and metric_values must have one entry per item, got "
                         f"{len(judge_scores)} and {len(metric_values)}")
    pairs = [(s, m) for s, m in zip(judge_scores, metric_values, strict=True)
             if s is not None and m is not None and not math.isnan(s) and not math.isnan(m)]
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"n": len(pairs), "dropped": len(judge_scores) - len(pairs),
            **{m: correlation_ci(x, y, m, n_boot=n_boot, seed=seed) for m in ("spearman", "kendall")}}
