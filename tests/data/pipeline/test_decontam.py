"""Decontamination: documents sharing a 13-gram with an evaluation set are dropped or flagged."""

import json

from llmlab.data.pipeline.decontam import Decontaminate, ngrams
from llmlab.data.pipeline.stage import StageStats

QUESTION = "Mia has 7 pens and buys 5 more pens at the shop. How many pens does Mia have now?"


def doc(text):
    return {"id": "d", "text": text, "source": "s"}


def test_ngrams():
    assert ngrams("A b, C d", 3) == ["a b c", "b c d"]
    assert ngrams("Hi there", 13) == ["hi there"]


def test_drop_and_flag_from_files(tmp_path):
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "12"}) + "\n")
    leaked = "Some homework help. " + QUESTION.upper() + " The answer is twelve."
    clean = "Mia has many pens and likes to buy more of them when she is at the shop in town."
    stats = StageStats("decontaminate")
    stage = Decontaminate(files=[str(tmp_path / "eval.jsonl")])
    stage.check()
    assert stage.apply(doc(leaked), stats) is None
    assert stage.apply(doc(clean), stats) is not None
    assert stats.dropped == {"shares a 13-gram with eval.jsonl": 1}
    flagged = Decontaminate(texts={"tasks-qa": [QUESTION]}, action="flag").apply(doc(leaked), stats)
    assert flagged["contaminated"] == ["tasks-qa"]


def test_short_evaluation_texts_are_ignored():
    stage = Decontaminate(texts={"x": ["12", "Paris"]})
    assert stage.apply(doc("The capital is Paris and 12 is a number."), StageStats("d")) is not None
