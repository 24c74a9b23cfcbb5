"""Answer checking: SQuAD EM/F1 equal the official v1.1 script; math answers extract and compare exactly."""

import random
import re
import string
from collections import Counter
from fractions import Fraction

import pytest

from llmlab.eval.answers import (
    answers_equal,
    boxed,
    exact_match,
    extract_answer,
    f1,
    last_number,
    math_equal,
    parse_number,
    squad_normalize,
)
from llmlab.eval.exact_match import exact_match as first_line_match
from llmlab.eval.exact_match import exact_match_score, generate_answers, normalize_answer


# The official SQuAD v1.1 evaluation functions, verbatim, as the oracle.
def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_exact_match_score(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


WORDS = ["the", "a", "an", "The", "cat", "Cat", "sat", "mat", "Eiffel", "Tower", "Paris", "1889", "an", "apple",
         "theatre", "another", "Ana", "café", "über", "it's", "don't", "U.S.", "3.14", "-", "(", ")", ",", ".", "!"]


def random_answer(rng: random.Random) -> str:
    return rng.choice([" ", "  ", "\t", ""]).join(rng.choice(WORDS) for _ in range(rng.randint(0, 6)))


def test_squad_metrics_equal_the_official_script():
    rng = random.Random(0)
    for _ in range(2000):
        prediction = random_answer(rng)
        references = [random_answer(rng) for _ in range(rng.randint(1, 3))]
        assert squad_normalize(prediction) == official_normalize_answer(prediction)
        assert exact_match(prediction, references) == float(
            official_metric_max_over_ground_truths(official_exact_match_score, prediction, references))
        assert f1(prediction, references) == pytest.approx(
            official_metric_max_over_ground_truths(official_f1_score, prediction, references), abs=1e-12)


def test_squad_examples():
    assert squad_normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert exact_match("the Eiffel Tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "the eiffel"]) == 1.0
    assert f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert f1("", "") == 0.0  # v1.1: no shared token, even when both are empty
    assert f1("theatre", "the atre") == 0.0  # articles go only as whole words
    with pytest.raises(ValueError, match="at least one reference"):
        f1("x", [])


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nSo 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
    ("She earns 1,200 dollars a week, so 4 weeks make 4,800.\n#### 4,800", "4,800"),
    ("The temperature fell 12 degrees.\n#### -12", "-12"),
    ("#### The answer is 18 dollars.", "18"),
    ("Work: 5 + 3 = 8. #### 8\nI hope this helps, 2 of them.", "8"),  # the line after the marker decides
    ("So the answer is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
    ("\\boxed{\\frac{\\sqrt{2}}{2}} and not \\boxed{1}", "1"),  # the last box
    ("We get $\\boxed{\\left(\\frac{1}{2}, \\frac{1}{3}\\right)}$", "\\left(\\frac{1}{2}, \\frac{1}{3}\\right)"),
    ("nested \\boxed{x^{2^{3}} + {y}}", "x^{2^{3}} + {y}"),
    ("so $x = \\boxed 5$", "5"),
    ("\\fbox{7}", "7"),
    ("First 3 apples, then 1,250.50 dollars in total.", "1,250.50"),
    ("It costs \u22127 degrees.", "-7"),  # a Unicode minus
    ("Three quarters is 3/4.", "3/4"),
    ("The year 2024 had 366 days", "366"),
    ("The answer is 42.", "42"),
    ("#### \n the model then wrote 5", "5"),  # an empty marker falls through to the last number
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["no numbers here", "", "\\boxed{}", "####", "\\boxed{unbalanced"])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_boxed_and_last_number_pieces():
    assert boxed("no box") is None and boxed("\\boxed{a{b}c}d") == "a{b}c"
    assert last_number("1,23") == "23"  # not a thousands separator: two numbers
    assert last_number("x") is None


@pytest.mark.parametrize("text, value", [
    ("42", 42), ("-42", -42), ("+3", 3), ("1,234", 1234), ("1,234,567.5", Fraction(2469135, 2)),
    ("3.50", Fraction(7, 2)), ("0.75", Fraction(3, 4)), (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)),
    ("-3 / 4", Fraction(-3, 4)), ("\\frac{3}{4}", Fraction(3, 4)), ("-\\frac{1}{2}", Fraction(-1, 2)),
    ("\\dfrac{10}{4}", Fraction(5, 2)), ("\\tfrac12", Fraction(1, 2)), ("\\frac{-6}{4}", Fraction(-3, 2)),
    ("$1,000.00", 1000), ("\\$18", 18), ("75%", 75), ("75\\%", 75), ("1{,}000", 1000), ("12 \\text{ cm}", 12),
    ("42.", 42), ("\u22125", -5),
])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "x", "1/0", "\\frac{1}{0}", "\\frac{\\sqrt{2}}{2}", "1,23", "1e5", "3 apples",
                                  "1.2.3", "--5"])
def test_parse_number_none(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("a, b, equal", [
    ("3.50", "3.5", True), ("3/4", "0.75", True), ("\\frac{3}{4}", "0.75", True), ("1,234", "1234", True),
    ("-0", "0", True), ("50%", "50", True), ("$5", "5.00", True), ("0.333", "1/3", False), ("7", "-7", False),
    ("\\frac{\\sqrt{2}}{2}", "\\dfrac{\\sqrt{2}}{2}", True), ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("x^2", "x^3", False), ("", "", False), ("abc", "5", False),
])
def test_answers_equal(a, b, equal):
    assert answers_equal(a, b) is equal


def test_math_equal_on_gsm8k_and_math_shapes():
    gsm8k_reference = "Janet has 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert math_equal("She sells 9 eggs at $2, which is $18.00.", gsm8k_reference)
    assert math_equal("so she makes 18 dollars\n#### 18", gsm8k_reference)
    assert not math_equal("She makes $20.", gsm8k_reference)
    assert not math_equal("I cannot tell.", gsm8k_reference)
    math_reference = "The probability is $\\boxed{\\frac{1}{4}}$."
    assert math_equal("... which gives \\boxed{0.25}", math_reference)
    assert math_equal("so the answer is 1/4", math_reference)
    assert not math_equal("\\boxed{\\frac{1}{3}}", math_reference)
    assert math_equal("The answer is \\boxed{2\\sqrt{2}}.", "2 \\sqrt{2}")  # a bare reference, compared as text


def test_exact_match_module_keeps_its_names():
    assert callable(exact_match_score) and callable(generate_answers)
    assert normalize_answer("  'Paris.'\nMore") == "Paris" and first_line_match("Paris.", "Paris")
