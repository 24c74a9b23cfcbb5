"""Retrieval: documents -> chunks -> embeddings -> a vector index (+ BM25) -> retrieval-augmented generation.

    from llmlab.rag import Index, embed
    vectors = embed(["a sentence"])                   # (N, 384), all-MiniLM-L6-v2, normalised
    hits = Index.open("runs/index").search("question", k=5, mode="hybrid")

documents.py (folders in), chunking.py (token windows, recursive, Markdown), embeddings.py (encoders and
decoders, sharded), bm25.py, hybrid.py (reciprocal rank fusion), vectors.py (exact and IVF, int8), index.py
(the index folder), rag.py (prompt with numbered sources, generation), metrics.py (recall@k, MRR, nDCG),
knowledge.py (the built-in Python-docs question set), lab.py (RAG against fine-tuning), contrastive.py
(training an embedder with in-batch negatives), word2vec.py (skip-gram with negative sampling).
Models come in as arguments or by name through `llmlab.models.pretrained`; `llmlab.load` is a layer above.
"""

from llmlab.rag.embeddings import embed
from llmlab.rag.index import Index

__all__ = ["Index", "embed"]
