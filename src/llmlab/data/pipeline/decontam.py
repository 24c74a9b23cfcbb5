"""Decontamination: drop (or flag) training documents that share a long n-gram with an evaluation set.

GPT-3's procedure (Brown et al. 2020, appendix C) on lower-cased words: collect every 13-gram of the
evaluation texts (a text shorter than 13 words counts whole), then any training document containing one
of them is contaminated. `action = "drop"` removes it; `"flag"` keeps it with `contaminated: [sets]`, for
measuring how much evaluation text leaked before deciding.

Evaluation texts come from files (JSONL rows: every string field; anything else: the whole file) or from
`texts` given directly. Naming llmlab's evaluation tasks (`tasks = ["math", "tasks-qa"]`) works through
the `llmlab data` commands, which read the tasks' rows (a stage above this one) and pass them in as texts.
"""

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

import regex

from llmlab.data.pipeline.stage import Doc, DocStage, StageStats

WORD = regex.compile(r"\w+")


def ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of lower-cased text; the whole text when it has fewer than n words.

    >>> ngrams("A b, C d", 3)
    ['a b c', 'b c d']
    """
    words = WORD.findall(text.lower())
    if len(words) < n:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]


def _strings(value) -> list[str]:
    """Every string inside a JSON value: a row's question, answer, messages' contents..."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def read_eval_texts(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"files: {path}: no such file")
    text = p.read_text(encoding="utf-8", errors="replace")
    if p.suffix != ".jsonl":
        return [text]
    return ["\n".join(_strings(json.loads(line))) for line in text.splitlines() if line.strip()]


@lru_cache(maxsize=4)
def _index(sources: tuple[tuple[str, tuple[str, ...]], ...], n: int, min_words: int) -> dict[str, str]:
    """n-gram -> the name of the first evaluation set it came from (built once per process)."""
    index: dict[str, str] = {}
    for name, texts in sources:
        for text in texts:
            for gram in ngrams(text, n):
                if gram.count(" ") + 1 >= min_words:
                    index.setdefault(gram, name)
    return index


@dataclasses.dataclass
class Decontaminate(DocStage):
    name = "decontaminate"
    ngram: int = 13
    files: list[str] = dataclasses.field(default_factory=list)
    tasks: list[str] = dataclasses.field(default_factory=list)
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # set name -> texts (tasks resolve here)
    action: str = "drop"
    min_words: int = 8  # shorter evaluation texts ("12", "Paris") would match everywhere

    def check(self) -> None:
        if self.action not in ("drop", "flag"):
            raise ValueError(f"action {self.action!r}: must be 'drop' or 'flag'")
        unresolved = [t for t in self.tasks if t not in self.texts]
        if unresolved:
            raise ValueError(f"tasks {', '.join(unresolved)}: evaluation tasks are read by the `llmlab data` "
                             "commands; from Python, pass their texts in `texts`")
        if not self.files and not self.texts:
            raise ValueError("give evaluation sets: files (JSONL or text) or tasks")
        for f in self.files:
            if not Path(f).is_file():
                raise ValueError(f"files: {f}: no such file")

    def index(self) -> dict[str, str]:
        sources = tuple((name, tuple(texts)) for name, texts in sorted(self.texts.items()))
        sources += tuple((Path(f).name, tuple(read_eval_texts(f))) for f in self.files)
        return _index(sources, self.ngram, self.min_words)

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        index = self.index()
        hits = {}
        for gram in ngrams(doc["text"], self.ngram):
            if gram in index:
                hits.setdefault(index[gram], gram)
        if not hits:
            return doc
        for name in hits:
            stats.counters[f"documents sharing n-grams with {name}"] += 1
        if self.action == "drop":
            name, gram = next(iter(hits.items()))
            stats.drop(doc, f"shares a {self.ngram}-gram with {name}", gram)
            return None
        stats.example("flagged", doc, ", ".join(hits))
        return {**doc, "contaminated": sorted(hits)}
