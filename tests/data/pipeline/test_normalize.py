"""Normalisers: mojibake repair undoes the planted mistake, Unicode forms match `unicodedata`, rules count."""

import unicodedata

import pytest

from llmlab.data.pipeline.normalize import Normalize, RegexRules, normalize_whitespace, remove_control
from llmlab.data.pipeline.stage import StageStats


def doc(text: str) -> dict:
    return {"id": "d", "text": text, "source": "s"}


def test_mojibake_is_undone():
    original = "The café’s “best crème brûlée — naïve, but fine."  # (” has no cp1252 mojibake)
    broken = original.encode("utf-8").decode("cp1252")  # the classic mistake: UTF-8 read as Windows-1252
    stats = StageStats("normalize")
    assert Normalize().apply(doc(broken), stats)["text"] == original
    assert stats.counters["mojibake fixed"] == 1


@pytest.mark.parametrize("form", ["NFC", "NFKC"])
def test_unicode_forms_match_unicodedata(form):
    text = "Cafe\u0301 ﬁne Ａ½ Å"
    out = Normalize(unicode=form, mojibake=False, whitespace="none").apply(doc(text), StageStats("n"))
    assert out["text"] == unicodedata.normalize(form, text)


def test_control_characters_and_whitespace():
    assert remove_control("a\r\nb\x00c\rd\x07e\tf") == "a\nbc\nde\tf"
    assert normalize_whitespace("  a  b \n\n\n\n\nc\n", "lines") == "  a  b\n\n\nc\n"
    assert normalize_whitespace("  a  b \n\n\n\n\nc\n", "collapse") == " a b\n\n\nc\n"
    assert normalize_whitespace("def f():\n    pass\n\n\nx = 1\n") == "def f():\n    pass\n\n\nx = 1\n"
    stats = StageStats("n")
    assert Normalize().apply(doc(" \x00\n\t"), stats) is None
    assert stats.dropped["empty after normalisation"] == 1


def test_regex_rules_replace_and_drop():
    stage = RegexRules(rules=[{"pattern": r"^Advertisement$\n?", "replace": ""},
                              {"pattern": r"(?i)buy now", "drop": True}])
    stage.check()
    stats = StageStats("regex")
    assert stage.apply(doc("Advertisement\nreal text"), stats)["text"] == "real text"
    assert stage.apply(doc("cheap pills, BUY NOW"), stats) is None
    assert stats.counters[r"replaced ^Advertisement$\n?"] == 1 and stats.dropped["matches (?i)buy now"] == 1


@pytest.mark.parametrize("rules", [[{"pattern": "("}], [{"pattern": "a", "replace": "b", "drop": True}],
                                   [{"pattern": "a"}], [{"pattern": "a", "replace": "", "colour": 1}], ["a"]])
def test_bad_rules(rules):
    with pytest.raises(ValueError):
        RegexRules(rules=rules).check()


def test_bad_options():
    with pytest.raises(ValueError, match="unicode"):
        Normalize(unicode="NFX").check()
    with pytest.raises(ValueError, match="whitespace"):
        Normalize(whitespace="squash").check()
