"""`llmlab bench kv-cache`: what the KV cache buys, measured as the sequence grows.

For each length L: the time to produce token L with the cache (one new token
attends to L cached keys) and without it (the whole sequence of L tokens runs
again), and the memory each way: the cache's bytes, held for the whole
generation, against the activations a cache-free step needs at its peak (the
largest being the MLP's hidden layer and the attention scores over L x L).
Writes `<out>/kv_cache.json` and a two-panel `<out>/kv_cache.png`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.io import atomic_write, write_json_atomic
from llmlab.models import KVCache, Transformer, get_preset
from llmlab.models.config import PRESETS


@dataclass
class KVCacheArgs:
    out: str = arg("runs/bench", "folder for kv_cache.json and kv_cache.png")
    model: str | None = arg(None, "a model to load (alias, .gguf, folder, hub id); default: random weights of --preset")
    preset: str = arg("llama-medium", "model preset when no --model", choices=sorted(PRESETS))
    lengths: list[int] = arg([32, 64, 128, 256, 512], "sequence lengths to measure at")
    steps: int = arg(4, "tokens timed per length (the median is kept)")
    threads: int | None = arg(None, "CPU threads for torch")


def _median_ms(fn, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def measure(model: Transformer, lengths: list[int], steps: int) -> list[dict]:
    c = model.config
    rows = []
    with torch.inference_mode():
        for L in lengths:
            if L + steps > c.seq_len:
                log.info(f"skipping length {L}: beyond the context window ({c.seq_len})")
                continue
            seq = torch.randint(0, c.vocab_size, (1, L + steps))
            cache = KVCache.for_model(model, 1, L + steps)
            model(seq[:, :L], kv_cache=cache)  # prefill, not timed

            def cached_step(seq=seq, cache=cache):
                model(seq[:, cache.pos:cache.pos + 1], kv_cache=cache)

            with_ms = _median_ms(cached_step, steps)
            without_ms = _median_ms(lambda seq=seq, L=L: model(seq[:, :L + 1]), steps)
            bytes_per = next(model.parameters()).element_size()
            rows.append({
                "length": L, "ms_per_token_cache": with_ms, "ms_per_token_no_cache": without_ms,
                "kv_cache_bytes": 2 * c.n_layer * c.n_kv_head * L * c.head_dim * bytes_per,
                "no_cache_step_bytes": (L * c.intermediate_size + c.n_head * L * L) * bytes_per,
            })
            r = rows[-1]
            log.info(f"L={L:5d}  cache {with_ms:7.2f} ms/token, {r['kv_cache_bytes'] / 2**20:7.2f} MiB   "
                     f"no cache {without_ms:7.2f} ms/token, {r['no_cache_step_bytes'] / 2**20:7.2f} MiB peak")
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    L = [r["length"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    ax_t.plot(L, [r["ms_per_token_cache"] for r in rows], "o-", label="with KV cache")
    ax_t.plot(L, [r["ms_per_token_no_cache"] for r in rows], "s-", label="without (recompute all)")
    ax_t.set_ylabel("ms per new token")
    ax_m.plot(L, [r["kv_cache_bytes"] / 2**20 for r in rows], "o-", label="KV cache (held)")
    ax_m.plot(L, [r["no_cache_step_bytes"] / 2**20 for r in rows], "s-", label="no cache: step activations (peak)")
    ax_m.set_ylabel("MiB")
    for ax in (ax_t, ax_m):
        ax.set_xlabel("sequence length")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def kv_cache(args: KVCacheArgs) -> list[dict]:
    """Measure, write JSON and PNG, return the rows."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        import llmlab

        model, name = llmlab.load(args.model, with_tokenizer=False).model, args.model
    else:
        torch.manual_seed(0)
        model, name = Transformer(get_preset(args.preset)).eval(), f"{args.preset} (random weights)"
    rows = measure(model, sorted(args.lengths), args.steps)
    out = Path(args.out)
    write_json_atomic(out / "kv_cache.json", {"model": name, "rows": rows})
    plot(rows, out / "kv_cache.png", f"KV cache: {name}")
    log.info(f"wrote {out / 'kv_cache.json'} and {out / 'kv_cache.png'}")
    return rows
