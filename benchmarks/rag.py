"""Retrieval side by side with its peers, in one run, with ratios (ours / theirs; above 1 is faster):

1. embedding throughput: `llmlab.rag.embed` against sentence-transformers on the same passages (chunks of
   Python's own documentation), same model (all-MiniLM-L6-v2), same threads, batch 32;
2. exact search over N x 384 unit vectors against faiss `IndexFlatIP`, queries per second at batch 1 and 64;
3. approximate search: recall@10 (against exact) and queries per second at batch 500, for our IVF over an
   nprobe sweep and for faiss's IVFFlat (as many cells) and HNSW (M=32, an efSearch sweep), plotted; the
   ratio is our best QPS at recall >= 0.95 over faiss IVF's;
4. build time and peak memory at 10k and N vectors, each build in a fresh process: our `VectorIndex`
   (exact, IVF) against faiss's (flat, IVFFlat), and a whole `llmlab.rag.index.Index` folder (vectors,
   BM25, SQLite, saved; vectors given, so the model's time is not counted).
The vectors for 2-4 are synthetic but embedding-like: unit vectors around 100 topics (a corpus has themes;
uniform random vectors have none and make every IVF look bad). With about sqrt(N) cells, a topic spans
several cells, so one probed cell finds about half of the 10 nearest and the recall curve has a shape (with
1,000 tight topics every index reaches recall 1.0 at nprobe 1). Timings race ours and theirs in alternation
and keep each one's best, so a shared machine's load hits both alike: read the ratios. The last line is JSON.

    .venv/bin/python benchmarks/rag.py --threads 1                         # 100k vectors, 10k passages
    .venv/bin/python benchmarks/rag.py --threads 1 --quick                 # 20k vectors, 500 passages
    .venv/bin/python benchmarks/rag.py --vectors 50000 --passages 2000 --no-hnsw
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

DIM = 384


def clustered(n: int, d: int = DIM, topics: int = 100, seed: int = 0) -> torch.Tensor:
    """n unit vectors around the same `topics` centres for every seed (queries come from the corpus's topics)."""
    c = F.normalize(torch.randn(topics, d, generator=torch.Generator().manual_seed(1234)), dim=1)
    g = torch.Generator().manual_seed(seed)
    return F.normalize(c[torch.randint(topics, (n,), generator=g)] + 1.0 * torch.randn(n, d, generator=g) / d ** 0.5,
                       dim=1)


def race(fns: dict, items: int, rounds: int = 3) -> dict[str, float]:
    """Items per second of each function, best of `rounds`, the functions taking turns within each round."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: items / seconds for name, seconds in best.items()}


def embedding(n: int) -> dict:
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
    rate = race({"ours": lambda: embed(texts, batch_size=32), "theirs": lambda: st.encode(texts, batch_size=32)},
                n, 1)
    return {"passages": n, "ours_per_s": rate["ours"], "sentence_transformers_per_s": rate["theirs"],
            "ratio": rate["ours"] / rate["theirs"]}


def exact(n: int) -> dict:
    import faiss

    from llmlab.rag.vectors import VectorIndex

    x, q = clustered(n), clustered(640, seed=1)
    ours = VectorIndex(DIM)
    ours.add(x, torch.arange(n))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x.numpy())
    out = {"vectors": n}
    for batch, count in ((1, 40), (64, 640)):
        qs = [q[i:i + batch] for i in range(0, count, batch)]
        assert torch.equal(ours.search(qs[0], 10)[1], torch.from_numpy(flat.search(qs[0].numpy(), 10)[1]))
        rate = race({"ours": lambda: [ours.search(b, 10) for b in qs],  # noqa: B023
                     "faiss": lambda: [flat.search(b.numpy(), 10) for b in qs]}, count)  # noqa: B023
        out[f"batch{batch}"] = {"ours_qps": rate["ours"], "faiss_qps": rate["faiss"],
                                "ratio": rate["ours"] / rate["faiss"]}
    return out


def approximate(n: int, plot: Path, hnsw: bool) -> dict:
    import faiss

    from llmlab.rag.vectors import VectorIndex

    x, q = clustered(n), clustered(500, seed=2)
    truth = VectorIndex(DIM)
    truth.add(x, torch.arange(n))
    _, want = truth.search(q, 10)

    def recall(ids) -> float:
        ids = torch.as_tensor(ids)
        return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, want, strict=True)) / want.numel()

    ours = VectorIndex(DIM, "ivf")
    ours.add(x, torch.arange(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, ours.nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x.numpy())
    ivf.add(x.numpy())
    curves: dict[str, list[tuple[float, float, int]]] = {"ours IVF": [], "faiss IVF": []}
    for nprobe in sorted({1, 2, 3, 4, 6, 8, ours.default_nprobe(), 16, 32}):
        if nprobe > ours.nlist:
            continue
        ivf.nprobe = nprobe
        rate = race({"ours": lambda: ours.search(q, 10, nprobe),  # noqa: B023
                     "faiss": lambda: ivf.search(q.numpy(), 10)}, len(q))
        curves["ours IVF"].append((recall(ours.search(q, 10, nprobe)[1]), rate["ours"], nprobe))
        curves["faiss IVF"].append((recall(ivf.search(q.numpy(), 10)[1]), rate["faiss"], nprobe))
    hnsw_build = None
    if hnsw:
        graph = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        graph.add(x.numpy())
        hnsw_build = time.perf_counter() - t0
        curves["faiss HNSW"] = []
        for ef in (16, 32, 64, 128, 256):
            graph.hnsw.efSearch = ef
            curves["faiss HNSW"].append((recall(graph.search(q.numpy(), 10)[1]),
                                         race({"it": lambda: graph.search(q.numpy(), 10)}, len(q))["it"], ef))

    def at95(name: str) -> float | None:
        ok = [qps for r, qps, _ in curves.get(name, []) if r >= 0.95]
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
    ax.set_title(f"{n} x {DIM} vectors, {ours.nlist} cells, {torch.get_num_threads()} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=120)
    ours95, faiss95 = at95("ours IVF"), at95("faiss IVF")
    return {"vectors": n, "nlist": ours.nlist, "default_nprobe": ours.default_nprobe(),
            "default_recall": recall(ours.search(q, 10)[1]), "faiss_hnsw_build_s": hnsw_build, "curves": curves,
            "qps_at_recall_0.95": {"ours": ours95, "faiss_ivf": faiss95, "faiss_hnsw": at95("faiss HNSW")},
            "ratio_vs_faiss_ivf": ours95 / faiss95 if ours95 and faiss95 else None, "plot": str(plot)}


def build_once(what: str, n: int, kind: str, threads: int) -> tuple[float, float | None]:
    """Seconds and peak extra MB (resident set, rounded) of one build, run in a fresh process by `build`."""
    import faiss

    from llmlab.rag.index import Index
    from llmlab.rag.vectors import VectorIndex

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    log.set_quiet(True)
    memory = PeakMemory("cpu")  # from before the vectors exist: the peak counts them, alike for every builder
    vectors = clustered(n, seed=3)
    if what == "index folder":
        words = "retrieval index vector chunk source token query answer model passage search score".split()
        chunks = [Chunk(f"doc{i // 10}.txt", " ".join(words[(i * 7 + j) % len(words)] for j in range(60))
                        + f" n{i}", 0, 0) for i in range(n)]
    t0 = time.perf_counter()
    if what == "ours":
        VectorIndex(DIM, kind).add(vectors, torch.arange(n))
    elif what == "faiss" and kind == "exact":
        faiss.IndexFlatIP(DIM).add(vectors.numpy())
    elif what == "faiss":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, round(n ** 0.5), faiss.METRIC_INNER_PRODUCT)
        index.train(vectors.numpy())
        index.add(vectors.numpy())
    else:
        folder = Index("all-minilm-l6-v2", kind=kind)
        folder.add_chunks(chunks, vectors)
        folder.save(Path("runs/bench/rag_index"))
    seconds, extra = time.perf_counter() - t0, memory.extra_mb()
    return seconds, None if extra is None else round(extra)


def build(n: int, kind: str, threads: int) -> dict:
    """Ours and faiss's vector index built on the same n vectors, then a whole Index folder (chunks, BM25,
    SQLite, saved), each in a fresh process: a process's resident set never shrinks, so one build's peak
    would hide the next's."""
    import multiprocessing

    out = {"vectors": n, "kind": kind}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for what in ("ours", "faiss", "index folder"):
            seconds, mb = pool.apply_async(build_once, (what, n, kind, threads)).get(timeout=1800)
            out[what] = {"seconds": seconds, "peak_extra_mb": mb}
    out["time_ratio"] = out["ours"]["seconds"] / out["faiss"]["seconds"]  # above 1: ours is slower
    out["disk_mb"] = sum(f.stat().st_size for f in Path("runs/bench/rag_index").iterdir()) / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch and faiss threads (the same for both)")
    p.add_argument("--quick", action="store_true", help="20k vectors, 500 passages, builds at 2k and 20k")
    p.add_argument("--vectors", type=int, default=None, help="corpus size for search and the larger build")
    p.add_argument("--passages", type=int, default=None, help="passages embedded (0: skip embedding)")
    p.add_argument("--no-hnsw", action="store_true", help="skip faiss HNSW (its build is the slowest step)")
    p.add_argument("--plot", default="runs/bench/rag_ann.png")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import faiss

    faiss.omp_set_num_threads(a.threads)
    log.set_quiet(True)
    big = a.vectors or (20_000 if a.quick else 100_000)
    passages = a.passages if a.passages is not None else (500 if a.quick else 10_000)
    result = {"threads": a.threads, "vectors": big}
    if passages:
        result["embedding"] = e = embedding(passages)
        print(f"embedding {e['passages']} passages: ours {e['ours_per_s']:.1f}/s, sentence-transformers "
              f"{e['sentence_transformers_per_s']:.1f}/s, ratio {e['ratio']:.2f}", flush=True)
    result["exact"] = exact(big)
    for b in ("batch1", "batch64"):
        r = result["exact"][b]
        print(f"exact {big}x{DIM} {b}: ours {r['ours_qps']:.0f} q/s, faiss {r['faiss_qps']:.0f} q/s, "
              f"ratio {r['ratio']:.2f}", flush=True)
    result["approximate"] = r = approximate(big, Path(a.plot), not a.no_hnsw)
    for name, pts in r["curves"].items():
        print(f"{name}: " + ", ".join(f"{knob}: recall {rec:.3f} {qps:.0f} q/s" for rec, qps, knob in pts))
    print(f"approximate: default nprobe {r['default_nprobe']}/{r['nlist']} recall {r['default_recall']:.3f}; "
          f"q/s at recall>=0.95 {r['qps_at_recall_0.95']}; ratio vs faiss IVF {r['ratio_vs_faiss_ivf']}; "
          f"plot {r['plot']}", flush=True)
    sizes = sorted({2_000 if a.quick else 10_000, big})
    result["build"] = [build(n, kind, a.threads) for n in sizes for kind in ("exact", "ivf")]
    for r in result["build"]:
        print(f"build {r['vectors']} vectors ({r['kind']}): " + "; ".join(
            f"{what} {r[what]['seconds']:.2f} s, peak +{r[what]['peak_extra_mb']} MB"
            for what in ("ours", "faiss", "index folder")) + f"; ours/faiss time {r['time_ratio']:.2f}, "
              f"folder {r['disk_mb']:.1f} MB on disk", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
