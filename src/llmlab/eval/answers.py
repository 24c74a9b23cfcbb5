"""Answer checking: SQuAD exact match and token F1, and final answers of math solutions compared as numbers.

Short answers (SQuAD v1.1's official script): both sides are normalised (lowercase, punctuation
and the articles a/an/the removed, whitespace collapsed); exact match compares the strings, F1
the bags of tokens. With several references the best one counts.

Math: `extract_answer` takes the final answer out of a solution: after GSM8K's `#### `, else the
last `\\boxed{...}` (braces may nest), else the last number in the text; None when nothing is
there. `parse_number` reads an answer as an exact fraction (thousands separators, signs,
decimals, a/b and \\frac{a}{b}, $ and % ignored), so "3.50" equals "3.5" and "3/4" equals "0.75"
with no float rounding. `answers_equal` compares numbers when both sides are numbers and otherwise
the strings with LaTeX spacing removed; it does not prove symbolic equality (\\sqrt{8} is not
2\\sqrt{2} here).

Names: `exact_match`, `f1` (SQuAD), `math_equal` (a generated solution against a reference); not to be
confused with `llmlab.eval.exact_match.exact_match`, the looser first-line comparison the
fine-tuning recipe uses.
"""

import re
import string
from collections import Counter
from fractions import Fraction

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = set(string.punctuation)
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"  # 1,234.5  12  -0.5  .5
NUMBER = re.compile(rf"(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?")  # with an optional /denominator
FRAC = re.compile(r"^(-?)\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}$|^(-?)\\[dt]?frac(\d)(\d)$")


def squad_normalize(text: str) -> str:
    """SQuAD's normalisation: "The  Eiffel-Tower!" -> "eiffeltower"; "an apple, a day" -> "apple day"."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: str | list[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    return max(float(squad_normalize(prediction) == squad_normalize(r)) for r in _as_list(references))


def f1(prediction: str, references: str | list[str]) -> float:
    """SQuAD v1.1 token F1, best over references: "the cat sat" vs "a cat sat down" -> P 1, R 2/3, F 0.8.

    As in v1.1, no shared token gives 0, even when both sides normalise to nothing.
    """
    def one(reference: str) -> float:
        pred, ref = squad_normalize(prediction).split(), squad_normalize(reference).split()
        same = sum((Counter(pred) & Counter(ref)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred), same / len(ref)
        return 2 * precision * recall / (precision + recall)

    return max(one(r) for r in _as_list(references))


def _as_list(references: str | list[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("references is empty: give at least one reference answer")
    return refs


def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...}, braces matched: "\\boxed{\\frac{1}{2}}." -> "\\frac{1}{2}"."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].removeprefix("\\boxed").removeprefix("\\fbox")
    if not rest.startswith("{"):
        match = re.match(r"\s+([^\s$]+)", rest)  # "\boxed 5"
        return match.group(1) if match else None
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return rest[1:i]
    return None  # unbalanced


def last_number(text: str) -> str | None:
    """The last number written in text: "3 apples cost $1,250.50, so 4/5 of it." -> "4/5"; "none" -> None."""
    matches = NUMBER.findall(text.replace("\u2212", "-"))
    return matches[-1] if matches else None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: after `####` (GSM8K), else the last \\boxed{} (MATH), else the last number.

    "... so 6 + 36 = 42.\\n#### 42" -> "42"; "$\\boxed{\\frac{3}{4}}$" -> "\\frac{3}{4}";
    "She pays 1,250 dollars." -> "1,250"; "no idea" -> None.
    """
    if "####" in text:
        line = (text.rsplit("####", 1)[1].strip().splitlines() or [""])[0].strip()
        if line:
            return line.rstrip(".") if parse_number(line) is not None else (last_number(line) or line)
    inside = boxed(text)
    if inside is not None and inside.strip():
        return inside.strip()
    return last_number(text)


def parse_number(text: str) -> Fraction | None:
    """An answer as an exact number, or None: "1,234" -> 1234, "-3.50" -> -7/2, "\\frac{3}{4}" -> 3/4, "75%" -> 75.

    Accepts a sign, thousands separators (also LaTeX's {,}), decimals, a/b, \\frac, \\dfrac,
    \\tfrac, and ignores $, \\$, %, \\%, \\! and \\text{...} units after the number.
    """
    s = text.strip().replace("\u2212", "-").replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\\text\{[^{}]*\}|\\mbox\{[^{}]*\}", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "").strip().rstrip(".").strip()
    frac = FRAC.match(s)
    if frac:
        sign, num, den = (frac.group(1), frac.group(2), frac.group(3)) if frac.group(2) is not None else \
            (frac.group(4), frac.group(5), frac.group(6))
        a, b = parse_number(num), parse_number(den)
        if a is None or b is None or b == 0:
            return None
        return -a / b if sign else a / b
    if not NUMBER.fullmatch(s):
        return None
    parts = [p.replace(",", "").strip() for p in s.split("/")]
    try:
        value = Fraction(parts[0])
        return value / Fraction(parts[1]) if len(parts) == 2 else value
    except ZeroDivisionError:
        return None


def _normalize_latex(text: str) -> str:
    """Strings compared when they are not numbers: no spaces, $, \\left/\\right, \\! or final period."""
    text = re.sub(r"\\left|\\right|\\!|\\,|\\;|\$|\s", "", text)
    return text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")


def answers_equal(prediction: str, reference: str) -> bool:
    """Two final answers: as exact numbers when both parse ("3.50" == "3.5", "3/4" == "0.75"), else as text."""
    a, b = parse_number(prediction), parse_number(reference)
    if a is not None and b is not None:
        return a == b
    return _normalize_latex(prediction) == _normalize_latex(reference) != ""


def math_equal(generation: str, reference: str) -> bool:
    """Whether a generated solution's final answer equals the reference's (a bare answer or a full solution)."""
    predicted = extract_answer(generation)
    if predicted is None:
        return False
    target = extract_answer(reference) if ("####" in reference or "\\boxed" in reference) else reference.strip()
    return target is not None and answers_equal(predicted, target)
