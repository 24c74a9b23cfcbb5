"""Model as judge: prompts, robust parsing, both-orders pairwise logic, summaries and agreement.

Scripted judges (ChatModels returning canned text) pin the logic down exactly;
one tiny real llmlab model runs the local path end to end (its text is noise,
so only the structure and the counting of unparseable verdicts are checked).
"""

import math

import pytest
import scipy.stats

from llmlab.eval.judge import (
    Comparison,
    Grade,
    agreement,
    combine_orders,
    compare_answers,
    grade_answers,
    grade_messages,
    pair_messages,
    parse_rating,
    parse_verdict,
    summarize_comparisons,
    summarize_grades,
)


class ScriptedJudge:
    """A ChatModel whose reply is `reply(user_text)`; it records every conversation it was sent."""

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def chat(self, messages, max_new_tokens=256, temperature=0.0):
        self.seen.append(messages)
        return self.reply(messages[-1]["content"])


def shown_answers(prompt: str) -> tuple[str, str]:
    """(answer shown as A, answer shown as B) in a pairwise prompt."""
    a = prompt.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End")[0]
    b = prompt.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End")[0]
    return a, b


@pytest.mark.parametrize("text, score", [
    ("Clear and correct. Rating: [[7]]", 7.0),
    ("Rating: [[ 8.5 ]]", 8.5),
    ("First I thought [[3]], but on reflection [[6]]", 6.0),  # the last rating wins
    ("Rating: 8", 8.0),
    ("rating=9 overall", 9.0),
    ("I would give it 6.5/10.", 6.5),
    ("Rating: [[rating]]", None),
    ("Rating: [[11]]", None),
    ("[[0]]", None),
    ("", None),
])
def test_parse_rating(text, score):
    assert parse_rating(text) == score


@pytest.mark.parametrize("text, verdict", [
    ("B is more accurate. [[B]]", "B"), ("[[a]]", "A"), ("Both fine: [[C]]", "C"),
    ("Not [[A]] but [[B]]", "B"), ("I cannot decide.", None), ("[A]", None), ("[[D]]", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize("first, second, winner", [
    ("A", "B", "A"), ("B", "A", "B"),  # consistent wins
    ("A", "A", "tie"), ("B", "B", "tie"),  # the judge picked a position, not an answer
    ("A", "C", "tie"), ("C", "A", "tie"), ("C", "C", "tie"),
    (None, "B", None), ("A", None, None),
])
def test_combine_orders(first, second, winner):
    assert combine_orders(first, second) == winner


def test_prompts_hold_question_answer_rubric_and_reference():
    messages = grade_messages("What is 2+2? {x}", "4", rubric="correctness only", reference="four")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    for part in ("What is 2+2? {x}", "correctness only", "[The Start of the Reference Answer]\nfour", "[[5]]"):
        assert part in user
    assert "Reference" not in grade_messages("q", "a")[1]["content"]
    assert shown_answers(pair_messages("q", "left", "right")[1]["content"]) == ("left", "right")


def test_grading_keeps_raw_text_and_counts_unparseable():
    replies = {"good": "Fine. Rating: [[9]]", "ok": "Rating: 6", "bad": "no idea"}
    judge = ScriptedJudge(lambda prompt: next(v for k, v in replies.items() if f"Answer]\n{k}\n" in prompt))
    grades = grade_answers(judge, ["q1", "q2", "q3"], ["good", "ok", "bad"], references=["r1", "r2", "r3"])
    assert grades == [Grade(9.0, "Fine. Rating: [[9]]"), Grade(6.0, "Rating: 6"), Grade(None, "no idea")]
    assert "r2" in judge.seen[1][1]["content"]
    summary = summarize_grades(grades, n_boot=200)
    assert summary["mean"] == 7.5 and summary["n"] == 2 and summary["unparseable"] == 1
    assert math.isclose(summary["stderr"], scipy.stats.sem([9, 6]))
    assert 6.0 <= summary["low"] <= summary["high"] <= 9.0


def test_both_orders_cancel_a_first_position_judge():
    judge = ScriptedJudge(lambda prompt: "The first one. [[A]]")
    comparisons = compare_answers(judge, ["q"] * 4, ["a1", "a2", "a3", "a4"], ["b1", "b2", "b3", "b4"])
    assert len(judge.seen) == 8
    assert [shown_answers(m[1]["content"]) for m in judge.seen[:2]] == [("a1", "b1"), ("b1", "a1")]
    assert all(c.winner == "tie" and c.verdicts == ("A", "A") for c in comparisons)
    summary = summarize_comparisons(comparisons, n_boot=100)
    assert summary["ties"] == 4 and summary["position_bias"] == 1.0 and summary["first_position_rate"] == 1.0
    assert summary["score_a"] == 0.5


def test_a_consistent_judge_gives_wins_and_no_position_bias():
    def longer_wins(prompt):  # a judge that prefers the longer answer, whatever the order; equal length ties
        a, b = shown_answers(prompt)
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"

    comparisons = compare_answers(ScriptedJudge(longer_wins), ["q"] * 4, ["long answer", "x", "same", "longer one"],
                                  ["short", "much longer", "same", "tiny"])
    assert [c.winner for c in comparisons] == ["A", "B", "tie", "A"]
    summary = summarize_comparisons(comparisons, n_boot=100)
    assert (summary["a_wins"], summary["b_wins"], summary["ties"], summary["unparseable"]) == (2, 1, 1, 0)
    assert summary["win_rate_a"] == 0.5 and summary["win_rate_b"] == 0.25 and summary["tie_rate"] == 0.25
    assert summary["score_a"] == 0.625 and summary["position_bias"] == 0.0 and summary["first_position_rate"] == 0.5


def test_unparseable_pairwise_verdicts_are_counted_not_fatal():
    replies = iter(["[[A]]", "[[B]]", "hmm", "[[A]]", "[[B]]", "[[B]]"])
    comparisons = compare_answers(ScriptedJudge(lambda prompt: next(replies)), ["q"] * 3, ["a"] * 3, ["b"] * 3)
    assert [c.winner for c in comparisons] == ["A", None, "tie"]
    assert comparisons[1].raw == ("hmm", "[[A]]") and comparisons[1].verdicts == (None, "A")
    summary = summarize_comparisons(comparisons, n_boot=100)
    assert summary["n"] == 2 and summary["unparseable"] == 1 and summary["position_bias"] == 0.5
    empty = summarize_comparisons([Comparison(None, (None, None), ("", ""))], n_boot=10)
    assert empty["n"] == 0 and math.isnan(empty["win_rate_a"]) and math.isnan(empty["score_a_low"])


def test_agreement_equals_scipy_on_the_scored_items():
    judge = [9, 3, None, 7, 7, 2, 8, 5, 1, 6]
    metric = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, float("nan"), 0.0, 1.0]
    result = agreement(judge, metric, n_boot=200)
    kept = [(j, m) for j, m in zip(judge, metric, strict=True) if j is not None and not math.isnan(m)]
    x, y = zip(*kept, strict=True)
    assert result["n"] == 8 and result["dropped"] == 2
    assert math.isclose(result["spearman"]["value"], scipy.stats.spearmanr(x, y).statistic, abs_tol=1e-12)
    assert math.isclose(result["kendall"]["value"], scipy.stats.kendalltau(x, y).statistic, abs_tol=1e-12)
    assert result["kendall"]["low"] <= result["kendall"]["value"] <= result["kendall"]["high"]


def test_bad_input():
    judge = ScriptedJudge(lambda prompt: "[[5]]")
    with pytest.raises(ValueError, match="one entry per item"):
        grade_answers(judge, ["q1", "q2"], ["a1"])
    with pytest.raises(ValueError, match="one entry per item"):
        compare_answers(judge, ["q"], ["a"], ["b1", "b2"])
    with pytest.raises(ValueError, match="one entry per item"):
        agreement([1, 2], [1.0])


def test_a_tiny_local_model_as_judge():
    import torch

    from llmlab.infer.api import LocalChat
    from llmlab.infer.pretrained import Pretrained
    from llmlab.models import Transformer, get_preset
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("some text " * 200, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=tok.vocab_size, seq_len=2048))
    judge = LocalChat(Pretrained(model.eval(), tok, "tiny"))
    grades = grade_answers(judge, ["What is 2+2?"], ["4"], max_new_tokens=4)
    assert len(grades) == 1 and isinstance(grades[0].raw, str) and grades[0].score == parse_rating(grades[0].raw)
    comparisons = compare_answers(judge, ["What is 2+2?"], ["4"], ["5"], max_new_tokens=4)
    summary = summarize_comparisons(comparisons, n_boot=10)
    # four tokens of an untrained model's noise hold no "[[A]]": counted as unparseable, not raised
    assert comparisons[0].verdicts == (None, None) and summary["unparseable"] == 1 and summary["n"] == 0
    assert summarize_grades(grades, n_boot=10)["unparseable"] == 1
