"""Generation throughput: llmlab against transformers' `generate` on the same SmolLM2-135M weights.

Both models come from the same GGUF file (dequantised to float32) and run greedy
decoding on the CPU with the same number of threads, one after the other in one
process: decode tokens/s at batch 1 and batch 8 (prompts of 16 tokens), prefill
tokens/s for a 512-token prompt, and the time to load model + tokenizer from the
GGUF. Where llama-cpp-python is installed its figures on the same file are printed
for reference (it runs the Q4_1 weights directly, so it reads ~6x fewer bytes).

    python benchmarks/generate_throughput.py --threads 1

Numbers on a shared machine are noisy: run it when the machine is otherwise idle,
and prefer --threads at most the number of idle cores (oversubscribed OpenMP
threads make every matmul wait for a descheduled thread). The last line is JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from llmlab.common.measure import best_seconds


def setup_llmlab(path: Path, prompts: list[list[int]], long_prompt: list[int], n_new: int) -> tuple[float, dict]:
    """Load time, and one callable per figure."""
    import llmlab
    from llmlab.infer import generate, generate_batch

    t0 = time.perf_counter()
    model = llmlab.load(path).model
    load_s = time.perf_counter() - t0
    generate(model, prompts[0], 4, temperature=0)  # warm-up
    return load_s, {"decode_b1": lambda: generate(model, prompts[0], n_new, temperature=0),
                    "decode_b8": lambda: generate_batch(model, prompts, n_new, temperature=0),
                    "prefill": lambda: generate(model, long_prompt, 1, temperature=0)}


def setup_transformers(path: Path, prompts: list[list[int]], long_prompt: list[int], n_new: int
                       ) -> tuple[float, dict]:
    import transformers

    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    load_s = time.perf_counter() - t0

    def run(batch: list[list[int]], n: int):
        idx = torch.tensor(batch)
        with torch.inference_mode():
            model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    run(prompts[:1], 4)
    return load_s, {"decode_b1": lambda: run(prompts[:1], n_new), "decode_b8": lambda: run(prompts, n_new),
                    "prefill": lambda: run([long_prompt], 1)}


def figures(load_s: float, seconds: dict, prompts: list[list[int]], long_prompt: list[int], n_new: int) -> dict:
    return {"load_s": load_s, "decode_b1_tok_s": n_new / seconds["decode_b1"],
            "decode_b8_tok_s": len(prompts) * n_new / seconds["decode_b8"],
            "prefill_tok_s": len(long_prompt) / seconds["prefill"]}


def bench_llama_cpp(path: Path, prompt: list[int], long_prompt: list[int], n_new: int, threads: int,
                    repeats: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    t0 = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=1024, n_threads=threads, verbose=False)
    load_s = time.perf_counter() - t0
    generated = []

    def decode():  # greedy; EOS may end it early, so count what came out
        llm.reset()  # no reuse of a cached prompt prefix
        out = llm.create_completion(prompt, max_tokens=n_new, temperature=0.0, top_k=1)
        generated.append(out["usage"]["completion_tokens"])

    def prefill():
        llm.reset()
        llm.create_completion(long_prompt, max_tokens=1, temperature=0.0, top_k=1)

    b1 = best_seconds(decode, repeats, "cpu")
    pre = best_seconds(prefill, repeats, "cpu")
    return {"load_s": load_s, "decode_b1_tok_s": generated[-1] / b1, "prefill_tok_s": len(long_prompt) / pre}


def main() -> None:
    from llmlab.models.pretrained import resolve_alias

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="GGUF file or alias")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per figure; the best is kept")
    parser.add_argument("--llama-cpp-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(resolve_alias(args.model) if not args.model.endswith(".gguf") else args.model)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 40000, (args.batch, 16), generator=g).tolist()
    long_prompt = torch.randint(100, 40000, (args.prompt_len,), generator=g).tolist()
    if args.llama_cpp_only:
        print(json.dumps(bench_llama_cpp(path, prompts[0], long_prompt, args.new_tokens, args.threads, args.repeats)))
        return

    ours_load, ours_runs = setup_llmlab(path, prompts, long_prompt, args.new_tokens)
    peer_load, peer_runs = setup_transformers(path, prompts, long_prompt, args.new_tokens)
    best = {side: dict.fromkeys(ours_runs, float("inf")) for side in ("ours", "peer")}
    for _ in range(args.repeats):  # alternate the two, so a change in machine load hits both alike
        for name in ours_runs:
            best["ours"][name] = min(best["ours"][name], best_seconds(ours_runs[name], 1, "cpu"))
            best["peer"][name] = min(best["peer"][name], best_seconds(peer_runs[name], 1, "cpu"))
    ours = figures(ours_load, best["ours"], prompts, long_prompt, args.new_tokens)
    peer = figures(peer_load, best["peer"], prompts, long_prompt, args.new_tokens)
    # llama-cpp-python crashes when loaded next to transformers here: give it a process of its own
    cmd = [sys.executable, __file__, "--llama-cpp-only", *sys.argv[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    cpp = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else None
    print(f"{'':24}{'llmlab':>10}{'transformers':>14}{'ratio':>8}{'llama.cpp':>11}")
    for key in ("decode_b1_tok_s", "decode_b8_tok_s", "prefill_tok_s", "load_s"):
        ref = f"{cpp[key]:11.1f}" if cpp and key in cpp else f"{'-':>11}"
        print(f"{key:24}{ours[key]:10.1f}{peer[key]:14.1f}{ours[key] / peer[key]:8.2f}{ref}")
    result = {
        "model": path.name, "dtype": "float32", "threads": args.threads, "new_tokens": args.new_tokens,
        "batch": args.batch, "prompt_len": args.prompt_len, "llmlab": ours, "transformers": peer,
        "llama_cpp": cpp,
        "ratio_decode_b1": ours["decode_b1_tok_s"] / peer["decode_b1_tok_s"],
        "ratio_decode_b8": ours["decode_b8_tok_s"] / peer["decode_b8_tok_s"],
        "ratio_prefill": ours["prefill_tok_s"] / peer["prefill_tok_s"],
        "ratio_load_time": ours["load_s"] / peer["load_s"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
