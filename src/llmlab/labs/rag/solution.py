"""Lab: retrieval, the reference solution: llmlab's own retrieval code (llmlab.rag) behind the lab's names.

`chunk` is `fixed_spans` counting words; `mean_pool` is the BERT encoder's mean pooling, normalised as
`Embedder` does; `search` is the exact `VectorIndex` (an inner-product index, so the vectors go in
normalised); `bm25_scores` is llmlab's BM25, held equal to bm25s; `reciprocal_rank_fusion` is the hybrid
search's, as it is.
"""

import torch
import torch.nn.functional as F

from llmlab.models.bert import Bert
from llmlab.rag.bm25 import BM25
from llmlab.rag.chunking import fixed_spans, word_count
from llmlab.rag.embeddings import Embedder
from llmlab.rag.hybrid import reciprocal_rank_fusion
from llmlab.rag.vectors import VectorIndex

__all__ = ["chunk", "mean_pool", "search", "bm25_scores", "reciprocal_rank_fusion"]


def chunk(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    return [(start, end) for start, end, _meta in fixed_spans(text, word_count, size, overlap)]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.normalize(Bert.pool(None, hidden, mask, "mean"), p=2, dim=-1)  # pool reads nothing of the model


def search(queries: torch.Tensor, docs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = VectorIndex(docs.shape[1], "exact")
    index.add(F.normalize(docs.float(), dim=-1), torch.arange(len(docs)))
    return index.search(F.normalize(queries.float(), dim=-1), k)


def bm25_scores(query: list[str], docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> torch.Tensor:
    index = BM25(k1, b)
    index.add(docs)
    return index.scores(query)


LLMLAB_CODE = [fixed_spans, Bert.pool, Embedder.__call__, VectorIndex.search, BM25.scores,
               reciprocal_rank_fusion]  # printed by `llmlab labs solution rag`
