"""Retrieval side by side with its peers, in one run, with ratios (ours / theirs; above 1 is faster):

1. embedding throughput: `llmlab.rag.embed` against sentence-transformers on the same passages (chunks of
   Python's own documentation), same model (all-MiniLM-L6-v2), same threads, batch 32;
2. exact search over N x 384 unit vectors against faiss `IndexFlatIP`, queries per second at batch 1 and 64;
3. approximate search: recall@10 (against exact) and queries per second, for our IVF over an nprobe sweep and
   for faiss's IVFFlat (same cells) and HNSW (an efSearch sweep), plotted; the ratio is our best QPS at
   recall >= 0.95 over faiss IVF's;
4. index build time and peak memory (`llmlab.rag.index.Index`: vectors, BM25, SQLite; vectors given, so
   the model's time is not counted) at 10k and 100k chunks.
The vectors for 2-4 are synthetic but embedding-like: unit vectors around 1,000 topics (a corpus has themes;
uniform random vectors have none and make every IVF look bad). On a shared machine, read the ratios (both
sides run in the same moments), not the absolute numbers. The last line is JSON.

    .venv/bin/python benchmarks/rag.py --threads 2 [--quick]
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.measure import PeakMemory
from llmlab.rag.chunking import Chunk


def clustered(n: int, d: int, topics: int = 1000, seed: int = 0) -> torch.Tensor:
    """n unit vectors around the same `topics` centres for every seed (queries come from the corpus's topics)."""
    c = F.normalize(torch.randn(topics, d, generator=torch.Generator().manual_seed(1234)), dim=1)
    g = torch.Generator().manual_seed(seed)
    return F.normalize(c[torch.randint(topics, (n,), generator=g)] + 1.0 * torch.randn(n, d, generator=g) / d ** 0.5,
                       dim=1)


def best_rate(fn, items: int, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return items / best


def embedding(n: int, threads: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from llmlab.models.pretrained import find_source
    from llmlab.rag.chunking import chunk_documents, token_counter
    from llmlab.rag.embeddings import embed, load_embedder
    from llmlab.rag.knowledge import documents

    ours = load_embedder()
    texts = [c.text for c in chunk_documents(documents(), "auto", 128, 16, token_counter(ours.tokenizer))]
    texts = (texts * (n // len(texts) + 1))[:n]
    st = SentenceTransformer(str(find_source("all-minilm-l6-v2")), device="cpu")
    embed(texts[:64])
    st.encode(texts[:64])
    theirs_rate = best_rate(lambda: st.encode(texts, batch_size=32), n, 1)
    ours_rate = best_rate(lambda: embed(texts, batch_size=32), n, 1)
    return {"passages": n, "ours_per_s": ours_rate, "sentence_transformers_per_s": theirs_rate,
            "ratio": ours_rate / theirs_rate}


def exact(n: int, threads: int) -> dict:
    import faiss

    from llmlab.rag.vectors import VectorIndex

    x, q = clustered(n, 384), clustered(640, 384, seed=1)
    ours = VectorIndex(384)
    ours.add(x, torch.arange(n))
    flat = faiss.IndexFlatIP(384)
    flat.add(x.numpy())
    out = {"vectors": n}
    for batch, count in ((1, 50), (64, 640)):
        qs = [q[i:i + batch] for i in range(0, count, batch)]
        assert torch.equal(ours.search(qs[0], 10)[1], torch.from_numpy(flat.search(qs[0].numpy(), 10)[1]))
        o = best_rate(lambda: [ours.search(b, 10) for b in qs], count)  # noqa: B023
        t = best_rate(lambda: [flat.search(b.numpy(), 10) for b in qs], count)  # noqa: B023
        out[f"batch{batch}"] = {"ours_qps": o, "faiss_qps": t, "ratio": o / t}
    return out


def approximate(n: int, threads: int, plot: Path) -> dict:
    import faiss

    from llmlab.rag.vectors import VectorIndex

    x, q = clustered(n, 384), clustered(500, 384, seed=2)
    truth = VectorIndex(384)
    truth.add(x, torch.arange(n))
    _, want = truth.search(q, 10)

    def recall(ids) -> float:
        ids = torch.as_tensor(ids)
        return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, want, strict=True)) / want.numel()

    ours = VectorIndex(384, "ivf")
    t0 = time.perf_counter()
    ours.add(x, torch.arange(n))
    ours_build = time.perf_counter() - t0
    nlist = ours.nlist
    quantizer = faiss.IndexFlatIP(384)
    ivf = faiss.IndexIVFFlat(quantizer, 384, nlist, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    ivf.train(x.numpy())
    ivf.add(x.numpy())
    faiss_build = time.perf_counter() - t0
    hnsw = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    hnsw.add(x.numpy())
    hnsw_build = time.perf_counter() - t0
    curves: dict[str, list[tuple[float, float, int]]] = {"ours IVF": [], "faiss IVF": [], "faiss HNSW": []}
    for nprobe in sorted({1, 2, 4, 8, ours.default_nprobe(), 16, 32, 64}):
        if nprobe > nlist:
            continue
        curves["ours IVF"].append((recall(ours.search(q, 10, nprobe)[1]),
                                   best_rate(lambda: ours.search(q, 10, nprobe), len(q)), nprobe))  # noqa: B023
        ivf.nprobe = nprobe
        curves["faiss IVF"].append((recall(ivf.search(q.numpy(), 10)[1]),
                                    best_rate(lambda: ivf.search(q.numpy(), 10), len(q)), nprobe))
    for ef in (16, 32, 64, 128, 256):
        hnsw.hnsw.efSearch = ef
        curves["faiss HNSW"].append((recall(hnsw.search(q.numpy(), 10)[1]),
                                     best_rate(lambda: hnsw.search(q.numpy(), 10), len(q)), ef))

    def at95(name: str) -> float | None:
        ok = [qps for r, qps, _ in curves[name] if r >= 0.95]
        return max(ok) if ok else None

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.axvline(0.95, color="grey", linestyle=":")
    ax.set_xlabel("recall@10 against exact")
    ax.set_ylabel("queries per second (batch 500)")
    ax.set_yscale("log")
    ax.set_title(f"{n} x 384 vectors, {nlist} cells")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    ours95, faiss95 = at95("ours IVF"), at95("faiss IVF")
    return {"vectors": n, "nlist": nlist, "default_nprobe": ours.default_nprobe(),
            "default_recall": recall(ours.search(q, 10)[1]),
            "build_s": {"ours": ours_build, "faiss_ivf": faiss_build, "faiss_hnsw": hnsw_build}, "curves": curves,
            "qps_at_recall_0.95": {"ours": ours95, "faiss_ivf": faiss95, "faiss_hnsw": at95("faiss HNSW")},
            "ratio_vs_faiss_ivf": ours95 / faiss95 if ours95 and faiss95 else None, "plot": str(plot)}


def build(n: int, kind: str) -> dict:
    from llmlab.rag.index import Index

    words = "retrieval index vector chunk source token query answer model passage search score".split()
    chunks = [Chunk(f"doc{i // 10}.txt", " ".join(words[(i * 7 + j) % len(words)] for j in range(60)) + f" n{i}",
                    0, 0) for i in range(n)]
    vectors = clustered(n, 384, seed=3)
    memory = PeakMemory("cpu")
    t0 = time.perf_counter()
    index = Index("all-minilm-l6-v2", kind=kind)
    index.add_chunks(chunks, vectors)
    out = Path("runs/bench/rag_index")
    index.save(out)
    return {"chunks": n, "kind": kind, "seconds": time.perf_counter() - t0, "peak_extra_mb": memory.extra_mb(),
            "disk_mb": index.size_bytes() / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="small sizes: a minute or so")
    p.add_argument("--plot", default="runs/bench/rag_ann.png")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import faiss

    faiss.omp_set_num_threads(a.threads)
    log.set_quiet(True)
    big = 20_000 if a.quick else 100_000
    result = {"threads": a.threads, "quick": a.quick}
    result["embedding"] = embedding(500 if a.quick else 10_000, a.threads)
    e = result["embedding"]
    print(f"embedding {e['passages']} passages: ours {e['ours_per_s']:.1f}/s, sentence-transformers "
          f"{e['sentence_transformers_per_s']:.1f}/s, ratio {e['ratio']:.2f}", flush=True)
    result["exact"] = exact(big, a.threads)
    for b in ("batch1", "batch64"):
        r = result["exact"][b]
        print(f"exact {big}x384 {b}: ours {r['ours_qps']:.0f} q/s, faiss {r['faiss_qps']:.0f} q/s, "
              f"ratio {r['ratio']:.2f}", flush=True)
    result["approximate"] = approximate(big, a.threads, Path(a.plot))
    r = result["approximate"]
    print(f"approximate: default nprobe {r['default_nprobe']}/{r['nlist']} recall {r['default_recall']:.3f}; "
          f"q/s at recall>=0.95 {r['qps_at_recall_0.95']}; ratio vs faiss IVF {r['ratio_vs_faiss_ivf']}", flush=True)
    result["build"] = [build(n, kind) for n in ((2_000, 10_000) if a.quick else (10_000, 100_000))
                       for kind in ("exact", "ivf")]
    for r in result["build"]:
        print(f"build {r['chunks']} chunks ({r['kind']}): {r['seconds']:.1f} s, peak +{r['peak_extra_mb']} MB, "
              f"{r['disk_mb']:.1f} MB on disk", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
