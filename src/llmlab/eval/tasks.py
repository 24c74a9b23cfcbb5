"""Evaluation tasks: what to score, on which rows, with which prompt and metrics.

A task is a `TaskSpec`. `resolve_task(name_or_path)` makes one from:

    a built-in name        math, python, stdlib-mc, summarize, tasks-qa (generated offline, no download)
    FORMAT=FILE, FORMAT    a public benchmark in its own format (gsm8k, humaneval, mbpp, hellaswag, arc, mmlu),
                           from a local file, or from the hub when online (see formats.py)
    FILE.jsonl             multiple choice: {"question", "choices", "answer": index} rows, lm-eval's default prompt
    FILE.txt               perplexity of the text (rolling windows)
    FILE.yaml / .json      a task file naming a data file, a kind, a template and metrics, e.g.

        name: capitals
        kind: generate                    # perplexity | multiple_choice | generate | code
        data: capitals.jsonl              # relative to the task file
        template: "Q: {question}\\nA:"     # str.format fields from each row
        answer_field: answer              # the reference, for generate tasks
        metrics: [exact_match, f1]
        max_new_tokens: 16

Rows are dicts; each keeps `_source` ("file.jsonl:12") so a bad row is reported
by file and line. This file reads and checks tasks; scoring them is `runner.py`'s.
"""

import dataclasses
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmlab.common.errors import UserError

KINDS = ("perplexity", "multiple_choice", "generate", "code")
# metrics by kind, by lm-eval's names where lm-eval has the metric
METRICS = {
    "perplexity": ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"),
    "multiple_choice": ("acc", "acc_norm"),
    "generate": ("exact_match", "f1", "math", "bleu", "rouge", "chrf"),
    "code": ("pass@k",),
}
MC_TEMPLATE = "Question: {question}\nAnswer:"  # lm-eval's own multiple-choice prompt


@dataclass
class TaskSpec:
    name: str
    kind: str
    data: str = ""  # a data file, "builtin:NAME", or "hub:" (a public format's usual split, downloaded)
    format: str = ""  # a public benchmark's row format (formats.py), converted before scoring
    template: str = "{question}"
    metrics: list[str] = field(default_factory=list)
    answer_field: str = "answer"
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # strings that end a generated answer
    chat: bool = True  # wrap the prompt as a user turn when the model has a chat template
    n_samples: int = 1  # code: completions per problem (pass@k needs n >= k)
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 0.0  # 0: greedy; code tasks with n_samples > 1 need sampling
    source: str = ""  # the file the spec came from, for errors

    def __post_init__(self):
        where = self.source or self.name
        if self.kind not in KINDS:
            raise UserError(f"{where}: unknown task kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        self.metrics = list(self.metrics) or list(METRICS[self.kind][:2])
        for m in self.metrics:
            if m not in METRICS[self.kind] and not (self.kind == "code" and m.startswith("pass@")):
                raise UserError(f"{where}: unknown metric {m!r} for a {self.kind} task; choose from "
                                f"{', '.join(METRICS[self.kind])}")
        if self.kind == "code":
            self.k = sorted({int(m.split("@")[1]) for m in self.metrics if m[5:].isdigit()} | set(self.k))
            if self.n_samples < max(self.k):
                raise UserError(f"{where}: pass@{max(self.k)} needs n_samples >= {max(self.k)}")


def template_fields(template: str) -> list[str]:
    """The row fields a `str.format` template uses. "Q: {question}\nA: {meta[id]}" -> ["question", "meta"]."""
    try:
        return [re.split(r"[.\[]", name)[0] for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as e:
        raise UserError(f"template {template!r}: not a valid format string ({e}); double braces to mean {{ }}") \
            from None


def render(template: str, row: dict[str, Any]) -> str:
    """Fill a template from a row; a missing field names the row's file and line."""
    try:
        return template.format(**row)
    except KeyError as e:
        raise UserError(f"{row.get('_source', 'row')}: the template names {e.args[0]!r}, which this row lacks "
                        f"(fields: {', '.join(k for k in row if not k.startswith('_'))})") from None
    except (IndexError, ValueError) as e:
        raise UserError(f"template {template!r}: cannot fill it ({e}); use named fields like {{question}}") from None


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl file (or a .json list), each tagged with `_source` = "file:line"."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: bad JSON ({e.msg})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{path}: expected a JSON list of objects")
        return [{**r, "_source": f"{path}[{i}]"} for i, r in enumerate(rows)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: bad JSON ({e.msg}); fix the row") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append({**row, "_source": f"{path}:{lineno}"})
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def check_rows(spec: TaskSpec, rows: list[dict[str, Any]]) -> None:
    """Refuse rows the task cannot score, naming the first bad one by file and line."""
    needed = {"text"} if spec.kind == "perplexity" else set(template_fields(spec.template))
    if spec.kind == "generate":
        needed.add(spec.answer_field)
    for row in rows:
        where = row.get("_source", spec.name)
        missing = sorted(needed - set(row))
        if missing:
            raise UserError(f"{where}: row lacks {', '.join(missing)} (needed by the template or as the answer)")
        if spec.kind == "multiple_choice":
            choices = row.get("choices")
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise UserError(f"{where}: a multiple-choice row needs 'choices', a list of at least 2 strings")
            answer = row.get("answer")
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
                raise UserError(f"{where}: answer {answer!r} is not an index into its {len(choices)} choices")


def read_task_file(path: Path) -> TaskSpec:
    """A YAML or JSON task file -> TaskSpec; its data path is relative to the file."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as e:
        raise UserError(f"{path}: cannot parse the task file ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a task file is a mapping of fields (name, kind, data, template, metrics)")
    known = {f.name for f in dataclasses.fields(TaskSpec)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    raw.setdefault("name", path.stem)
    if "kind" not in raw:
        raise UserError(f"{path}: no 'kind'; choose one of {', '.join(KINDS)}")
    data = raw.get("data", "")
    if data and not data.startswith("builtin:"):
        raw["data"] = str((path.parent / data) if not Path(data).is_absolute() else Path(data))
    try:
        return TaskSpec(**raw, source=str(path))
    except TypeError as e:
        raise UserError(f"{path}: {e}") from None


def resolve_task(name: str) -> TaskSpec:
    """A built-in task name, a .jsonl (multiple choice), a .txt (perplexity), or a .yaml/.json task file."""
    from llmlab.eval.builtin import BUILTIN_TASKS  # here, not at the top: these build on this file
    from llmlab.eval.formats import FORMATS

    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]()
    fmt, _, data = name.partition("=")
    if fmt in FORMATS:
        if data and not Path(data).is_file():
            raise UserError(f"{data}: no such file (given as {fmt}'s data)")
        return FORMATS[fmt].spec(fmt, data or "hub:")
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or (path.suffix == ".json" and path.is_file() and _is_task_file(path)):
        if not path.is_file():
            raise UserError(f"{path}: no such task file")
        return read_task_file(path)
    if path.suffix == ".jsonl":
        return TaskSpec(name=path.stem, kind="multiple_choice", data=str(path), template=MC_TEMPLATE,
                        source=str(path))
    if path.suffix == ".txt":
        return TaskSpec(name=path.stem, kind="perplexity", data=str(path), source=str(path))
    raise UserError(f"{name}: not a built-in task ({', '.join(BUILTIN_TASKS)}), a public format "
                    f"({', '.join(FORMATS)}, as NAME or NAME=FILE), nor a .jsonl, .txt, .yaml or .json task file")


def _is_task_file(path: Path) -> bool:
    """A .json file is a task file when it holds an object with a 'kind'; a list of rows is data."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return True  # let read_task_file report what is wrong with it
    return isinstance(raw, dict) and "kind" in raw
