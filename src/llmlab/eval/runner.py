"""Scoring a task on a loaded model: rows in, metrics (with standard errors) and per-sample records out.

`evaluate(lm, spec)` picks the scorer by the task's kind:

    perplexity        rolling log-likelihood of each document (perplexity.py), lm-eval's units
    multiple_choice   log-likelihood of each choice after the prompt (multiple_choice.py): acc, acc_norm
    generate          greedy answers to the prompts, checked against the reference: exact match, F1,
                      math answers (answers.py), or corpus BLEU / ROUGE / chrF (metrics.py); an optional
                      judge model grades each answer too, and its agreement with the metric is reported
    code              n completions per problem run against the problem's tests in the sandbox (code.py),
                      pass@k with the Codex paper's unbiased estimator

`lm` is what `llmlab.load` returns. Generated programs run only when the caller allows it.
"""

import math
import random
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from llmlab.common.errors import UserError
from llmlab.eval import answers, code, metrics
from llmlab.eval.builtin import builtin_rows
from llmlab.eval.formats import convert_rows, hub_rows
from llmlab.eval.judge import agreement, grade_answers, summarize_grades
from llmlab.eval.multiple_choice import score_multiple_choice
from llmlab.eval.perplexity import perplexity
from llmlab.eval.stats import mean_stderr
from llmlab.eval.tasks import TaskSpec, check_rows, read_rows, render
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.generate import generate_batch

# HumanEval's stop sequences: a completion ends where the next top-level statement begins
CODE_STOPS = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint("]
PER_SAMPLE = {"exact_match": answers.exact_match, "f1": answers.f1, "math": answers.math_equal}
CORPUS = {"bleu": metrics.bleu, "rouge": metrics.rouge, "chrf": metrics.chrf}


def load_rows(spec: TaskSpec, limit: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The task's rows (a built-in set or a data file), the first `limit` after a seeded shuffle when limited."""
    if spec.data.startswith("builtin:"):
        rows = builtin_rows(spec.data.removeprefix("builtin:"))
    elif spec.data == "hub:":
        rows = hub_rows(spec.format)
    elif spec.kind == "perplexity" and spec.data.endswith(".txt"):
        try:
            rows = [{"text": open(spec.data, encoding="utf-8").read(), "_source": spec.data}]
        except OSError as e:
            raise UserError(f"{spec.data}: cannot read the text ({e.strerror})") from None
    else:
        rows = read_rows(spec.data)
    if spec.format:
        rows = convert_rows(spec.format, rows)
    if limit is not None and limit < len(rows):
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        rows = [rows[i] for i in sorted(order[:limit])]
    check_rows(spec, rows)
    return rows


def _mean_with_stderr(name: str, values: list[float]) -> dict[str, float]:
    mean, stderr = mean_stderr(values) if values else (math.nan, math.nan)
    return {name: mean, f"{name}_stderr": stderr}


def score_perplexity(lm, spec: TaskSpec, rows: list[dict], batch_size: int, progress: bool, **_) -> tuple:
    for row in rows:
        if not isinstance(row.get("text"), str):
            raise UserError(f"{row['_source']}: a perplexity row needs a 'text' string")
    result = perplexity(lm, [row["text"] for row in rows], batch_size=batch_size, progress=progress)
    keys = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
    return {**{k: result[k] for k in keys}, "n": result["documents"]}, result["per_document"]


def score_choices(lm, spec: TaskSpec, rows: list[dict], batch_size: int, progress: bool, **_) -> tuple:
    result = score_multiple_choice(lm, rows, spec.template, batch_size=batch_size, progress=progress)
    samples = []
    for row, rec in zip(rows, result["records"], strict=True):
        samples.append({"source": row["_source"], "prompt": render(spec.template, row), **rec,
                        "confidence": rec["probs"][rec["pred"]]})
    keys = ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")
    return {k: result[k] for k in keys}, samples


def generate_texts(lm, prompts: list[str], max_new_tokens: int, *, chat: bool, stop: list[str],
                   temperature: float = 0.0, seed: int = 0, batch_size: int = 16, progress: bool = False) -> list[str]:
    """One completion per prompt: rendered as a user turn when `chat` and the model has a template, run in
    batches of similar length, cut at the first stop string."""
    tok = lm.tokenizer
    use_chat = chat and getattr(tok, "chat_template", None)
    ids = [lm.chat_ids([{"role": "user", "content": p}]) if use_chat else lm.encode(p) for p in prompts]
    stops = end_of_turn_ids(tok)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: less padding
    texts: list[str] = [""] * len(ids)
    bar = tqdm(total=len(ids), desc="generating", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        outs = generate_batch(lm.model, [ids[i] for i in chunk], max_new_tokens, temperature=temperature,
                              top_p=0.95 if temperature > 0 else None, seed=seed + start, stop_ids=stops,
                              truncate=True)
        for i, out in zip(chunk, outs, strict=True):
            text = tok.decode([t for t in out if t not in stops])
            cut = min([text.find(s) for s in stop if s in text], default=len(text))
            texts[i] = text[:cut]
        bar.update(len(chunk))
    bar.close()
    return texts


def score_generation(lm, spec: TaskSpec, rows: list[dict], batch_size: int, progress: bool, seed: int = 0,
                     judge=None, judge_max_new_tokens: int = 128, **_) -> tuple:
    prompts = [render(spec.template, row) for row in rows]
    references = [str(row[spec.answer_field]) for row in rows]
    outputs = generate_texts(lm, prompts, spec.max_new_tokens, chat=spec.chat, stop=spec.stop,
                             temperature=spec.temperature, seed=seed, batch_size=batch_size, progress=progress)
    samples = [{"source": row["_source"], "prompt": p, "answer": out, "reference": ref}
               for row, p, out, ref in zip(rows, prompts, outputs, references, strict=True)]
    result: dict[str, Any] = {"n": len(rows)}
    for name in spec.metrics:
        if name in PER_SAMPLE:
            for s in samples:
                s[name] = float(PER_SAMPLE[name](s["answer"], s["reference"]))
            result.update(_mean_with_stderr(name, [s[name] for s in samples]))
        else:
            result.update(CORPUS[name](outputs, references))
    if judge is not None:
        grades = grade_answers(judge, prompts, outputs, references=references, max_new_tokens=judge_max_new_tokens,
                               progress=progress)
        for s, g in zip(samples, grades, strict=True):
            s["judge_score"], s["judge_text"] = g.score, g.raw
        summary = summarize_grades(grades)
        result.update(judge_score=summary["mean"], judge_score_stderr=summary["stderr"],
                      judge_unparseable=summary["unparseable"])
        per_sample = next((m for m in spec.metrics if m in PER_SAMPLE), None)
        if per_sample:
            result["judge_agreement"] = {"metric": per_sample, **agreement([g.score for g in grades],
                                                                           [s[per_sample] for s in samples])}
    return result, samples


def score_code(lm, spec: TaskSpec, rows: list[dict], batch_size: int, progress: bool, seed: int = 0,
               allow_code_execution: bool = False, **_) -> tuple:
    if not allow_code_execution:
        raise UserError(f"task {spec.name}: scoring it runs programs the model wrote; set allow_code_execution "
                        "to run them in llmlab's sandbox (see llmlab.eval.code for what it does not protect)")
    temperature = spec.temperature if spec.n_samples == 1 else (spec.temperature or 0.8)
    prompts = [row["prompt"] for row in rows for _ in range(spec.n_samples)]
    completions = generate_texts(lm, prompts, spec.max_new_tokens, chat=False, stop=spec.stop or CODE_STOPS,
                                 temperature=temperature, seed=seed, batch_size=batch_size, progress=progress)
    jobs = [code.humaneval_program(rows[i // spec.n_samples], c) for i, c in enumerate(completions)]
    verdicts = code.check_all(jobs)
    samples, counts = [], []
    for j, row in enumerate(rows):
        mine = verdicts[j * spec.n_samples:(j + 1) * spec.n_samples]
        counts.append((spec.n_samples, sum(v["passed"] for v in mine)))
        for c, v in zip(completions[j * spec.n_samples:(j + 1) * spec.n_samples], mine, strict=True):
            samples.append({"source": row["_source"], "task_id": row.get("task_id"), "prompt": row["prompt"],
                            "answer": c, "passed": v["passed"], "result": v["result"]})
    result = {**code.pass_at_k_scores(counts, tuple(spec.k)), "n": len(rows)}
    if "pass@1" in result:
        result.update(_mean_with_stderr("pass@1", [c / n for n, c in counts]))
    return result, samples


SCORERS: dict[str, Callable[..., tuple]] = {"perplexity": score_perplexity, "multiple_choice": score_choices,
                                            "generate": score_generation, "code": score_code}


def evaluate(lm, spec: TaskSpec, *, limit: int | None = None, batch_size: int = 16, seed: int = 0,
             progress: bool = True, allow_code_execution: bool = False, judge=None,
             judge_max_new_tokens: int = 128) -> tuple[dict, list[dict]]:
    """(metrics by lm-eval's names with standard errors and n, per-sample records) of one task."""
    if lm.tokenizer is None:
        raise UserError(f"{lm.source}: has no tokenizer, and evaluation reads and writes text")
    rows = load_rows(spec, limit, seed)
    return SCORERS[spec.kind](lm, spec, rows, batch_size=batch_size, progress=progress, seed=seed,
                              allow_code_execution=allow_code_execution, judge=judge,
                              judge_max_new_tokens=judge_max_new_tokens)
