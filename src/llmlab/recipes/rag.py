"""`llmlab rag index|query|ask|eval|train-embedder|compare|word2vec`: retrieval from folder to answer.

    llmlab rag index --docs notes/ --out runs/index [--embedder all-minilm-l6-v2 --chunk-tokens 256 --index ivf]
    llmlab rag query --index runs/index --k 5 --mode hybrid --json "how do I ...?"
    llmlab rag ask --index runs/index --model smollm2-135m-instruct "how do I ...?"
    llmlab rag eval --index runs/index --questions labelled.jsonl        # rows {"question", "sources": [...]}

The labs (train-embedder, compare, word2vec) are `recipes/rag_lab.py`. The components are `llmlab.rag`
(chunking, embeddings, BM25, the vector index, RAG, metrics); this file loads the generator (`llmlab.load`),
wires them and prints.
"""

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.loading import load
from llmlab.rag.chunking import METHODS
from llmlab.rag.documents import read_documents
from llmlab.rag.embeddings import DEFAULT_MODEL
from llmlab.rag.index import MODES, Index
from llmlab.rag.metrics import retrieval_scores
from llmlab.rag.rag import answer_stream, format_sources
from llmlab.rag.vectors import KINDS


def _mode(mode: str) -> None:
    if mode not in MODES:
        raise UserError(f"--mode {mode}: choose one of {', '.join(MODES)}")


@dataclass
class IndexArgs:
    docs: str | None = arg(None, "folder (or file) of .txt, .md, .py or .jsonl documents (required)")
    out: str = arg("runs/rag/index", "the index folder to write")
    embedder: str = arg(DEFAULT_MODEL, "embedding model: an alias, a folder (e.g. train-embedder's --out) or hub id")
    chunk_tokens: int = arg(256, "most tokens per chunk, in the embedder's tokenizer (MiniLM reads 256)")
    overlap: int = arg(32, "tokens a chunk shares with the previous one")
    chunker: str = arg("auto", "fixed, recursive, markdown, or auto (markdown for .md, recursive otherwise)")
    index: str = arg("exact", "exact (matmul + top-k) or ivf (k-means cells, approximate)")
    int8: bool = arg(False, "store vectors as int8 (4x smaller, scores within about 1%)")
    nlist: int | None = arg(None, "IVF cells (default: about sqrt(chunks))")
    nprobe: int | None = arg(None, "IVF cells searched per query (default: an eighth of the cells, at least 8)")
    add: bool = arg(False, "add the documents to the index already at --out instead of starting anew")
    delete_source: list[str] = arg([], "remove every chunk of these sources from the index at --out")
    batch_size: int = arg(32, "texts per embedding batch")
    executor: str = arg("inprocess", "where embedding shards run: inprocess, local (processes) or dask")
    workers: int = arg(2, "worker processes for local or dask")


def index(args: IndexArgs) -> dict:
    if args.index not in KINDS:
        hint = "; HNSW is not implemented here, ivf is the approximate index" if args.index == "hnsw" else ""
        raise UserError(f"--index {args.index}: choose one of {', '.join(KINDS)}{hint}")
    if args.chunker not in METHODS:
        raise UserError(f"--chunker {args.chunker}: choose one of {', '.join(METHODS)}")
    out = Path(args.out)
    existing = args.add or args.delete_source
    if existing:
        ix = Index.open(out)
    elif (out / "index.json").exists():
        raise UserError(f"--out {out}: already holds an index; pass --add to add to it or choose a new --out")
    else:
        ix = Index(args.embedder, args.index, args.int8, args.nlist, args.nprobe, args.chunker, args.chunk_tokens,
                   args.overlap)
    removed = sum(ix.delete(source=s) for s in args.delete_source)
    added = 0
    start = time.perf_counter()
    if args.docs:
        added = ix.add_documents(read_documents(args.docs), args.batch_size, args.executor, args.workers)
    elif not args.delete_source:
        raise UserError("--docs: required (a folder of .txt, .md, .py or .jsonl files)")
    seconds = time.perf_counter() - start
    ix.save(out)
    summary = {"chunks": len(ix), "added": added, "removed": removed, "sources": len(ix.sources()),
               "seconds": seconds, "bytes": ix.size_bytes(), "index": str(out)}
    log.info(f"rag index: {added} chunks added, {removed} removed, {len(ix)} in {out} "
             f"({summary['bytes'] / 2**20:.1f} MiB, {seconds:.1f} s)")
    return summary


@dataclass
class QueryArgs:
    question: str = arg(None, "the question", positional=True)
    index: str = arg("runs/rag/index", "an index folder from `llmlab rag index`")
    k: int = arg(5, "how many chunks")
    mode: str = arg("dense", "dense, bm25 or hybrid (reciprocal rank fusion of both)")
    nprobe: int | None = arg(None, "IVF cells to search (default: the index's)")
    json: bool = arg(False, "print a JSON array of {source, text, score, id, start, end}, best first")


def query(args: QueryArgs) -> list[dict]:
    _mode(args.mode)
    if not args.question:
        raise UserError("QUESTION: give the question to search for")
    hits = Index.open(args.index).search(args.question, k=args.k, mode=args.mode, nprobe=args.nprobe)
    if args.json:
        print(json.dumps(hits, ensure_ascii=False))
    else:
        for n, h in enumerate(hits, 1):
            snippet = " ".join(h["text"].split())[:200]
            print(f"[{n}] {h['score']:.4f}  {h['source']} ({h['start']}-{h['end']})\n    {snippet}")
    return hits


@dataclass
class AskArgs:
    question: str = arg(None, "the question", positional=True)
    index: str = arg("runs/rag/index", "an index folder from `llmlab rag index`")
    model: str = arg("smollm2-135m-instruct", "the generator: anything `llmlab.load` opens")
    k: int = arg(5, "chunks retrieved")
    mode: str = arg("dense", "dense, bm25 or hybrid")
    context_tokens: int = arg(1024, "most tokens of numbered sources in the prompt")
    max_new_tokens: int = arg(256, "most tokens in the answer")
    temperature: float = arg(0.0, "0 is greedy")


def ask(args: AskArgs) -> dict:
    _mode(args.mode)
    if not args.question:
        raise UserError("QUESTION: give the question to answer")
    ix = Index.open(args.index)
    generator = load(args.model)
    pieces, result = answer_stream(generator, ix, args.question, k=args.k, mode=args.mode,
                                   context_tokens=args.context_tokens, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n\nSources:\n" + format_sources(result.sources) + "\n")
    return {"answer": result.text, "sources": result.sources}


@dataclass
class EvalArgs:
    index: str = arg("runs/rag/index", "an index folder from `llmlab rag index`")
    questions: str = arg(None, "JSONL rows {\"question\", \"sources\": [relevant sources]} (required)")
    ks: list[int] = arg([1, 5, 10], "cut-offs for recall@k and nDCG@k")
    modes: list[str] = arg(["dense", "bm25", "hybrid"], "retrievers to score")
    out: str | None = arg(None, "also write the scores to this JSON file")


def read_questions(path: str) -> list[dict]:
    p = Path(path or "")
    if not path or not p.is_file():
        raise UserError(f"--questions {path}: no such file; give JSONL rows {{\"question\", \"sources\"}}")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("question"), str) and isinstance(row.get("sources"), list)
                and row["sources"]):
            raise UserError(f"{p}:{lineno}: each row needs \"question\" (text) and \"sources\" (a non-empty list)")
        rows.append(row)
    if not rows:
        raise UserError(f"{p}: no questions in the file")
    return rows


def evaluate(args: EvalArgs) -> dict:
    rows = read_questions(args.questions)
    if not args.ks or min(args.ks) < 1:
        raise UserError(f"--ks {args.ks}: give cut-offs of at least 1")
    ix = Index.open(args.index)
    results = {}
    for mode in args.modes:
        _mode(mode)
        hits = ix.search_many([r["question"] for r in rows], k=max(args.ks) * 3, mode=mode)  # room for repeats
        runs = [([h["source"] for h in hs], set(r["sources"])) for hs, r in zip(hits, rows, strict=True)]
        results[mode] = retrieval_scores(runs, args.ks)
    keys = list(next(iter(results.values())))
    lines = ["| mode | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{v[k]:.3f}" for k in keys) + " |" for m, v in results.items()]
    print("\n".join(lines))
    if args.out:
        write_json_atomic(args.out, {"questions": len(rows), "scores": results})
    return results
