"""The number-phrase translation task: num2words pairs, a split by number, parity labels."""

import pytest

from llmlab.common.errors import UserError
from llmlab.data.translation import number_pairs, parity_rows, translation_split

num2words = pytest.importorskip("num2words").num2words


def test_pairs_are_num2words_in_both_languages():
    pairs = number_pairs([21, 80, 91, 201])
    assert [p["target"] for p in pairs] == ["vingt et un", "quatre-vingts", "quatre-vingt-onze", "deux cent un"]
    assert pairs[0]["source"] == "twenty-one"
    assert number_pairs([7], target_lang="de")[0]["target"] == num2words(7, lang="de")


def test_split_is_by_number_seeded_and_complete():
    train, test = translation_split(max_number=199, test_fraction=0.25, seed=3)
    numbers = {p["number"] for p in train} | {p["number"] for p in test}
    assert numbers == set(range(200)) and len(test) == 50
    assert not {p["number"] for p in train} & {p["number"] for p in test}
    assert not {p["source"] for p in train} & {p["source"] for p in test}
    assert translation_split(199, 0.25, 3) == (train, test)
    assert translation_split(199, 0.25, 4)[1] != test


def test_parity_rows_and_errors():
    assert parity_rows(number_pairs([3, 40])) == [("three", "odd"), ("forty", "even")]
    with pytest.raises(UserError):
        translation_split(max_number=5)
    with pytest.raises(UserError, match="language"):
        number_pairs([1], target_lang="xx")
