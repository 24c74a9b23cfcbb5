"""The built-in task set: deterministic, exact answers, held-out questions disjoint from training."""

from llmlab.data.sft import row_to_messages
from llmlab.data.tasks import make_tasks, train_test_tasks


def test_deterministic_and_valid():
    a, b = make_tasks(30, seed=1), make_tasks(30, seed=1)
    assert a == b and a != make_tasks(30, seed=2)
    assert {t["family"] for t in a} == {"arithmetic", "conversion", "string"}
    for t in a:
        assert row_to_messages({"messages": t["messages"]})[-1]["content"] == t["answer"]


def test_answers_are_correct():
    for t in make_tasks(60, seed=0):
        q = t["messages"][1]["content"]
        if q.startswith("Convert 3 kilometres"):
            assert t["answer"] == "3000"
        if q.startswith("Reverse the letters of '"):
            word = q.split("'")[1]
            assert t["answer"] == word[::-1]
        if " and buys " in q:
            a, b = [int(w) for w in q.replace(".", " ").split() if w.isdigit()]
            assert t["answer"] == str(a + b)


def test_held_out_is_disjoint():
    train, test = train_test_tasks(200, 50, seed=0)
    assert len(train) == 200 and len(test) == 50
    assert not {t["messages"][1]["content"] for t in train} & {t["messages"][1]["content"] for t in test}
