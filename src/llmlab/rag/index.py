"""An index folder: chunks with their text and sources, their vectors, and BM25 over their words.

    index.json           what the folder holds: format, embedder name, chunking, vector and BM25 settings
    vectors.safetensors  the vector index (`vectors.VectorIndex`): vectors (float32 or int8 + scales), chunk ids,
                         IVF centroids and cells
    bm25.safetensors     BM25's document -> (term, count) table (`bm25.BM25`) and the chunk id of each row;
                         its vocabulary is in bm25.json
    chunks.sqlite        one row per chunk: id, source, start, end, text, metadata (JSON)

Everything opens without unpickling: JSON, safetensors and SQLite. A folder is written to a temporary
sibling and swapped in by rename (`llmlab.common.checkpoint.write_folder_atomically`), so an interrupted
save leaves the previous index whole. `Index.open(path).search(question, k, mode)` returns dicts
{"source", "text", "score", "id", "start", "end"}, best first; mode "dense" (embedding inner product),
"bm25" or "hybrid" (reciprocal rank fusion of both). The embedder is loaded by name on the first dense
search, so BM25 queries never load a model. Chunks are added (`add_documents`, `add_chunks`) and deleted
(by id or by source) in place; `save` writes the folder again.
"""

import json
import sqlite3
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llmlab.common.checkpoint import write_folder_atomically
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.rag.bm25 import BM25, tokenize
from llmlab.rag.chunking import Chunk, chunk_documents, token_counter
from llmlab.rag.embeddings import DEFAULT_MODEL, Embedder, as_embedder, embed_sharded
from llmlab.rag.hybrid import reciprocal_rank_fusion
from llmlab.rag.vectors import VectorIndex

FORMAT = "llmlab-rag-index"
MODES = ("dense", "bm25", "hybrid")
META, VECTORS, BM25_TENSORS, BM25_JSON, CHUNKS = ("index.json", "vectors.safetensors", "bm25.safetensors",
                                                  "bm25.json", "chunks.sqlite")
SCHEMA = ("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, source TEXT NOT NULL, start INTEGER, "
          "end INTEGER, text TEXT NOT NULL, meta TEXT); CREATE INDEX IF NOT EXISTS by_source ON chunks(source);")
HYBRID_DEPTH = 4  # hybrid fuses each retriever's top 4k (at least 20): a chunk ranked 6th by both can still win


class Index:
    """Chunks + vectors + BM25; see the module docstring for the folder and `search` for results."""

    def __init__(self, embedder: str | Any = DEFAULT_MODEL, kind: str = "exact", int8: bool = False,
                 nlist: int | None = None, nprobe: int | None = None, chunker: str = "auto", chunk_tokens: int = 256,
                 overlap: int = 32, dim: int | None = None):
        self._embedder = embedder if not isinstance(embedder, str) else None
        self.embedder_name = embedder if isinstance(embedder, str) else (
            getattr(embedder, "name", "") or getattr(embedder, "source", "") or "custom")
        self.chunking = {"chunker": chunker, "chunk_tokens": chunk_tokens, "overlap": overlap}
        self._settings = {"kind": kind, "int8": int8, "nlist": nlist, "nprobe": nprobe}
        self.vectors: VectorIndex | None = VectorIndex(dim, kind, int8, nlist, nprobe) if dim else None
        self.bm25 = BM25()
        self.bm25_ids = torch.empty(0, dtype=torch.int64)  # chunk id of each BM25 row
        self.next_id = 0
        self.db = sqlite3.connect(":memory:")
        self.db.executescript(SCHEMA)
        self.path: Path | None = None

    # ---- the embedder -------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = as_embedder(self.embedder_name)
        elif not isinstance(self._embedder, Embedder):
            self._embedder = as_embedder(self._embedder)
        return self._embedder

    def embed(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        return self.embedder(texts, batch_size)

    def __len__(self) -> int:
        return len(self.bm25_ids)

    # ---- adding and deleting ------------------------------------------------------------------------

    def add_documents(self, docs: list, batch_size: int = 32, executor: str = "inprocess", workers: int = 2,
                      shard_size: int = 2048) -> int:
        """Chunk documents with the index's settings, embed the chunks and add them; returns how many.

        executor "local" or "dask" embeds shard by shard in worker processes that load the embedder by name."""
        count = token_counter(self.embedder.tokenizer)
        chunks = chunk_documents(docs, self.chunking["chunker"], self.chunking["chunk_tokens"],
                                 self.chunking["overlap"], count)
        texts = [c.text for c in chunks]
        if executor != "inprocess" and isinstance(self.embedder_name, str) and self._embedder_is_named():
            vectors = embed_sharded(texts, self.embedder_name, shard_size, executor, workers, batch_size)
        else:
            vectors = self.embed(texts, batch_size)
        self.add_chunks(chunks, vectors)
        return len(chunks)

    def _embedder_is_named(self) -> bool:
        return self._embedder is None or getattr(self._embedder, "name", "") == self.embedder_name

    def add_chunks(self, chunks: list[Chunk], vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Add chunks (with their vectors, or embedded here); returns their new ids."""
        if vectors is None:
            vectors = self.embed([c.text for c in chunks])
        if len(vectors) != len(chunks):
            raise UserError(f"add_chunks: {len(chunks)} chunks but {len(vectors)} vectors")
        ids = torch.arange(self.next_id, self.next_id + len(chunks), dtype=torch.int64)
        if self.vectors is None:
            self.vectors = VectorIndex(vectors.shape[1], **self._settings)
        self.vectors.add(vectors, ids)
        self.bm25.add([tokenize(c.text) for c in chunks])
        self.bm25_ids = torch.cat([self.bm25_ids, ids])
        self.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                            [(int(i), c.source, c.start, c.end, c.text, json.dumps(c.meta))
                             for i, c in zip(ids, chunks, strict=True)])
        self.next_id += len(chunks)
        return ids

    def delete(self, ids: list[int] | None = None, source: str | None = None) -> int:
        """Remove chunks by id, or every chunk of a source; returns how many were removed."""
        if source is not None:
            ids = [r[0] for r in self.db.execute("SELECT id FROM chunks WHERE source = ?", (source,))]
        ids = torch.as_tensor(list(ids or []), dtype=torch.int64)
        keep = ~torch.isin(self.bm25_ids, ids)
        removed = int((~keep).sum())
        if removed:
            self.bm25.delete(keep)
            self.bm25_ids = self.bm25_ids[keep]
            self.vectors.delete(ids)
            self.db.executemany("DELETE FROM chunks WHERE id = ?", [(int(i),) for i in ids])
        return removed

    # ---- searching ----------------------------------------------------------------------------------

    def _rows(self, ids: list[int]) -> dict[int, dict]:
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT id, source, start, end, text FROM chunks WHERE id IN ({marks})", ids)
        return {r[0]: {"source": r[1], "text": r[4], "id": r[0], "start": r[2], "end": r[3]} for r in rows}

    def search(self, question: str, k: int = 5, mode: str = "dense", nprobe: int | None = None) -> list[dict]:
        """The k best chunks for a question: [{"source", "text", "score", "id", "start", "end"}], best first."""
        return self.search_many([question], k, mode, nprobe)[0]

    def search_many(self, questions: list[str], k: int = 5, mode: str = "dense", nprobe: int | None = None,
                    batch_size: int = 32) -> list[list[dict]]:
        if mode not in MODES:
            raise UserError(f"mode {mode!r} is unknown; choose one of {', '.join(MODES)}")
        if k < 1:
            raise UserError(f"k={k}: must be at least 1")
        if not len(self):
            return [[] for _ in questions]
        depth = k if mode != "hybrid" else max(HYBRID_DEPTH * k, 20)
        ranked: list[list[tuple[int, float]]] = []
        dense = self._dense(questions, depth, nprobe, batch_size) if mode != "bm25" else None
        for qi, question in enumerate(questions):
            lexical = self._lexical(question, depth) if mode != "dense" else None
            if mode == "hybrid":
                ranked.append(reciprocal_rank_fusion([[i for i, _ in dense[qi]], [i for i, _ in lexical]], limit=k))
            else:
                ranked.append(dense[qi] if mode == "dense" else lexical)
        rows = self._rows(sorted({i for r in ranked for i, _ in r}))
        return [[{**rows[i], "score": float(s)} for i, s in r][:k] for r in ranked]

    def _dense(self, questions: list[str], k: int, nprobe: int | None, batch_size: int
               ) -> list[list[tuple[int, float]]]:
        scores, ids = self.vectors.search(self.embed(questions, batch_size), k, nprobe)
        return [[(int(i), float(s)) for s, i in zip(srow, irow, strict=True) if i >= 0]
                for srow, irow in zip(scores, ids, strict=True)]

    def _lexical(self, question: str, k: int) -> list[tuple[int, float]]:
        scores, rows = self.bm25.search(tokenize(question), k)
        return [(int(self.bm25_ids[r]), float(s)) for s, r in zip(scores, rows, strict=True)]

    def sources(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT source FROM chunks ORDER BY source")]

    def chunk(self, chunk_id: int) -> dict:
        return self._rows([chunk_id])[chunk_id]

    # ---- the folder ---------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "embedder": self.embedder_name, "chunking": self.chunking,
                "count": len(self), "next_id": self.next_id,
                "vectors": self.vectors.state()[1] if self.vectors else {**self._settings, "dim": None}}

    def save(self, path: str | Path) -> None:
        """Write the folder atomically (a temporary sibling swapped in by rename)."""
        def fill(tmp: Path) -> None:
            if self.vectors is not None:
                save_file(self.vectors.state()[0], tmp / VECTORS)
            tensors, fields = self.bm25.state()
            save_file({**tensors, "chunk_ids": self.bm25_ids}, tmp / BM25_TENSORS)
            write_json_atomic(tmp / BM25_JSON, fields)
            self.db.commit()  # a pending write transaction would make the backup wait for its lock forever
            out = sqlite3.connect(tmp / CHUNKS)
            self.db.backup(out)
            out.close()
            write_json_atomic(tmp / META, self.meta())

        write_folder_atomically(path, fill)
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path, embedder: Any = None) -> "Index":
        """An index folder `save` wrote; `embedder` overrides the named one (a model already loaded)."""
        path = Path(path)
        if not (path / META).is_file():
            raise UserError(f"{path}: not an index folder (no {META}); build one with `llmlab rag index`")
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path / META}: corrupt ({e.msg}); build the index again") from None
        if meta.get("format") != FORMAT:
            raise UserError(f"{path / META}: format {meta.get('format')!r} is not {FORMAT!r}")
        v = meta["vectors"]
        index = cls(embedder or meta["embedder"], v["kind"], v["int8"], v["nlist"], v["nprobe"],
                    **meta["chunking"])
        index.embedder_name, index.next_id = meta["embedder"], meta["next_id"]
        if (path / VECTORS).is_file():
            index.vectors = VectorIndex.from_state(load_file(path / VECTORS), v)
        tensors = load_file(path / BM25_TENSORS)
        index.bm25_ids = tensors.pop("chunk_ids")
        index.bm25 = BM25.from_state(tensors, json.loads((path / BM25_JSON).read_text(encoding="utf-8")))
        disk = sqlite3.connect(f"file:{path / CHUNKS}?mode=ro", uri=True)
        disk.backup(index.db)  # into memory: adds and deletes touch the folder only when saved
        disk.close()
        if len(index.bm25_ids) != meta["count"] or (index.vectors and len(index.vectors) != meta["count"]):
            raise UserError(f"{path}: {meta['count']} chunks in {META} but the files hold a different number; "
                            "the folder is damaged: build the index again")
        index.path = path
        return index

    def size_bytes(self) -> int:
        """Bytes on disk of the saved folder (0 before it is saved)."""
        return sum(f.stat().st_size for f in self.path.iterdir()) if self.path else 0
