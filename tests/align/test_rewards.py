"""Verifiable rewards: answers after </think>, numbers compared as numbers, format and length rewards, weighted
sums, and what happens when a reward function raises or returns a non-finite value."""

import math

import pytest

from llmlab.align.rewards import (
    Sample,
    answer_is_correct,
    final_answer,
    resolve_rewards,
    score_samples,
    terse,
    think_format,
)
from llmlab.common.errors import UserError


def s(completion: str, answer: str | None = "12", prompt: str = "Mia has 7 pens and buys 5 more.") -> Sample:
    return Sample(prompt, completion, answer)


@pytest.mark.parametrize("completion, reference, ok", [
    ("12", "12", True),
    ("12.", "12", True),
    ("Mia has 12 pens.", "12", True),
    ("<think>\n7 + 5 = 12\n</think>\n12", "12", True),
    ("<think>\n7 + 5 = 13\n</think>\n12", "12", True),  # only the answer counts, not the steps
    ("<think>\n7 + 5 = 12\n</think>\n13", "12", False),  # a right step does not rescue a wrong answer
    ("<think>\n7 + 5 = 12", "12", False),  # cut off before </think>: no answer yet, whatever the last step says
    ("1,000", "1000", True),
    ("11", "12", False),
    ("", "12", False),
    ("elppa", "elppa", True),
    ("The answer is elppa", "elppa", False),  # text answers are exact (SQuAD-normalised)
    ("APPLE", "APPLE", True),
    ("a", "a", True),
    ("", "a", False),  # SQuAD would normalise both to "" and call them equal
    ("the", "a", False),
])
def test_answer_is_correct(completion, reference, ok):
    assert answer_is_correct(completion, reference) is ok


def test_final_answer_takes_the_text_after_the_last_close_tag():
    assert final_answer("<think>a</think>b</think> 42 ") == "42"
    assert final_answer("no thinking here") == "no thinking here"
    assert final_answer("<think>\n7 + 5 = 12") == ""


@pytest.mark.parametrize("completion, value", [
    ("<think>\n7 + 5 = 12\n</think>\n12", 1.0),
    ("7 + 5 = 12\n</think>\n12", 1.0),  # the open tag may be in the prompt already
    ("<think>\n7 + 5 = 12\n</think>\n", 0.0),  # no answer
    ("<think></think>12", 0.0),  # no thinking
    ("12", 0.0),
    ("<think>a</think>b</think>12", 0.0),
    ("x<think>a</think>12", 0.0),
])
def test_think_format(completion, value):
    assert think_format(s(completion)) == value


def test_terse_falls_off_with_length():
    assert terse(s("12")) == 1.0
    assert terse(s("")) == 0.0
    assert terse(s(" ".join(["w"] * 10))) == pytest.approx(0.5)
    assert terse(s(" ".join(["w"] * 40))) == 0.0
    assert terse(Sample("q", "12", "12", truncated=True)) == 0.0


def test_score_samples_weights_and_sums():
    fns, weights = resolve_rewards(["correct", "terse"], [2.0, 0.5])
    samples = [s("12"), s("11"), s(" ".join(["12"] * 10))]
    scores = score_samples(samples, fns, weights)
    assert scores.per_function == {"correct": [1.0, 0.0, 1.0], "terse": [1.0, 1.0, 0.5]}
    assert scores.total.tolist() == pytest.approx([2.5, 0.5, 2.25])
    assert scores.errors == 0


def test_a_raising_reward_names_the_sample_or_is_counted():
    def boom(sample: Sample) -> float:
        if "11" in sample.completion:
            raise KeyError("no such key")
        return 1.0

    samples = [s("12"), s("11 apples")]
    with pytest.raises(UserError, match=r"reward 'boom' raised KeyError.*11 apples.*skip"):
        score_samples(samples, {"boom": boom})
    scores = score_samples(samples, {"boom": boom}, skip_errors=True)
    assert scores.errors == 1 and scores.total.tolist() == [1.0, 0.0]


def test_non_finite_rewards_stop():
    with pytest.raises(UserError, match="not finite"):
        score_samples([s("12")], {"nan": lambda sample: math.nan}, skip_errors=True)


def test_bad_reward_settings():
    with pytest.raises(UserError, match="unknown"):
        resolve_rewards(["correct", "shiny"])
    with pytest.raises(UserError, match="one each"):
        resolve_rewards(["correct", "terse"], [1.0])
    fns, _ = resolve_rewards(["correct"])
    with pytest.raises(UserError, match="reference answer"):
        score_samples([s("12", answer=None)], fns)
