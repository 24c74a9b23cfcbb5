"""Multiple choice by log-likelihood: the model picks the answer it finds most likely, as lm-eval scores it.

Each row is a question with choices and the index of the right one. The prompt is the row put into a
template ("Question: {question}\\nAnswer:"); each choice is scored as the continuation " " + choice
(lm-eval's `target_delimiter`), with `loglik.loglikelihood`. Then, per row, as lm-eval's
`multiple_choice` tasks do (lm_eval/api/task.py, `process_results`):

    acc       1 if argmax_i loglik_i is the answer            (ties go to the first choice)
    acc_norm  1 if argmax_i loglik_i / len(choice_i) is       (length in characters, without the space)

`acc_norm` cancels the pull towards short answers: every extra token costs log-probability. Both are
averaged over rows; their standard errors are lm-eval's `mean_stderr`, the sample standard deviation
(n - 1) over sqrt(n). Each row's record also keeps the choice log-likelihoods and their softmax, the
model's probability for each choice: calibration plots bin those.

Not here: reading task files (`tasks.py`), generation-based answers (`exact_match.py`).
"""

import math

from llmlab.common.errors import UserError
from llmlab.eval.loglik import loglikelihood
from llmlab.eval.stats import mean_stderr
from llmlab.eval.tasks import template_fields

TARGET_DELIMITER = " "


def argmax(values: list[float]) -> int:
    """Index of the largest value, the first on ties (numpy's argmax). [1, 3, 3] -> 1."""
    return max(range(len(values)), key=values.__getitem__)


def softmax(values: list[float]) -> list[float]:
    """Probabilities from log-likelihoods, shifted by the max first so exp cannot overflow.

    [0, ln 3] -> [0.25, 0.75].
    """
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def where(row, i: int) -> str:
    """How errors name a row: its `_source` ("file.jsonl:12") if it has one, else rows[i]."""
    return str(row.get("_source", f"rows[{i}]")) if isinstance(row, dict) else f"rows[{i}]"


def prompt(row: dict, i: int, template: str, fields: list[str]) -> str:
    """The row put into the template, or a UserError naming the row when it cannot be scored."""
    if not isinstance(row, dict):
        raise UserError(f"{where(row, i)}: expected a dict with question, choices and answer, got {type(row).__name__}")
    choices = row.get("choices")
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{where(row, i)}: needs a non-empty list of choices")
    for j, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice:
            raise UserError(f"{where(row, i)}: choice {j} must be a non-empty string, got {choice!r}")
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise UserError(f"{where(row, i)}: answer must be the index of the right choice (0..{len(choices) - 1}), "
                        f"got {answer!r}")
    missing = [f for f in fields if f not in row]
    if missing:
        raise UserError(f"{where(row, i)}: the template names {missing[0]!r}, which this row lacks; add it or "
                        "change the template")
    try:
        return template.format(**row)
    except (KeyError, IndexError, AttributeError, TypeError, ValueError) as e:
        raise UserError(f"{where(row, i)}: cannot fill the template {template!r} ({e!r}); name row fields "
                        "in braces, like {question}") from None


def score_multiple_choice(lm, rows: list[dict], template: str = "Question: {question}\nAnswer:",
                          batch_size: int = 16, progress: bool = False, max_length: int | None = None) -> dict:
    """acc, acc_norm, their standard errors, n, and a record per row (see the module docstring).

    rows: dicts with "choices" (list of str), "answer" (index) and every field the template names.
    A record: answer, pred (argmax of log-likelihood), pred_norm (argmax per character), correct,
    correct_norm, loglikelihoods, probs (softmax over the choices).
    """
    if not rows:
        raise UserError("rows: no questions to score; pass at least one row")
    fields = template_fields(template)
    requests = []
    for i, row in enumerate(rows):
        context = prompt(row, i, template, fields)
        requests += [(context, TARGET_DELIMITER + choice) for choice in row["choices"]]
    scores = loglikelihood(lm, requests, batch_size=batch_size, progress=progress, max_length=max_length)
    records, start = [], 0
    for row in rows:
        choices = row["choices"]
        lls = [ll for ll, _ in scores[start:start + len(choices)]]
        start += len(choices)
        pred = argmax(lls)
        pred_norm = argmax([ll / len(c) for ll, c in zip(lls, choices, strict=True)])
        records.append({"answer": row["answer"], "pred": pred, "pred_norm": pred_norm,
                        "correct": float(pred == row["answer"]), "correct_norm": float(pred_norm == row["answer"]),
                        "loglikelihoods": lls, "probs": softmax(lls)})
    acc = [r["correct"] for r in records]
    acc_norm = [r["correct_norm"] for r in records]
    return {"acc": sum(acc) / len(acc), "acc_norm": sum(acc_norm) / len(acc_norm), "acc_stderr": mean_stderr(acc)[1],
            "acc_norm_stderr": mean_stderr(acc_norm)[1], "n": len(records), "records": records}
