"""The answers an arena compares: prompts, each model's answer to them, and how a pair is drawn.

A results file is JSONL, one answer per line: `{"prompt": ..., "answer": ..., "model": ...}`. Other fields
(a task, a reference, a score: what `llmlab eval` writes per sample) are ignored. The model is named, first
match wins: `NAME=path` given for the file, else the line's "model" field, else the file's stem
(`runs/base.jsonl` -> "base"). A model's second answer to the same prompt is ignored (the first one counts).
Prompts are matched across files by their exact text and known by a short hash of it (`prompt_id`), which
stays the same when files are reordered or the server restarts.

Not here: generating answers (a recipe does it and hands the rows over), storing votes (`store.py`).
"""

import hashlib
import json
import random
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from llmlab.common.errors import UserError

PROMPTS_FILE = Path(__file__).with_name("prompts.txt")


def prompt_id(prompt: str) -> str:
    """A short stable id for a prompt's text: the first 12 hex digits of its SHA-256.

    prompt_id("hello") -> "2cf24dba5fb0".
    """
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


@dataclass
class AnswerPool:
    """Prompts by id, and per model its answers by prompt id."""

    prompts: dict[str, str] = field(default_factory=dict)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    _matchups: list[tuple[str, str, str]] | None = field(default=None, init=False, repr=False)

    def add(self, model: str, prompt: str, answer: str) -> None:
        pid = prompt_id(prompt)
        self.prompts[pid] = prompt
        self.answers.setdefault(model, {}).setdefault(pid, answer)
        self._matchups = None

    @property
    def models(self) -> list[str]:
        return sorted(self.answers)

    def matchups(self) -> list[tuple[str, str, str]]:
        """Every (prompt id, model, model) both models answered, the two models sorted."""
        if self._matchups is None:
            self._matchups = [(pid, x, y) for x, y in combinations(self.models, 2)
                              for pid in sorted(self.answers[x].keys() & self.answers[y].keys())]
        return self._matchups

    def check(self) -> None:
        if len(self.answers) < 2:
            raise UserError(f"the arena needs answers from two or more models, got {len(self.answers)} "
                            f"({', '.join(self.models) or 'none'}); name each file's model with NAME=path")
        if not self.matchups():
            raise UserError("no prompt was answered by two models; the results must share prompts (same text)")

    def draw(self, rng: random.Random, exclude: set[tuple[str, str, str]] = frozenset()
             ) -> tuple[str, str, str]:
        """(prompt id, left model, right model): a random matchup not in `exclude` (any one when all are),
        the sides shuffled so position says nothing about the model."""
        everything = self.matchups()
        fresh = [m for m in everything if m not in exclude]
        pid, x, y = rng.choice(fresh or everything)
        return (pid, x, y) if rng.random() < 0.5 else (pid, y, x)


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is a UserError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not JSON ({e.msg}); write one object per line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: expected a JSON object with prompt and answer fields")
        rows.append((n, obj))
    return rows


def read_results(sources: list[str], pool: AnswerPool | None = None) -> AnswerPool:
    """Add the answers in results files (`path` or `NAME=path`, see the module docstring) to a pool."""
    pool = pool if pool is not None else AnswerPool()
    for source in sources:
        name, path = source.split("=", 1) if "=" in source and not Path(source).exists() else ("", source)
        path = Path(path)
        for n, obj in read_jsonl(path):
            for key in ("prompt", "answer"):
                if not isinstance(obj.get(key), str):
                    raise UserError(f"{path}:{n}: needs a text {key!r} field (and may name its 'model')")
            pool.add(name or str(obj.get("model") or path.stem), obj["prompt"], obj["answer"])
    return pool


def read_prompts(path: str | Path | None = None) -> list[str]:
    """Prompts from a file: .jsonl with a "prompt" field per line, .json holding a list of texts, or any other
    file with one prompt per line. None: the built-in prompts."""
    path = Path(path) if path is not None else PROMPTS_FILE
    if path.suffix == ".jsonl":
        prompts = []
        for n, obj in read_jsonl(path):
            if not isinstance(obj.get("prompt"), str):
                raise UserError(f"{path}:{n}: needs a text 'prompt' field")
            prompts.append(obj["prompt"])
    elif not path.is_file():
        raise UserError(f"{path}: no such file")
    elif path.suffix == ".json":
        try:
            prompts = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise UserError(f"{path}: expected a JSON list of prompt texts")
    else:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{path}: holds no prompts")
    return prompts
