"""Built-in task data: deterministic, well-formed, answers right (canonical code passes in the sandbox)."""

import ast
import importlib
import json
import re
from importlib import resources

import pytest

from llmlab.eval.answers import extract_answer, math_equal
from llmlab.eval.code import check_all, humaneval_program
from llmlab.eval.suites import math_rows, python_problems, stdlib_multiple_choice, summarization_rows
from llmlab.eval.suites.word_problems import FAMILIES


def test_math_rows_are_deterministic_and_gsm8k_shaped():
    rows = math_rows(80, seed=3)
    assert rows == math_rows(80, seed=3) and rows != math_rows(80, seed=4)
    assert math_rows(8, seed=3) == rows[:8] and math_rows(0) == []
    assert {r["family"] for r in rows} == set(FAMILIES)
    for row in rows:
        assert set(row) == {"question", "answer", "family"} and row["question"].strip()
        steps, final = row["answer"].rsplit("\n#### ", 1)
        assert re.fullmatch(r"-?\d+", final) and (int(final) >= 0 or row["family"] == "arithmetic")
        assert extract_answer(row["answer"]) == final and math_equal(f"So it is {final}.", row["answer"])
        for step in steps.split("\n"):  # every step's arithmetic is right
            expression, result = step.split(": ")[-1].rsplit(" = ", 1)
            assert eval(expression, {}) == int(result), step  # our own generated arithmetic, digits and + - * / //
    with pytest.raises(ValueError, match="n must be >= 0"):
        math_rows(-1)


def test_python_problems_are_humaneval_shaped():
    rows = python_problems()
    assert len(rows) == 40 and rows == python_problems()
    assert len({r["task_id"] for r in rows}) == 40 and len({r["entry_point"] for r in rows}) == 40
    for row in rows:
        assert set(row) == {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
        assert row["prompt"].startswith(f"def {row['entry_point']}(") and row["prompt"].endswith('"""\n')
        assert row["test"].startswith("def check(candidate):\n") and row["test"].count("assert candidate(") >= 2
        ast.parse(row["prompt"] + row["canonical_solution"] + row["test"])


def test_every_canonical_solution_passes_in_the_sandbox():
    rows = python_problems()
    results = check_all([humaneval_program(r, r["canonical_solution"]) for r in rows], timeout=10)
    assert [r["task_id"] for r, res in zip(rows, results, strict=True) if not res["passed"]] == []


def test_wrong_solutions_fail_in_the_sandbox():
    results = check_all([humaneval_program(r, "    return None\n") for r in python_problems()], timeout=10)
    assert all(res["result"].startswith("failed: AssertionError") for res in results)


def test_stdlib_multiple_choice_has_one_right_answer():
    rows = stdlib_multiple_choice(60, seed=1)
    assert rows == stdlib_multiple_choice(60, seed=1) and rows != stdlib_multiple_choice(60, seed=2)
    assert stdlib_multiple_choice(0) == []
    for row in rows:
        assert set(row) == {"question", "choices", "answer", "kind"}
        assert len(row["choices"]) == 4 == len(set(row["choices"])) and 0 <= row["answer"] < 4
        name_or_module = re.search(r"`([\w.]+)`", row["question"]).group(1)
        if row["kind"] == "module_of_name":  # only the right module has the name
            has = [hasattr(importlib.import_module(m), name_or_module) for m in row["choices"]]
        else:  # only the right name is in the module
            module = importlib.import_module(name_or_module)
            has = [hasattr(module, name) for name in row["choices"]]
        assert has == [i == row["answer"] for i in range(4)], row
    with pytest.raises(ValueError, match="n must be >= 0"):
        stdlib_multiple_choice(-3)


def test_summarization_rows_ship_as_package_data():
    rows = summarization_rows()
    assert len(rows) == 30 and rows == summarization_rows()
    assert rows == json.loads(resources.files("llmlab.eval.suites").joinpath("summaries.json").read_text("utf-8"))
    assert len({r["id"] for r in rows}) == 30
    for row in rows:
        assert set(row) == {"id", "document", "summary"}
        assert len(row["summary"]) < len(row["document"]) / 2 and row["summary"].endswith(".")
        assert row["summary"] not in row["document"]  # written, not copied
