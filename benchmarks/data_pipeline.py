"""Clean + MinHash dedup of a generated web corpus: llmlab's pipeline against datatrove's, in one run.

Both sides run the same work on the same JSONL file, one process each (a fresh process per side, so peak
memory is each side's own), and write their survivors as JSONL:

    Gopher repetition -> Gopher quality -> C4 -> PII  (written out)  -> MinHash dedup (written out)

MinHash uses FineWeb's settings on both sides: word 5-grams, 14 bands x 8 rows = 112 hashes, shingles
hashed with SHA-1 (datatrove 0.10.1's default xxhash path fails on str input with xxhash 4); datatrove
permutes in 61-bit arithmetic, llmlab in datasketch's 32-bit scheme.
datatrove splits English words with spaCy (not installed here), so it gets llmlab's word and sentence
splitter through its `WordTokenizer` interface: the rules see the same words on both sides. Its MinHash
runs as its four stages (signatures, buckets with one task per band, clusters, filter).

Also timed: llmlab's dedup alone on 10% of the corpus and on all of it (how dedup time grows).
The machine is shared and loaded; figures are from one run each, compare the ratios.

    python benchmarks/data_pipeline.py              # 100 MB
    python benchmarks/data_pipeline.py --quick      # 10 MB

The last line printed is one JSON object with the figures.
"""

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BANDS, ROWS = 14, 8


def _generator():
    spec = importlib.util.spec_from_file_location("make_noisy_corpus", HERE / "make_noisy_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _peak_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("VmHWM"))) / 1024



def run_llmlab(src: str, work: str, dedup_only: bool = False) -> dict:
    from llmlab.common import log
    from llmlab.data.pipeline import C4, PII, GopherQuality, GopherRepetition, MinHashDedup, Pipeline, run_pipeline

    log.set_quiet(True)
    minhash = MinHashDedup(threshold=0.8, num_perm=BANDS * ROWS, bands=BANDS, rows=ROWS, hash="sha1")
    stages = [minhash] if dedup_only else [GopherRepetition(), GopherQuality(), C4(bad_words=[]), PII(), minhash]
    t0 = time.perf_counter()
    report = run_pipeline(Pipeline(stages, shard_mb=1000), [src], work)
    seconds = time.perf_counter() - t0
    dedup_s = report["stages"][-1]["seconds"]
    return {"seconds": seconds, "dedup_seconds": dedup_s, "clean_seconds": seconds - dedup_s,
            "docs_out": report["documents_out"], "peak_mb": _peak_mb()}


def run_datatrove(src: str, work: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
    from loguru import logger

    from llmlab.data.pipeline.filters import SENTENCE_END, words_of

    class SameWords(WordTokenizer):
        def word_tokenize(self, text):
            return words_of(text)

        def sent_tokenize(self, text):
            return [text[a:b] for a, b in self.span_tokenize(text)]

        def span_tokenize(self, text):
            ends = [m.end() for m in SENTENCE_END.finditer(text)] or [len(text)]
            return list(zip([0] + ends[:-1], ends, strict=True))

    logger.remove()
    tok = SameWords()
    w = Path(work)
    src_dir, name = str(Path(src).parent), Path(src).name
    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"), num_buckets=BANDS,
                           hashes_per_bucket=ROWS, n_grams=5)

    def run(pipeline, tasks=1, tag="x"):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(w / "logs" / tag)).run()

    t0 = time.perf_counter()
    run([JsonlReader(src_dir, glob_pattern=name), GopherRepetitionFilter(language=tok),
         GopherQualityFilter(language=tok), C4QualityFilter(language=tok), PIIFormatter(),
         JsonlWriter(str(w / "clean"))], tag="clean")
    t_clean = time.perf_counter() - t0
    run([JsonlReader(str(w / "clean")), MinhashDedupSignature(str(w / "sigs"), config=config, language=tok)],
        tag="sig")
    run([MinhashDedupBuckets(str(w / "sigs"), str(w / "buckets"), config=config)], tasks=BANDS, tag="buckets")
    run([MinhashDedupCluster(str(w / "buckets"), str(w / "ids"), config=config)], tag="cluster")
    run([JsonlReader(str(w / "clean")), MinhashDedupFilter(str(w / "ids")), JsonlWriter(str(w / "out"))],
        tag="filter")
    seconds = time.perf_counter() - t0
    docs = sum(1 for f in (w / "out").rglob("*.jsonl*") for _ in _lines(f))
    return {"seconds": seconds, "clean_seconds": t_clean, "dedup_seconds": seconds - t_clean, "docs_out": docs,
            "peak_mb": _peak_mb()}


def _lines(path: Path):
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def _child(fn_name: str, args: tuple, queue) -> None:
    sys.stdout = sys.stderr = open(os.devnull, "w")  # datatrove's progress logs
    try:
        queue.put(globals()[fn_name](*args))
    except Exception as e:
        queue.put({"error": f"{type(e).__name__}: {e}"})


def in_fresh_process(fn_name: str, *args, timeout: float = 3600.0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn_name, args, queue))
    p.start()
    try:
        result = queue.get(timeout=timeout)
    finally:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="megabytes of text")
    ap.add_argument("--quick", action="store_true", help="10 MB instead")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds each side may take")
    a = ap.parse_args()
    mb = 10.0 if a.quick else a.mb
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "in" / "web.jsonl", Path(tmp) / "in_small" / "web.jsonl"
        gen = _generator()
        gen.write(big, mb)
        gen.write(small, mb / 10)
        size = big.stat().st_size / 1e6
        print(f"corpus: {size:.1f} MB of JSONL ({mb:.0f} MB of text)", file=sys.stderr)
        ours = in_fresh_process("run_llmlab", str(big), str(Path(tmp) / "ours"), timeout=a.timeout)
        print(f"llmlab:    {ours}", file=sys.stderr)
        theirs = in_fresh_process("run_datatrove", str(big), str(Path(tmp) / "theirs"), timeout=a.timeout)
        print(f"datatrove: {theirs}", file=sys.stderr)
        d_small = in_fresh_process("run_llmlab", str(small), str(Path(tmp) / "ds"), True, timeout=a.timeout)
        d_big = in_fresh_process("run_llmlab", str(big), str(Path(tmp) / "db"), True, timeout=a.timeout)
    result = {
        "text_mb": mb, "llmlab": ours, "datatrove": theirs,
        "llmlab_mb_per_s": mb / ours["seconds"], "datatrove_mb_per_s": mb / theirs["seconds"],
        "throughput_ratio": theirs["seconds"] / ours["seconds"],  # > 1: llmlab is faster
        "dedup_only_seconds": {f"{mb / 10:g} MB": d_small["seconds"], f"{mb:g} MB": d_big["seconds"]},
        "dedup_growth": d_big["seconds"] / d_small["seconds"],
        "note": "shared 2-core machine; one run per side",
    }
    print(f"llmlab {result['llmlab_mb_per_s']:.2f} MB/s, datatrove {result['datatrove_mb_per_s']:.2f} MB/s "
          f"(ratio {result['throughput_ratio']:.2f}); peak {ours['peak_mb']:.0f} vs {theirs['peak_mb']:.0f} MB; "
          f"dedup alone {mb / 10:g} -> {mb:g} MB: x{result['dedup_growth']:.1f} time", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
