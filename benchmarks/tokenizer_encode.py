"""Encoding throughput (MB/s): llmlab's public API vs tiktoken direct vs HF `tokenizers`, same vocabulary.

Trains one llmlab tokenizer (GPT-4 pattern) on 2 MB of stdlib sources, builds the
same vocabulary in tiktoken (from our ranks) and in `tokenizers` (our exported
tokenizer.json), checks all three give the same ids, then times each on 20 MB of
stdlib text, single call and batched (one text per file, all cores). Last line:
one JSON object.

    python benchmarks/tokenizer_encode.py [--mb 20] [--vocab 8192]
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import tiktoken
from tokenizers import Tokenizer as HFTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_train import build_corpus  # noqa: E402

from llmlab.common.measure import best_seconds  # noqa: E402
from llmlab.tokenizer import Tokenizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=20)
    p.add_argument("--vocab", type=int, default=8192)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.train([build_corpus(2_000_000, Path(tmp) / "train.txt")], args.vocab)
        text = build_corpus(int(args.mb * 1_000_000), Path(tmp) / "big.txt").read_text(encoding="utf-8")
        tok.save_hf(tmp)
        hf = HFTokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
    ranks = {tok.id_to_token_bytes(i): i for i in range(tok.vocab_size) if i not in tok.special_tokens.values()}
    enc = tiktoken.Encoding("peer", pat_str=tok.pattern, mergeable_ranks=ranks, special_tokens=tok.special_tokens)
    docs = text.split("\n\n\n")
    mb = len(text.encode("utf-8")) / 1e6
    threads = os.cpu_count() or 1

    sample = text[:1_000_000]
    assert tok.encode(sample) == enc.encode_ordinary(sample) == hf.encode(sample).ids, "ids differ"

    single = {
        "llmlab": best_seconds(lambda: tok.encode(text)),
        "tiktoken": best_seconds(lambda: enc.encode_ordinary(text)),
        "tokenizers": best_seconds(lambda: hf.encode(text), repeats=1),
    }
    batch = {
        "llmlab": best_seconds(lambda: tok.encode_batch(docs)),
        "tiktoken": best_seconds(lambda: enc.encode_ordinary_batch(docs, num_threads=threads)),
        "tokenizers": best_seconds(lambda: hf.encode_batch(docs), repeats=1),
    }
    out = {"mb": round(mb, 2), "vocab": tok.vocab_size, "threads": threads, "n_docs": len(docs)}
    for mode, times in (("single", single), ("batch", batch)):
        out[mode] = {lib: round(mb / s, 2) for lib, s in times.items()}
        out[mode]["llmlab_over_tiktoken"] = round(times["tiktoken"] / times["llmlab"], 3)
        out[mode]["llmlab_over_tokenizers"] = round(times["tokenizers"] / times["llmlab"], 3)
        print(f"{mode:>6}: " + "  ".join(f"{lib} {mb / s:6.2f} MB/s" for lib, s in times.items())
              + f"  (llmlab/tiktoken {out[mode]['llmlab_over_tiktoken']:.2f}x)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
