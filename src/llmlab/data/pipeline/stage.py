"""What a pipeline is made of: documents, the two kinds of stage, and the counts each stage keeps.

A document is a plain dict: `{"id": str, "text": str, "source": str}` plus any metadata its reader
found (FineWeb's `url`, `date`, `language`, ...). Stages return new dicts; they never mutate their input.

- A `DocStage` looks at one document at a time: `apply(doc, stats)` returns the document (maybe changed)
  or None to drop it. Normalisers, filters, PII redaction and decontamination are DocStages; they run
  shard by shard on any executor with no coordination.
- A `GlobalStage` needs to see every shard before it can decide (deduplication, mixing). It runs in three
  steps, like datatrove's MinHash stages: `collect(docs)` makes a small per-shard summary (hashes, band
  keys, token counts) in the workers; `decide(summaries, stats)` runs once on the driver over all of them
  and returns one small decision per shard; `apply_decision(docs, decision, stats)` runs in the workers
  again. Summaries and decisions are dicts of numpy arrays, so they travel to workers and to disk as-is.

`StageStats` counts documents and bytes in and out, drop reasons with the first few examples, and
free-form counters (PII found, documents changed). Stats from different shards add up with `merge`, in
shard order, so a report does not depend on which worker finished first.
"""

import dataclasses
from collections import Counter
from typing import Any, ClassVar

import numpy as np

Doc = dict[str, Any]
Summary = dict[str, np.ndarray]
N_EXAMPLES = 3  # examples kept per drop reason: enough to see what a rule catches, small enough to read
SNIPPET_CHARS = 160


def snippet(text: str, n: int = SNIPPET_CHARS) -> str:
    """The start of a text on one line, for reports: 'a\\n  b' -> 'a b'."""
    flat = " ".join(text[: n * 2].split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


@dataclasses.dataclass
class StageStats:
    """Counts for one stage over one or more shards."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)
    examples: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    counters: Counter = dataclasses.field(default_factory=Counter)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # stage-specific report data (clusters, ...)
    seconds: float = 0.0

    def seen(self, doc: Doc) -> None:
        self.docs_in += 1
        self.bytes_in += len(doc["text"].encode("utf-8"))

    def kept(self, doc: Doc) -> None:
        self.docs_out += 1
        self.bytes_out += len(doc["text"].encode("utf-8"))

    def drop(self, doc: Doc, reason: str, detail: str = "") -> None:
        """Count a dropped document under `reason`; keep it as an example while there are few."""
        self.dropped[reason] += 1
        self.example(reason, doc, detail)

    def example(self, key: str, doc: Doc, detail: str = "") -> None:
        examples = self.examples.setdefault(key, [])
        if len(examples) < N_EXAMPLES:
            examples.append({"id": doc["id"], "text": snippet(doc["text"]), **({"detail": detail} if detail else {})})

    def merge(self, other: "StageStats") -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.dropped.update(other.dropped)
        self.counters.update(other.counters)
        for key, examples in other.examples.items():
            mine = self.examples.setdefault(key, [])
            mine.extend(examples[: N_EXAMPLES - len(mine)])
        self.info.update(other.info)
        self.seconds += other.seconds

    def to_dict(self) -> dict:
        return {"name": self.name, "docs_in": self.docs_in, "docs_out": self.docs_out, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "dropped": dict(self.dropped), "examples": self.examples,
                "counters": dict(self.counters), "info": self.info, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict) -> "StageStats":
        return cls(name=d["name"], docs_in=d["docs_in"], docs_out=d["docs_out"], bytes_in=d["bytes_in"],
                   bytes_out=d["bytes_out"], dropped=Counter(d["dropped"]), examples=d["examples"],
                   counters=Counter(d["counters"]), info=d.get("info", {}), seconds=d.get("seconds", 0.0))


class Stage:
    """A named pipeline step whose options are its dataclass fields (so a TOML table can build it)."""

    name: ClassVar[str] = ""

    def options(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def check(self) -> None:
        """Raise ValueError naming the option when a value makes no sense; called when a pipeline is built."""


class DocStage(Stage):
    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        raise NotImplementedError

    def run(self, docs: list[Doc], stats: StageStats) -> list[Doc]:
        out = []
        for doc in docs:
            stats.seen(doc)
            new = self.apply(doc, stats)
            if new is not None:
                stats.kept(new)
                out.append(new)
        return out


class GlobalStage(Stage):
    def collect(self, docs: list[Doc]) -> Summary:
        raise NotImplementedError

    def decide(self, summaries: list[Summary], stats: StageStats) -> list[Summary]:
        raise NotImplementedError

    def apply_decision(self, docs: list[Doc], decision: Summary, stats: StageStats) -> list[Doc]:
        raise NotImplementedError
