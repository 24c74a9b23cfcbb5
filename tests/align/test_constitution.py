"""The constitutional loop with a fake chat function: three rounds in order, the conversation each round sees,
a seeded principle per prompt, the rows it writes, and bad input (empty files, a failing chat)."""

import pytest

from llmlab.align.constitution import (
    CRITIQUE_REQUEST,
    REVISION_REQUEST,
    constitutional_revisions,
    load_principles,
    load_prompts,
    to_rows,
)
from llmlab.common.errors import UserError


class FakeChat:
    """Answers by round, recording every conversation it is shown."""

    def __init__(self, unchanged: set[str] = frozenset()):
        self.seen, self.unchanged = [], unchanged

    def __call__(self, messages):
        self.seen.append(messages)
        prompt = messages[0]["content"]
        if len(messages) == 1:
            return f" answer to {prompt} "
        if len(messages) == 3:
            return f"critique of {prompt}"
        return f"answer to {prompt}" if prompt in self.unchanged else f"revised answer to {prompt}"


def test_three_rounds_see_the_right_conversations_and_make_rows():
    chat = FakeChat(unchanged={"p2"})
    principles = ["be kind", "be honest", "be safe"]
    revs = constitutional_revisions(chat, ["p1", "p2", "p3"], principles, seed=7)
    assert [len(m) for m in chat.seen] == [1, 1, 1, 3, 3, 3, 5, 5, 5]  # every answer, then critiques, then revisions
    r = revs[0]
    assert r.answer == "answer to p1" and r.critique == "critique of p1" and r.revision == "revised answer to p1"
    assert chat.seen[3][1:] == [{"role": "assistant", "content": "answer to p1"},
                                {"role": "user", "content": CRITIQUE_REQUEST.format(principle=r.principle)}]
    assert chat.seen[6][3:] == [{"role": "assistant", "content": "critique of p1"},
                                {"role": "user", "content": REVISION_REQUEST.format(principle=r.principle)}]
    assert [x.principle for x in revs] == [x.principle for x in constitutional_revisions(
        FakeChat(), ["p1", "p2", "p3"], principles, seed=7)]
    many = constitutional_revisions(FakeChat(), [f"q{i}" for i in range(40)], principles, seed=0)
    assert {x.principle for x in many} == set(principles)
    sft, pairs, dropped = to_rows(revs)
    assert len(sft) == 3 and dropped == 1 and len(pairs) == 2  # p2's revision is unchanged: no pair
    assert sft[0] == {"messages": [{"role": "user", "content": "p1"},
                                   {"role": "assistant", "content": "revised answer to p1"}]}
    assert pairs[1] == {"prompt": [{"role": "user", "content": "p3"}],
                        "chosen": [{"role": "assistant", "content": "revised answer to p3"}],
                        "rejected": [{"role": "assistant", "content": "answer to p3"}]}


def test_default_files_ship_with_the_package_and_bad_files_are_errors(tmp_path):
    assert len(load_principles()) == 12 and len(load_prompts()) == 30
    (tmp_path / "p.txt").write_text("# only a comment\n\n")
    with pytest.raises(UserError, match="holds no principles"):
        load_principles(tmp_path / "p.txt")
    with pytest.raises(UserError, match="no such prompt file"):
        load_prompts(tmp_path / "missing.txt")
    (tmp_path / "q.txt").write_text("one\n# skip\n two \n")
    assert load_prompts(tmp_path / "q.txt") == ["one", "two"]


def test_a_failing_chat_names_the_prompt_and_round():
    def chat(messages):
        if len(messages) == 3:
            raise RuntimeError("backend down")
        return "x"

    with pytest.raises(UserError, match=r"prompt 0 \(critique\) \(RuntimeError: backend down\)"):
        constitutional_revisions(chat, ["a", "b"], ["p"])
    with pytest.raises(UserError, match="no principles"):
        constitutional_revisions(chat, ["a"], [])
