"""Continuous batching throughput: `Engine` at 1, 4 and 16 concurrent requests against one at a time.

The same requests (prompt and output lengths drawn from a fixed distribution, greedy, no stop token so
every request makes exactly its own number of tokens) go through:
  - `generate`, one request after another (sequential serving);
  - the engine, with C requests in flight: C clients that each send their next request as soon as the
    previous one finishes (a closed loop), for C in --concurrency;
  - with --hf, transformers' `generate` over static batches of C requests (left padding; a batch runs
    until its longest request is done, and only each request's own tokens count).
Throughput is generated tokens per second, prefill included, twice: per second of wall time, and per
second of this process's CPU time. On a shared machine other processes take cores away at random moments,
which changes wall time but not the CPU seconds the work needs; with --threads 1 the CPU figure is the
steadier one (with more threads, spinning OpenMP workers count too). Run it on an idle machine for wall-clock
numbers. Greedy outputs are checked against `generate` (a mismatch is counted; with float32 a near-tie can
rarely flip a token). The last line is JSON.

    .venv/bin/python benchmarks/engine_throughput.py --threads 2
"""

import argparse
import json
import os
import time
from collections import deque
from pathlib import Path

import torch

import llmlab
from llmlab.common import log
from llmlab.infer.engine import Engine, SamplingParams
from llmlab.infer.generate import generate


def make_requests(n: int, prompt_range: tuple[int, int], new_range: tuple[int, int], seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p = int(torch.randint(prompt_range[0], prompt_range[1] + 1, (1,), generator=g))
        m = int(torch.randint(new_range[0], new_range[1] + 1, (1,), generator=g))
        out.append((torch.randint(100, 40000, (p,), generator=g).tolist(), m))
    return out


def timed(fn):
    """(fn's result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_sequential(model, requests: list) -> list[list[int]]:
    return [generate(model, prompt, m, temperature=0) for prompt, m in requests]


def run_engine(model, requests: list, concurrency: int, prefill_chunk: int) -> tuple[list[list[int]], dict]:
    """C closed-loop clients: a finished request is replaced by the next one at once."""
    engine = Engine(model, max_batch=concurrency, prefill_chunk=prefill_chunk)
    todo = deque(range(len(requests)))
    outs: list[list[int]] = [[] for _ in requests]
    in_flight = 0
    while todo or engine.has_work():
        while todo and in_flight < concurrency:
            i = todo.popleft()
            engine.add_request(str(i), requests[i][0], SamplingParams(max_tokens=requests[i][1], temperature=0))
            in_flight += 1
        for e in engine.step():
            outs[int(e.request_id)].append(e.token_id)
            in_flight -= e.finished
    return outs, engine.stats()


def load_hf(name: str):
    """transformers' model from the same GGUF file llmlab loads (dequantised to float32)."""
    import transformers

    from llmlab.models.pretrained import resolve_alias

    path = Path(resolve_alias(name))
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()


def run_hf_static(model, requests: list, batch: int) -> None:
    """transformers over static batches of `batch` requests."""
    for start in range(0, len(requests), batch):
        group = requests[start:start + batch]
        L = max(len(p) for p, _ in group)
        idx = torch.tensor([[0] * (L - len(p)) + p for p, _ in group])  # left padding
        mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p, _ in group])
        n = max(m for _, m in group)
        with torch.inference_mode():
            model.generate(idx, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--requests", type=int, default=32, help="more than the top concurrency, so slots refill")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[16, 96], help="uniform range of prompt tokens")
    parser.add_argument("--new-tokens", type=int, nargs=2, default=[8, 48], help="uniform range of new tokens")
    parser.add_argument("--prefill-chunk", type=int, default=256)
    parser.add_argument("--hf", action="store_true", help="also time transformers' static batching")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log.set_quiet(True)
    model = llmlab.load(args.model).model
    hf_model = load_hf(args.model) if args.hf else None
    requests = make_requests(args.requests, tuple(args.prompt_len), tuple(args.new_tokens))
    n = sum(m for _, m in requests)
    generate(model, requests[0][0], 2, temperature=0)  # warm-up
    expected, wall, cpu = timed(lambda: run_sequential(model, requests))
    seq = {"wall": n / wall, "cpu": n / cpu}
    print(f"{'tokens per second of':20}{'wall':>8}{'cpu':>8}{'wall x seq':>12}{'cpu x seq':>11}{'cpu x hf':>10}"
          f"{'preempt':>9}{'mismatch':>10}")
    print(f"{'sequential generate':20}{seq['wall']:8.1f}{seq['cpu']:8.1f}")
    rows = {}
    for c in args.concurrency:
        (outs, stats), wall, cpu = timed(lambda c=c: run_engine(model, requests, c, args.prefill_chunk))
        row = {"wall_tok_s": n / wall, "cpu_tok_s": n / cpu, "preemptions": stats["preemptions"],
               "mismatched_requests": sum(o != e for o, e in zip(outs, expected, strict=True))}
        row["ratio_sequential_wall"], row["ratio_sequential_cpu"] = row["wall_tok_s"] / seq["wall"], \
            row["cpu_tok_s"] / seq["cpu"]
        hf = f"{'-':>10}"
        if hf_model is not None:
            _, hf_wall, hf_cpu = timed(lambda c=c: run_hf_static(hf_model, requests, c))
            row.update(hf_static_wall_tok_s=n / hf_wall, hf_static_cpu_tok_s=n / hf_cpu,
                       ratio_hf_static_wall=hf_wall / wall, ratio_hf_static_cpu=hf_cpu / cpu)
            hf = f"{row['ratio_hf_static_cpu']:10.2f}"
        rows[c] = row
        print(f"{'engine c=' + str(c):20}{row['wall_tok_s']:8.1f}{row['cpu_tok_s']:8.1f}"
              f"{row['ratio_sequential_wall']:12.2f}{row['ratio_sequential_cpu']:11.2f}{hf}"
              f"{row['preemptions']:9d}{row['mismatched_requests']:10d}")
    print(json.dumps({"model": args.model, "threads": args.threads, "requests": args.requests, "new_tokens": n,
                      "prompt_len": args.prompt_len, "new_tokens_range": args.new_tokens,
                      "sequential_wall_tok_s": seq["wall"], "sequential_cpu_tok_s": seq["cpu"], "engine": rows}))


if __name__ == "__main__":
    main()
