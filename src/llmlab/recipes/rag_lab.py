"""`llmlab rag train-embedder|compare|word2vec`: the retrieval labs, each writing a report into `--out`.

    llmlab rag train-embedder --out runs/embedder   # InfoNCE on the knowledge set's pairs; recall@5 before/after
    llmlab rag compare --out runs/rag-vs-ft         # base closed-book, fine-tuned, base + RAG, fine-tuned + RAG
    llmlab rag word2vec --out runs/word2vec         # skip-gram on Python's own text: neighbours, analogies

All three use the built-in knowledge set (`llmlab.rag.knowledge`: Python's pydoc topics and module
docstrings, about 100 questions with sources, 20 % held out) or Python's own corpus, so they run offline.
`train-embedder` writes an llmlab checkpoint that `llmlab rag index --embedder OUT` reads.
"""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llmlab.common import checkpoint, log
from llmlab.common.config import arg
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.data.sources import default_corpus, read_documents
from llmlab.loading import load
from llmlab.rag import contrastive, knowledge, lab
from llmlab.rag import word2vec as w2v
from llmlab.rag.chunking import chunk_documents, token_counter
from llmlab.rag.embeddings import DEFAULT_MODEL, Embedder
from llmlab.rag.index import MODES, Index
from llmlab.rag.metrics import retrieval_scores
from llmlab.train.plot import plot_loss_curve


def _corpus(ks: knowledge.KnowledgeSet, max_docs: int | None) -> list:
    """The knowledge documents; with max_docs, every question's source first, then others up to max_docs."""
    if not max_docs:
        return ks.documents
    needed = {q.source for q in ks.train + ks.test}
    docs = [d for d in ks.documents if d.source in needed]
    return docs + [d for d in ks.documents if d.source not in needed][:max(max_docs - len(docs), 0)]


def _recall(embedder: Embedder, docs: list, pairs: list, k: int, chunk_tokens: int) -> dict:
    ix = Index(embedder, chunk_tokens=chunk_tokens, overlap=chunk_tokens // 8)
    ix.add_documents(docs)
    hits = ix.search_many([q.question for q in pairs], k=k)
    return retrieval_scores([([h["source"] for h in hs], {q.source}) for hs, q in zip(hits, pairs, strict=True)],
                            (1, k))


@dataclass
class TrainEmbedderArgs:
    out: str = arg("runs/rag/embedder", "folder for the trained encoder (an llmlab checkpoint) and report.md")
    base: str = arg(DEFAULT_MODEL, "the encoder to start from")
    pairs: str | None = arg(None, "JSONL rows {\"question\", \"passage\"}; default: the knowledge set's training "
                                  "questions with the first chunk of their source")
    steps: int = arg(60, "optimizer steps")
    batch_size: int = arg(16, "pairs per step: each question's negatives are the other passages in the batch")
    lr: float = arg(5e-5, "peak learning rate")
    k: int = arg(5, "recall@k on the held-out questions, before and after")
    chunk_tokens: int = arg(128, "chunk size of the index used to measure recall")
    max_docs: int | None = arg(None, "use at most this many knowledge documents (every question's source kept)")
    seed: int = arg(0, "seed for batches and weights")
    progress: bool = arg(True, "show a progress bar")


def _read_pairs(path: str) -> list[tuple[str, str]]:
    import json

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--pairs {path}: no such file; give JSONL rows {{\"question\", \"passage\"}}")
    out = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                out.append((row["question"], row["passage"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{p}:{lineno}: each row needs string fields \"question\" and \"passage\"") from None
    return out


def train_embedder(args: TrainEmbedderArgs) -> dict:
    out = Path(args.out)
    ks = knowledge.knowledge_set()
    docs = _corpus(ks, args.max_docs)
    loaded = load(args.base)
    if not (hasattr(loaded.model, "encode") and hasattr(loaded.model, "pool")):
        raise UserError(f"--base {args.base}: is not an encoder; train-embedder fine-tunes a BERT-style model")
    embedder = Embedder(loaded.model, loaded.tokenizer, name=args.base)
    if args.pairs:
        pairs = _read_pairs(args.pairs)
    else:
        by_source = {}
        for c in chunk_documents(docs, "auto", args.chunk_tokens, 0, token_counter(loaded.tokenizer)):
            by_source.setdefault(c.source, c.text)  # each source's first chunk
        pairs = [(q.question, by_source[q.source]) for q in ks.train if q.source in by_source]
    before = _recall(embedder, docs, ks.test, args.k, args.chunk_tokens)
    log.info(f"train-embedder: held-out recall@{args.k} before: {before[f'recall@{args.k}']:.3f}")
    start = time.perf_counter()
    state = contrastive.train_embedder(loaded.model, loaded.tokenizer, pairs, args.steps, args.batch_size, args.lr,
                                       seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    after = _recall(Embedder(loaded.model, loaded.tokenizer, name=str(out)), docs, ks.test, args.k, args.chunk_tokens)
    checkpoint.save_checkpoint(out, loaded.model, {"run": asdict(args), "state": state.to_dict()},
                               tokenizer=loaded.tokenizer)
    plot_loss_curve(state.history, out / "loss.png", "InfoNCE loss (in-batch negatives)")
    key = f"recall@{args.k}"
    result = {"pairs": len(pairs), "held_out": len(ks.test), "seconds": seconds, "before": before, "after": after,
              "final_loss": state.history[-1]["loss"]}
    write_json_atomic(out / "summary.json", result)
    write_text_atomic(out / "report.md", (
        f"# Contrastive fine-tuning of {args.base}\n\n![loss](loss.png)\n\n"
        f"{len(pairs)} (question, passage) pairs, {args.steps} steps of {args.batch_size} with in-batch negatives "
        f"(InfoNCE, scale 20), {seconds:.0f} s.\n\n| held-out ({len(ks.test)} questions) | before | after |\n"
        "|---|---|---|\n" + "\n".join(f"| {m} | {before[m]:.3f} | {after[m]:.3f} |" for m in before) + "\n\n"
        f"Use it: `llmlab rag index --docs DIR --embedder {out}`.\n"))
    log.info(f"train-embedder: {key} {before[key]:.3f} -> {after[key]:.3f}; encoder in {out}")
    return result


@dataclass
class CompareArgs:
    out: str = arg("runs/rag/compare", "folder for report.md, compare.png, compare.json and the index")
    model: str = arg("smollm2-135m-instruct", "the base generator (anything `llmlab.load` opens)")
    embedder: str = arg(DEFAULT_MODEL, "embedding model for the index")
    method: str = arg("lora", "fine-tuning method: lora or full")
    steps: int = arg(60, "fine-tuning steps")
    lr: float | None = arg(None, "fine-tuning learning rate (default: lora 2e-3, full 5e-5)")
    batch_size: int = arg(8, "packed rows per fine-tuning step")
    seq_len: int = arg(256, "tokens per packed row")
    k: int = arg(3, "chunks retrieved per question")
    mode: str = arg("dense", "dense, bm25 or hybrid")
    chunk_tokens: int = arg(128, "chunk size of the index")
    context_tokens: int = arg(768, "most tokens of sources in a RAG prompt")
    max_new_tokens: int = arg(16, "most tokens per answer (answers are a word or a name)")
    max_questions: int | None = arg(None, "score at most this many held-out questions")
    max_docs: int | None = arg(None, "use at most this many knowledge documents (every question's source kept)")
    seed: int = arg(0, "seed for fine-tuning")
    progress: bool = arg(True, "show a progress bar")


def compare(args: CompareArgs) -> dict:
    if args.method not in ("lora", "full"):
        raise UserError(f"--method {args.method}: choose lora or full")
    if args.mode not in MODES:
        raise UserError(f"--mode {args.mode}: choose one of {', '.join(MODES)}")
    out = Path(args.out)
    ks = knowledge.knowledge_set()
    docs = _corpus(ks, args.max_docs)
    test = ks.test[:args.max_questions] if args.max_questions else ks.test
    start = time.perf_counter()
    ix = Index(args.embedder, chunk_tokens=args.chunk_tokens, overlap=args.chunk_tokens // 8)
    ix.add_documents(docs)
    ix.save(out / "index")
    build_s = time.perf_counter() - start
    log.info(f"compare: index of {len(ix)} chunks from {len(docs)} documents in {build_s:.0f} s")
    score = lambda gen, index: lab.score_system(gen, index, test, args.k, args.mode, args.context_tokens,  # noqa: E731
                                                args.max_new_tokens)
    base = load(args.model)
    results = {"base": score(base, None), "base + RAG": score(base, ix)}
    tuned = load(args.model)
    lr = args.lr or (2e-3 if args.method == "lora" else 5e-5)
    trained = lab.finetune_on(tuned.model, tuned.tokenizer, lab.conversations(ks.train, docs), args.method,
                              args.steps, lr, args.batch_size, args.seq_len, seed=args.seed, progress=args.progress)
    tuned.model = trained.pop("model")
    results["fine-tuned"] = score(tuned, None)
    results["fine-tuned + RAG"] = score(tuned, ix)
    size = f"{ix.size_bytes() / 2**20:.2f} MiB"
    rows = [f"| {name} | {r['exact_match']:.3f} | {r['f1']:.3f} | "
            + (f"{r['retrieval_recall']:.3f} | " if "RAG" in name else "- | ")
            + f"{trained['seconds'] if 'fine' in name else 0:.0f} | {size if 'RAG' in name else '-'} | "
            f"{r['seconds_per_answer']:.2f} |" for name, r in results.items()]
    lab.plot_systems(results, out / "compare.png", f"{args.model}: {len(test)} held-out questions")
    table = ("| system | exact match | token F1 | retrieval recall@k | training s | index size | s per answer |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    write_text_atomic(out / "report.md", (
        f"# RAG against fine-tuning on Python's own documentation\n\n![scores](compare.png)\n\n"
        f"{len(test)} held-out questions (never trained on) about {len(docs)} documents; model {args.model}, "
        f"{args.method} fine-tuning for {args.steps} steps on {len(ks.train)} training pairs and every "
        f"document; index of {len(ix)} chunks ({args.embedder}, {args.mode}, k={args.k}) built in "
        f"{build_s:.0f} s.\n\n{table}\n\nFine-tuning teaches the answer format and the training questions; "
        "the held-out facts are only reachable through retrieval.\n"))
    summary = {"args": asdict(args), "index_chunks": len(ix), "index_bytes": ix.size_bytes(), "index_build_s": build_s,
               "training": {k: v for k, v in trained.items() if k != "history"}, "results": results}
    write_json_atomic(out / "compare.json", summary)
    print(table)
    return summary


@dataclass
class Word2VecArgs:
    out: str = arg("runs/rag/word2vec", "folder for report.md, loss.png and word2vec.json")
    data: list[str] = arg([], "text files or folders (default: Python's own library sources and docs)")
    dim: int = arg(100, "vector size")
    window: int = arg(5, "most words either side of the centre")
    negatives: int = arg(5, "noise words per (centre, context) pair")
    min_count: int = arg(5, "keep words seen at least this often")
    epochs: int = arg(1, "passes over the text")
    max_tokens: int = arg(1_000_000, "read at most this many words (a minute or two on two cores)")
    lr: float = arg(0.01, "SparseAdam learning rate")
    words: list[str] = arg(["socket", "thread", "list", "error", "string"], "words to show neighbours of")
    analogies: list[str] = arg(["encode:decode::compress", "read:write::get", "open:close::start"],
                               "a:b::c, answered by the words nearest to b - a + c")
    seed: int = arg(0, "seed")


def word2vec_lab(args: Word2VecArgs) -> dict:
    texts = [t for _, t in (read_documents(args.data) if args.data else default_corpus())]
    start = time.perf_counter()
    model = w2v.train_word2vec(texts, args.dim, args.window, args.negatives, args.min_count, args.epochs,
                               lr=args.lr, max_tokens=args.max_tokens, seed=args.seed)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    neighbours, analogies, lines = {}, {}, []
    for w in args.words:
        if w in model.index:
            neighbours[w] = model.neighbours(w)
            lines.append(f"| {w} | {', '.join(n for n, _ in neighbours[w])} |")
    for a in args.analogies:
        parts = a.replace("::", ":").split(":")
        if len(parts) != 3:
            raise UserError(f"--analogies {a}: write a:b::c")
        if all(p in model.index for p in parts):
            analogies[a] = model.analogy(*parts)
            lines.append(f"| {a} : ? | {', '.join(n for n, _ in analogies[a])} |")
    history = [{"step": i + 1, "loss": sum(model.losses[i:i + 50]) / len(model.losses[i:i + 50])}
               for i in range(0, len(model.losses), 50)]
    plot_loss_curve(history, out / "loss.png", "skip-gram negative-sampling loss (50-step means)")
    missing = [w for w in args.words if w not in model.index]
    write_text_atomic(out / "report.md", (
        f"# Word2Vec (skip-gram, negative sampling)\n\n![loss](loss.png)\n\n{len(model.words)} words, "
        f"{args.dim} dimensions, {seconds:.0f} s.\n\n| query | nearest |\n|---|---|\n" + "\n".join(lines) +
        (f"\n\nNot in the vocabulary: {', '.join(missing)}." if missing else "") +
        "\n\nOne vector per word, whatever its sentence: the baseline that contextual embeddings "
        "(`llmlab.rag.embed`, a vector per passage from a transformer) replaced.\n"))
    result = {"words": len(model.words), "seconds": seconds, "final_loss": history[-1]["loss"],
              "neighbours": neighbours, "analogies": analogies}
    write_json_atomic(out / "word2vec.json", result)
    from safetensors.torch import save_file

    save_file({"vectors": model.vectors.contiguous()}, out / "vectors.safetensors")
    write_json_atomic(out / "words.json", model.words)
    log.info(f"word2vec: {len(model.words)} words in {seconds:.0f} s; report in {out / 'report.md'}")
    return result
