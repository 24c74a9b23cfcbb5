"""Serving under load: `llmlab serve` on SmolLM2-135M driven by 1, 4, 16 and 64 concurrent streaming clients.

The server runs in this process (uvicorn on a thread, 127.0.0.1); the clients are asyncio tasks with httpx,
each sending the next request of one fixed list as soon as its last one ended (a closed loop). Requests come
from a seeded distribution: prompts of 48..80 random token ids (about 64), outputs of 16..64 tokens
(`ignore_eos`, vLLM's extension, so every request generates exactly what it asked for). Greedy throughout.

Per concurrency level: throughput (generated tokens / wall time), time to first token (TTFT) p50/p99 and
inter-token latency (ITL) p50/p99, as a client sees them (every token is its own event: `logprobs: 0`).
Baselines in the same run, on the same requests:
- sequential: the requests one at a time (concurrency 1 is exactly that);
- transformers `generate` over static batches of the requests (batch size = the concurrency level; a
  batch runs until its longest request is done, padded on the left), the HF twin read from the same GGUF.
Plots throughput and latency against concurrency to benchmarks/results/serve_load.png. Last line is JSON.

    python benchmarks/serve_load.py [--quick] [--threads 2]

Targets at 16 clients: throughput >= 4x sequential and >= 1.5x HF static batching, p99 TTFT < 2 s.
"""

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

import httpx
import torch

RESULTS = Path(__file__).parent / "results"


def make_requests(n: int, out_range: tuple[int, int], seed: int = 0) -> list[tuple[list[int], int]]:
    """(prompt ids, new tokens) pairs from a fixed seeded distribution."""
    rng = random.Random(seed)
    return [([rng.randrange(100, 40000) for _ in range(rng.randint(48, 80))], rng.randint(*out_range))
            for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))] if values else float("nan")


async def one_request(http: httpx.AsyncClient, prompt: list[int], n: int) -> tuple[float, list[float], int]:
    """(TTFT, inter-token gaps, tokens) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True, "logprobs": 0, "ignore_eos": True}
    t0 = time.perf_counter()
    times = []
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:])["choices"]:
                if choice.get("logprobs"):
                    times += [time.perf_counter()] * len(choice["logprobs"]["tokens"])
    if len(times) != n:
        raise RuntimeError(f"asked for {n} tokens, got {len(times)}")
    return times[0] - t0, [b - a for a, b in zip(times, times[1:], strict=False)], len(times)


async def drive(url: str, requests: list[tuple[list[int], int]], clients: int) -> dict:
    """Send every request with `clients` concurrent streaming clients; the figures of the run."""
    todo = iter(requests)
    ttft, gaps, tokens = [], [], 0

    async def client(http: httpx.AsyncClient):
        nonlocal tokens
        for prompt, n in todo:  # a shared iterator: each client takes the next request
            first, between, count = await one_request(http, prompt, n)
            ttft.append(first)
            gaps.extend(between)
            tokens += count

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(requests), "tokens": tokens, "seconds": wall,
            "tok_s": tokens / wall, "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p50": percentile(gaps, 50), "itl_p99": percentile(gaps, 99)}


def hf_static(model, requests: list[tuple[list[int], int]], batch: int) -> dict:
    """transformers generate over static batches of `batch` requests, in order; useful tokens / wall time."""
    t0 = time.perf_counter()
    useful = 0
    for i in range(0, len(requests), batch):
        group = requests[i:i + batch]
        width = max(len(p) for p, _ in group)
        ids = torch.tensor([[0] * (width - len(p)) + p for p, _ in group])  # (B, T), left-padded
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p, _ in group])
        n = max(k for _, k in group)  # a static batch runs until its longest request is done
        with torch.inference_mode():
            model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           pad_token_id=0)
        useful += sum(k for _, k in group)
    wall = time.perf_counter() - t0
    return {"batch": batch, "tokens": useful, "seconds": wall, "tok_s": useful / wall}


def plot(levels: list[dict], hf: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [r["clients"] for r in levels]
    a.plot(xs, [r["tok_s"] for r in levels], "o-", label="llmlab serve (continuous batching)")
    if hf:
        a.plot([r["batch"] for r in hf], [r["tok_s"] for r in hf], "s--", label="transformers, static batches")
    a.axhline(levels[0]["tok_s"], color="gray", ls=":", label="sequential (one at a time)")
    a.set(xscale="log", xlabel="concurrent clients (HF: batch size)", ylabel="generated tokens / s",
          title="Throughput")
    a.set_xticks(xs, [str(x) for x in xs])
    a.legend(fontsize=8)
    for key, style in (("ttft_p50", "o-"), ("ttft_p99", "o--"), ("itl_p50", "s-"), ("itl_p99", "s--")):
        b.plot(xs, [r[key] for r in levels], style, label=key.replace("_", " "))
    b.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="seconds", title="Latency")
    b.set_xticks(xs, [str(x) for x in xs])
    b.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    import llmlab
    from llmlab.eval.arena.server import BackgroundServer
    from llmlab.models.pretrained import resolve_alias
    from llmlab.serve import create_app

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="GGUF file or alias")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-batch", type=int, default=64, help="the engine's batch limit")
    parser.add_argument("--quick", action="store_true", help="32 requests of 8..32 tokens; HF at batch 16 only")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--out", default=str(RESULTS / "serve_load.png"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_range = (8, 32) if args.quick else (16, 64)
    requests = make_requests(32 if args.quick else args.requests, out_range)
    path = Path(resolve_alias(args.model) if not args.model.endswith(".gguf") else args.model)

    lm = llmlab.load(str(path))
    app = create_app(lm, api_key="", max_batch=args.max_batch, max_waiting=1024)
    levels = []
    with BackgroundServer(app, timeout=60) as url:
        asyncio.run(drive(url, make_requests(4, (4, 4), seed=1), 2))  # warm-up
        for c in args.clients:
            levels.append(asyncio.run(drive(url, requests, c)))
            r = levels[-1]
            print(f"clients {c:3d}: {r['tok_s']:7.1f} tok/s  TTFT p50 {r['ttft_p50']:.3f} s p99 {r['ttft_p99']:.3f} s"
                  f"  ITL p50 {r['itl_p50'] * 1000:.1f} ms p99 {r['itl_p99'] * 1000:.1f} ms", flush=True)
    del lm, app

    hf = []
    if not args.no_hf:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                  dtype=torch.float32).eval()
        hf_static(model, make_requests(2, (4, 4), seed=1), 2)  # warm-up
        for b in ([16] if args.quick else args.clients):
            hf.append(hf_static(model, requests, b))
            print(f"transformers static batch {b:3d}: {hf[-1]['tok_s']:7.1f} tok/s", flush=True)
    plot(levels, hf, Path(args.out))

    by_clients = {r["clients"]: r for r in levels}
    sequential = by_clients.get(1)
    at16, hf16 = by_clients.get(16), next((r for r in hf if r["batch"] == 16), None)
    result = {"model": path.name, "threads": args.threads, "quick": args.quick, "requests": len(requests),
              "output_tokens": list(out_range), "prompt_tokens": [48, 80], "levels": levels, "hf_static": hf,
              "plot": args.out}
    if at16 and sequential:
        result["x_sequential_at_16"] = at16["tok_s"] / sequential["tok_s"]
    if at16 and hf16:
        result["x_hf_static_at_16"] = at16["tok_s"] / hf16["tok_s"]
    if at16:
        result["ttft_p99_at_16"] = at16["ttft_p99"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
