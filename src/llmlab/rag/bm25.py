"""BM25 lexical retrieval, Lucene's variant, written here; scores equal `bm25s` (method "lucene") on the same tokens.

For a query with tokens q (repeats count again) and a document d of length |d| (tokens) in a corpus of N
documents of average length avgdl (Robertson & Zaragoza 2009; Lucene's form, Kamphuis et al. 2020):

    score(q, d) = sum over t in q of  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          (never negative, unlike Robertson's)

Storage is a document -> (term, count) table (`terms`, `tfs`, `offsets`, CSR), which appends cheaply; the
term -> documents postings that scoring reads are built from it lazily (a stable argsort). Deleted documents
are dropped from the table, so N, avgdl and df are always those of the live corpus (what bm25s gives when
indexed again without them). `tokenize` is a plain lowercase word splitter with a short English stop list;
the embedder's tokenizer is not used because BM25 wants whole words. This file does not fuse with dense
results: `hybrid.py` does.
"""

import math
import re
from collections import Counter

import torch

from llmlab.common.errors import UserError

STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with what which who how does do".split())
WORD = re.compile(r"\w+")


def tokenize(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lowercase word tokens, stop words left out.

    >>> tokenize("What does the zip() function do?")
    ['zip', 'function']
    """
    return [w for w in WORD.findall(text.lower()) if w not in stopwords]


class BM25:
    """Lucene BM25 over token lists; `add`, `delete` by position, `scores(query_tokens)` -> (N,) tensor."""

    def __init__(self, k1: float = 1.5, b: float = 0.75):
        if k1 < 0 or not 0 <= b <= 1:
            raise UserError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={k1}, b={b})")
        self.k1, self.b = k1, b
        self.vocab: dict[str, int] = {}
        self.terms = torch.empty(0, dtype=torch.int64)  # term id of each (document, term) entry
        self.tfs = torch.empty(0, dtype=torch.float32)  # its count in the document
        self.offsets = torch.zeros(1, dtype=torch.int64)  # document i's entries: offsets[i]:offsets[i + 1]
        self.lengths = torch.empty(0, dtype=torch.float32)  # tokens per document, repeats included
        self._postings: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, docs: list[list[str]]) -> None:
        """Append documents (token lists); they take the next positions."""
        terms, tfs, sizes = [], [], []
        for tokens in docs:
            counts = Counter(self.vocab.setdefault(t, len(self.vocab)) for t in tokens)
            terms += counts.keys()
            tfs += counts.values()
            sizes.append(len(counts))
        self.terms = torch.cat([self.terms, torch.tensor(terms, dtype=torch.int64)])
        self.tfs = torch.cat([self.tfs, torch.tensor(tfs, dtype=torch.float32)])
        self.offsets = torch.cat([self.offsets, self.offsets[-1] + torch.tensor(sizes, dtype=torch.int64).cumsum(0)])
        self.lengths = torch.cat([self.lengths, torch.tensor([float(len(d)) for d in docs])])
        self._postings = None

    def delete(self, keep: torch.Tensor) -> None:
        """Keep only the documents where `keep` (N,) bool is True; the rest move up in order."""
        sizes = self.offsets.diff()
        entry_keep = keep.repeat_interleave(sizes)  # (entries,)
        self.terms, self.tfs = self.terms[entry_keep], self.tfs[entry_keep]
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes[keep].cumsum(0)])
        self.lengths = self.lengths[keep]
        self._postings = None

    def postings(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(start of each term's postings (V + 1,), document of each posting, its count), sorted by term."""
        if self._postings is None:
            order = torch.argsort(self.terms, stable=True)
            docs = torch.arange(len(self)).repeat_interleave(self.offsets.diff())[order]
            starts = torch.zeros(len(self.vocab) + 1, dtype=torch.int64)
            starts[1:] = torch.bincount(self.terms, minlength=len(self.vocab)).cumsum(0)
            self._postings = (starts, docs, self.tfs[order])
        return self._postings

    def scores(self, query: list[str]) -> torch.Tensor:
        """BM25 of every document (N,) float32 for the query's tokens; tokens not in the corpus add nothing."""
        out = torch.zeros(len(self))
        if not len(self):
            return out
        starts, docs, tfs = self.postings()
        n, avgdl = len(self), float(self.lengths.mean())
        norm = self.k1 * (1 - self.b + self.b * self.lengths / max(avgdl, 1e-9))  # (N,)
        for term, repeats in Counter(query).items():
            t = self.vocab.get(term)
            if t is None:
                continue
            d, tf = docs[starts[t]:starts[t + 1]], tfs[starts[t]:starts[t + 1]]
            idf = math.log(1 + (n - len(d) + 0.5) / (len(d) + 0.5))
            out.index_add_(0, d, repeats * idf * tf / (tf + norm[d]))
        return out

    def search(self, query: list[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, positions) of the k best documents, best first; documents scoring 0 are left out."""
        s = self.scores(query)
        top = s.topk(min(k, len(s)))
        hit = top.values > 0
        return top.values[hit], top.indices[hit]

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Tensors and JSON-able fields to save (safetensors + JSON, nothing pickled)."""
        tensors = {"terms": self.terms, "tfs": self.tfs, "offsets": self.offsets, "lengths": self.lengths}
        vocab = sorted(self.vocab, key=self.vocab.get)
        return tensors, {"k1": self.k1, "b": self.b, "vocab": vocab}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], fields: dict) -> "BM25":
        bm = cls(fields["k1"], fields["b"])
        bm.vocab = {t: i for i, t in enumerate(fields["vocab"])}
        bm.terms, bm.tfs, bm.offsets, bm.lengths = (tensors[k] for k in ("terms", "tfs", "offsets", "lengths"))
        return bm
