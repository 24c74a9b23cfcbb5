"""Decode speed of quantised weights: llmlab float32 against INT8 and INT4 weight-only, and llama.cpp.

Batch-1 decode reads every weight once per token, so it is bound by memory bandwidth: fewer bytes per
weight is where the speed comes from. For each configuration this prints decode tokens/s at batch 1 and 8,
prefill tokens/s, the bytes of weights read per token, the bandwidth that implies, and the machine's own
copy bandwidth for comparison. llama.cpp runs the same model exported as Q8_0 and Q4_0 when
llama-cpp-python is installed. Ratios are against llmlab float32 in the same run; the last line is JSON.

    .venv/bin/python benchmarks/quant_throughput.py --threads 2 --tokens 32
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import llmlab
from llmlab.common.measure import best_seconds
from llmlab.infer.generate import generate, generate_batch
from llmlab.quantize.gguf_export import export_gguf
from llmlab.quantize.model import model_size_bytes, quantize_model

CONFIGS = {"float32": None, "int8": dict(method="int8", group_size=None), "int4-g128": dict(method="int4")}


def copy_bandwidth_gbs(mb: int = 512) -> float:
    """GB/s of a large tensor copy (read + write): what the memory system gives this process."""
    src = torch.empty(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = best_seconds(lambda: dst.copy_(src), 5)
    return 2 * src.nbytes / seconds / 1e9


def weight_bytes_per_token(model) -> int:
    """Bytes of the matrices a decode step reads: every linear layer plus the output head (embeddings are a lookup)."""
    return model_size_bytes(model) - model.tok_emb.weight.nbytes * (0 if model.config.tie_embeddings else 1)


def llmlab_figures(model, prompt: list[int], long_prompt: list[int], n: int) -> dict:
    b1 = best_seconds(lambda: generate(model, prompt, n, temperature=0.0), 3)
    b8 = best_seconds(lambda: generate_batch(model, [prompt] * 8, n, temperature=0.0), 2)
    prefill = best_seconds(lambda: generate(model, long_prompt, 1, temperature=0.0), 3)
    per_token = weight_bytes_per_token(model)
    return {"decode_b1_tps": n / b1, "decode_b8_tps": 8 * n / b8, "prefill_tps": len(long_prompt) / prefill,
            "weight_mb_per_token": per_token / 2**20, "implied_gbs": per_token * n / b1 / 1e9}


def llama_cpp_figures(path: Path, prompt: list[int], n: int, threads: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, verbose=False)

    def prefill():
        llm.reset()
        llm.eval(prompt)

    def prefill_and_decode():
        prefill()
        for _ in range(n):
            llm.eval([llm.sample(temp=0.0)])

    seconds = best_seconds(prefill_and_decode, 3) - best_seconds(prefill, 3)  # decode alone
    return {"decode_b1_tps": n / seconds, "file_mb": path.stat().st_size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--no-llama-cpp", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompt = [(7 * i + 3) % 1000 + 20 for i in range(16)]
    long_prompt = [(11 * i + 5) % 1000 + 20 for i in range(512)]
    results: dict = {"copy_bandwidth_gbs": copy_bandwidth_gbs()}
    for name, cfg in CONFIGS.items():
        lm = llmlab.load(args.model)
        if cfg:
            quantize_model(lm.model, **cfg)
        t0 = time.perf_counter()
        results[name] = llmlab_figures(lm.model.eval(), prompt, long_prompt, args.tokens)
        print(f"{name:>10}: decode b1 {results[name]['decode_b1_tps']:6.1f} tok/s, b8 "
              f"{results[name]['decode_b8_tps']:6.1f}, prefill {results[name]['prefill_tps']:6.0f}; "
              f"{results[name]['weight_mb_per_token']:.0f} MB/token -> {results[name]['implied_gbs']:.1f} GB/s "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    base = results["float32"]["decode_b1_tps"]
    for name in CONFIGS:
        results[name]["decode_b1_ratio"] = results[name]["decode_b1_tps"] / base
    if not args.no_llama_cpp:
        lm = llmlab.load(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            for qtype in ("q8_0", "q4_0"):
                path = export_gguf(lm.model, lm.tokenizer, Path(tmp) / f"m-{qtype}.gguf", qtype=qtype)
                figures = llama_cpp_figures(path, prompt, args.tokens, args.threads)
                results[f"llama.cpp-{qtype}"] = figures
                if figures:
                    figures["decode_b1_ratio"] = figures["decode_b1_tps"] / base
                    print(f"llama.cpp {qtype}: decode b1 {figures['decode_b1_tps']:6.1f} tok/s", flush=True)
    print(f"copy bandwidth {results['copy_bandwidth_gbs']:.1f} GB/s; decode b1 vs float32: " + ", ".join(
        f"{k} {v['decode_b1_ratio']:.2f}x" for k, v in results.items() if isinstance(v, dict) and v))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
