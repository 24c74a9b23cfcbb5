"""Mixing sources: up- and down-sampling per source, by epochs or by temperature, with tokens counted.

Two ways to say how much of each source the output holds:

- `weights = {web = 0.5, code = 3}`: epochs per source. 3 repeats every `code` document three times, 0.5
  keeps each `web` document with probability one half; a source not named keeps weight 1.
- `temperature = T`: sample source i in proportion to n_i^(1/T), where n_i is its token count
  (Arivazhagan et al. 2019; Conneau et al. 2020, XLM-R, used this to upsample small languages).
  T = 1 keeps the natural mix, larger T flattens it towards uniform. The output holds `total_tokens`
  (default: as many as the input), so each source's rate is target_i / n_i.

A rate r gives each document floor(r) copies plus one more with probability frac(r). The coin is a hash of
the document's id and the seed, so the same document gets the same copies on every executor and shard
layout. Copies after the first carry `repeat: k`, and keep their id so a split by id keeps them together.
"""

import dataclasses
import hashlib

import numpy as np

from llmlab.data.pipeline.filters import count_tokens
from llmlab.data.pipeline.stage import Doc, GlobalStage, StageStats, Summary


def uniform(doc_id: str, seed: int) -> float:
    """A stable number in [0, 1) for a document: the same on every machine and run."""
    h = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def temperature_rates(tokens: dict[str, int], temperature: float, total: int | None = None) -> dict[str, float]:
    """Per-source sampling rates for p_i ∝ n_i^(1/T), scaled to `total` tokens.

    >>> {k: round(v, 3) for k, v in temperature_rates({"a": 900, "b": 100}, 1.0).items()}
    {'a': 1.0, 'b': 1.0}
    >>> {k: round(v, 3) for k, v in temperature_rates({"a": 900, "b": 100}, 1e9).items()}
    {'a': 0.556, 'b': 5.0}
    """
    present = {s: n for s, n in tokens.items() if n > 0}
    total = sum(present.values()) if total is None else total
    mass = {s: n ** (1.0 / temperature) for s, n in present.items()}
    z = sum(mass.values())
    return {s: total * mass[s] / z / present[s] for s in present}


def copies(rate: float, u: float) -> int:
    """floor(rate), plus one when the document's coin u falls below the fractional part."""
    whole = int(rate)
    return whole + (u < rate - whole)


@dataclasses.dataclass
class Mix(GlobalStage):
    name = "mix"
    weights: dict[str, float] = dataclasses.field(default_factory=dict)
    temperature: float | None = None
    total_tokens: int | None = None
    tokenizer: str = "bytes"
    seed: int = 0

    def check(self) -> None:
        if self.weights and self.temperature is not None:
            raise ValueError("give weights (epochs per source) or a temperature, not both")
        if not self.weights and self.temperature is None:
            raise ValueError("give weights (epochs per source, e.g. {web = 0.5, code = 2}) or a temperature")
        if any(not isinstance(w, int | float) or w < 0 for w in self.weights.values()):
            raise ValueError(f"weights {self.weights}: each must be a number >= 0")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature}: must be > 0")

    def collect(self, docs: list[Doc]) -> Summary:
        return {"ids": np.array([d["id"] for d in docs], dtype=str),
                "source": np.array([d["source"] for d in docs], dtype=str),
                "tokens": np.array([count_tokens(d["text"], self.tokenizer) for d in docs], dtype=np.int64)}

    def decide(self, summaries: list[Summary], stats: StageStats) -> list[Summary]:
        tokens_in: dict[str, int] = {}
        for s in summaries:
            for src, n in zip(s["source"].tolist(), s["tokens"].tolist(), strict=True):
                tokens_in[src] = tokens_in.get(src, 0) + n
        if self.temperature is not None:
            rates = temperature_rates(tokens_in, self.temperature, self.total_tokens)
        else:
            rates = {src: float(self.weights.get(src, 1.0)) for src in tokens_in}
        tokens_out = dict.fromkeys(tokens_in, 0)
        decisions = []
        for s in summaries:
            n = np.array([copies(rates.get(src, 0.0), uniform(i, self.seed))
                          for i, src in zip(s["ids"].tolist(), s["source"].tolist(), strict=True)], dtype=np.int64)
            for src, k, t in zip(s["source"].tolist(), n.tolist(), s["tokens"].tolist(), strict=True):
                tokens_out[src] += k * t
            decisions.append({"copies": n})
        stats.info.update({"rates": rates, "tokens in per source": tokens_in, "tokens out per source": tokens_out,
                           "token unit": self.tokenizer,
                           "weights naming no source": sorted(set(self.weights) - set(tokens_in))})
        return decisions

    def apply_decision(self, docs: list[Doc], decision: Summary, stats: StageStats) -> list[Doc]:
        out = []
        for doc, k in zip(docs, decision["copies"].tolist(), strict=True):
            stats.seen(doc)
            if k == 0:
                stats.drop(doc, f"down-sampled {doc['source']}")
            for r in range(k):
                copy = doc if r == 0 else {**doc, "repeat": r}
                stats.kept(copy)
                out.append(copy)
        return out
