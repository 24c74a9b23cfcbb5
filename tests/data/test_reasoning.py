"""Reasoning traces: every worked step is true arithmetic, the steps end at the task's answer, the rows are
deterministic and disjoint from the held-out set, and `llmlab finetune` reads them."""

import re

import pytest

from llmlab.data import sft
from llmlab.data.reasoning import (
    COT_SYSTEM,
    THINK_CLOSE,
    THINK_OPEN,
    cot_completion,
    to_cot,
    train_test_cot,
    worked_steps,
    write_cot_jsonl,
)
from llmlab.data.tasks import make_tasks

EQUATION = re.compile(r"^([\d x+\-]+) = ([\d x+\-]+)$")


def value(expr: str) -> int:
    """An expression of the steps ("27 + 10 + 5", "9 x 10 + 9 x 2") evaluated by Python, independently."""
    return eval(expr.replace("x", "*"), {"__builtins__": {}})  # noqa: S307 - digits and operators only


def test_every_step_is_true_and_ends_at_the_answer():
    tasks = make_tasks(400, seed=3, families=("arithmetic", "conversion"))
    for task in tasks:
        question = task["messages"][1]["content"]
        steps, answer = worked_steps(question)
        assert answer == task["answer"]
        equations = [EQUATION.match(line) for line in steps if EQUATION.match(line)]
        assert equations, steps
        for m in equations:
            assert value(m.group(1)) == value(m.group(2)), m.group(0)
        assert equations[-1].group(2).split()[-1] == answer


def test_worked_example_and_format():
    steps, answer = worked_steps("Ava has 27 coins and buys 15 more. How many coins does Ava have now?")
    assert steps[1:] == ["27 + 15 = 27 + 10 + 5", "27 + 10 = 37", "37 + 5 = 42"] and answer == "42"
    text = cot_completion(steps, answer)
    assert text.startswith(THINK_OPEN + "\n") and text.endswith(f"\n{THINK_CLOSE}\n42")
    with pytest.raises(ValueError, match="no worked steps"):
        worked_steps("Reverse the letters of 'apple'.")


def test_rows_are_deterministic_disjoint_and_shaped_like_tasks():
    train, test = train_test_cot(50, 20, seed=1)
    again, _ = train_test_cot(50, 20, seed=1)
    other, _ = train_test_cot(50, 20, seed=2)
    assert train == again and train != other
    assert len(train) == 50 and len(test) == 20
    questions = {t["messages"][1]["content"] for t in test}
    assert not questions & {t["messages"][1]["content"] for t in train}
    row = train[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == COT_SYSTEM
    assert row["messages"][2]["content"].endswith("\n" + row["answer"])
    with pytest.raises(ValueError, match="families"):
        train_test_cot(5, 5, families=("string",))


def test_to_cot_refuses_a_wrong_answer():
    task = make_tasks(1, families=("arithmetic",))[0]
    with pytest.raises(ValueError, match="the task says"):
        to_cot({**task, "answer": "-1"})


def test_sft_reads_them(tmp_path):
    train, test = train_test_cot(30, 5)
    path = tmp_path / "cot.jsonl"
    write_cot_jsonl(train, path)
    data = sft.read_sft_jsonl(path)
    assert data.examples == [t["messages"] for t in train]
    convs, held, skipped = sft.load_conversations("tasks-cot", n_train=30, n_heldout=5)
    assert convs == data.examples and held == [t["messages"] for t in test] and skipped == 0
