"""Tokenizer training speed: llmlab vs HF `tokenizers` vs `rustbpe`, same corpus, same machine.

The corpus is the Python standard library's own sources (no download), cut to
2 MB and 20 MB. Each run happens in a fresh subprocess so its peak memory
(RSS of the main process, and of the largest worker process) is its own. Also times the reference (textbook) trainer
on a small input against the fast trainer. Last line: one JSON object.

    python benchmarks/tokenizer_train.py                    # 2 MB and 20 MB, vocab 4096 and 16384
    python benchmarks/tokenizer_train.py --sizes 2 --vocabs 4096
"""

import argparse
import json
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def build_corpus(n_bytes: int, path: Path) -> Path:
    """Concatenate stdlib .py files (sorted, so every machine gets the same text) up to n_bytes."""
    out, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        try:
            t = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        out.append(t)
        total += len(t.encode("utf-8"))
        if total >= n_bytes:
            break
    path.write_bytes("\n".join(out).encode("utf-8")[:n_bytes].decode("utf-8", "ignore").encode("utf-8"))
    return path


def run_one(lib: str, corpus: str, vocab: int) -> dict:
    """Train once in this process; return seconds and peak RSS (MB)."""
    t0 = time.perf_counter()
    if lib == "llmlab":
        from llmlab.tokenizer import Tokenizer

        Tokenizer.train([corpus], vocab, pattern="gpt4", special_tokens=["<|endoftext|>"])
    elif lib == "llmlab-reference":
        from llmlab.tokenizer import Tokenizer

        Tokenizer.train([corpus], vocab, special_tokens=["<|endoftext|>"], trainer="reference")
    elif lib == "tokenizers":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        from llmlab.tokenizer.patterns import GPT4

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train([corpus], trainer)
    elif lib == "rustbpe":
        import rustbpe

        def lines():
            with open(corpus, encoding="utf-8") as f:
                yield from f

        rustbpe.Tokenizer().train_from_iterator(lines(), vocab - 1)
    seconds = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec. Read by hand, not through
    # llmlab.common.measure: that module imports torch, which alone would add ~190 MB to every peak here.
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(hwm_kb / 1024, 1),
            "worker_peak_rss_mb": round(workers_kb / 1024, 1)}


def measure(lib: str, corpus: Path, vocab: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", lib, str(corpus), str(vocab)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[2, 20], help="corpus sizes in MB")
    p.add_argument("--vocabs", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--libs", nargs="+", default=["llmlab", "rustbpe", "tokenizers"])
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]))))
        return

    results: dict = {"runs": [], "reference_trainer": {}}
    with tempfile.TemporaryDirectory() as tmp:
        small = build_corpus(50_000, Path(tmp) / "small.txt")
        ref = measure("llmlab-reference", small, 512)
        fast = measure("llmlab", small, 512)
        results["reference_trainer"] = {"input_bytes": 50_000, "vocab": 512, "reference_s": ref["seconds"],
                                        "fast_s": fast["seconds"],
                                        "fast_speedup": round(ref["seconds"] / fast["seconds"], 1)}
        print(f"reference trainer, 50 KB, vocab 512: {ref['seconds']:.2f}s; fast: {fast['seconds']:.2f}s "
              f"({ref['seconds'] / fast['seconds']:.1f}x)")
        print(f"{'MB':>4} {'vocab':>6} {'library':<11} {'seconds':>8} {'peak MB':>8} {'worker MB':>9} {'vs llmlab':>9}")
        for mb in args.sizes:
            corpus = build_corpus(int(mb * 1_000_000), Path(tmp) / f"corpus_{mb}.txt")
            for vocab in args.vocabs:
                row = {"mb": mb, "vocab": vocab}
                for lib in args.libs:
                    row[lib] = measure(lib, corpus, vocab)
                for lib in args.libs:
                    ratio = row["llmlab"]["seconds"] / row[lib]["seconds"] if "llmlab" in row else float("nan")
                    row[lib]["llmlab_over_this"] = round(ratio, 2)
                    print(f"{mb:>4g} {vocab:>6} {lib:<11} {row[lib]['seconds']:>8.2f} "
                          f"{row[lib]['peak_rss_mb']:>8.0f} {row[lib]['worker_peak_rss_mb']:>9.0f} {ratio:>8.2f}x")
                results["runs"].append(row)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
