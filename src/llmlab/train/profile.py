"""Where training and decoding time goes, and how close they come to what the machine can do.

- **Peaks, measured here, not read from a spec sheet:** the best FLOP/s of a large square matmul, and the
  memory bandwidth of a large copy (each byte read once and written once), best of several tries.
- **The roofline** (Williams, Waterman & Patterson 2009): a kernel doing I FLOPs per byte moved can reach at
  most min(peak FLOP/s, I x bandwidth). Every matmul of the model's linear layers at the run's shapes is placed
  by its intensity and the FLOP/s it reaches alone: training's (B*T, in) x (in, out) sit near the compute
  roof, decoding's single row (1, in) x (in, out) reads a whole weight matrix for 2 FLOPs per weight.
- **MFU and MBU:** model FLOPs utilisation of a training step (`flops_per_token` x tokens/s over the measured
  peak, as PaLM defines it) and model bandwidth utilisation of a decoding step (weights plus KV cache read per
  token x tokens/s over the measured bandwidth).
- **torch.profiler** over a few training and decoding steps: a Chrome trace (chrome://tracing or
  https://ui.perfetto.dev) and the operators with the most self time.

Timed steps run outside the profiler: its bookkeeping would slow the small operators down. This file
measures; it trains nothing worth keeping, and the `profile` recipe writes the report.
"""

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.io import atomic_write
from llmlab.common.measure import best_seconds, sync
from llmlab.models.kv_cache import KVCache
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import make_adamw


@dataclass
class Matmul:
    """One matmul (m, k) x (k, n) as a linear layer runs it: `count` layers share the shape."""

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    element_bytes: int = 4
    seconds: float | None = None  # one call, timed alone

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n  # a multiply and an add per term

    @property
    def bytes(self) -> int:
        return self.element_bytes * (self.m * self.k + self.k * self.n + self.m * self.n)  # read x, w; write y

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes

    @property
    def flops_per_s(self) -> float | None:
        return self.flops / self.seconds if self.seconds else None

    def to_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops, "bytes": self.bytes, "intensity": self.intensity,
                "flops_per_s": self.flops_per_s}


def linear_matmuls(model: nn.Module, tokens: int, element_bytes: int = 4) -> list[Matmul]:
    """The forward matmul of every nn.Linear with `tokens` rows in (B*T when training, B when decoding one
    token), layers of one shape merged: llama-tiny's q_proj and o_proj (4 layers) -> Matmul("q_proj/o_proj", count=8).
    (Backward runs two more matmuls of the same FLOPs per layer: 6 = 2 + 4 FLOPs per weight per token.)"""
    shapes: dict[tuple[int, int], Matmul] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            key, short = (module.in_features, module.out_features), name.rsplit(".", 1)[-1]
            if key not in shapes:
                shapes[key] = Matmul(short, tokens, module.in_features, module.out_features, 0, element_bytes)
            elif short not in shapes[key].name.split("/"):
                shapes[key].name += "/" + short  # two layers of one shape
            shapes[key].count += 1
    return list(shapes.values())


def time_matmuls(matmuls: list[Matmul], device: torch.device, dtype: torch.dtype = torch.float32,
                 repeats: int = 5) -> list[Matmul]:
    """Time each matmul alone on random inputs (best of `repeats`), filling in `seconds`."""
    for mm in matmuls:
        x = torch.randn(mm.m, mm.k, device=device, dtype=dtype)
        w = torch.randn(mm.n, mm.k, device=device, dtype=dtype)
        F.linear(x, w)  # warm-up: first calls pick kernels
        mm.seconds = best_seconds(lambda x=x, w=w: F.linear(x, w), repeats, device)
    return matmuls


def peak_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                      repeats: int = 20) -> float:
    """FLOP/s of the best of `repeats` square matmuls of `size` (default: 1024 on a CPU, 8192 on a GPU).

    Many short tries, not a few long ones: on a shared machine a 20 ms matmul often runs undisturbed, a
    1 s one rarely does (1024^2 already reaches a CPU core's peak; a GPU needs larger tiles to fill its SMs).
    """
    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats, device)


def memory_bandwidth(device: torch.device, megabytes: int = 256, repeats: int = 10) -> float:
    """Bytes/s of copying `megabytes` (far larger than any cache): each byte is read once and written once."""
    src = torch.ones(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: the pages get mapped
    return 2 * src.nbytes / best_seconds(lambda: dst.copy_(src), repeats, device)


def make_train_step(model: nn.Module, batch_size: int, seq_len: int, autocast_dtype: torch.dtype | None = None,
                    compile: bool = False) -> Callable[[], float]:
    """A closure running one training step (forward, backward, AdamW) on random tokens; returns its loss."""
    device = next(model.parameters()).device
    optimizer = make_adamw(model, 1e-4, device_type=device.type)  # tiny lr: the weights barely change
    run = torch.compile(model) if compile else model
    amp = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
    generator = torch.Generator(device="cpu").manual_seed(0)
    idx = torch.randint(0, model.config.vocab_size, (batch_size, seq_len + 1), generator=generator).to(device)

    def step() -> float:
        with amp():
            loss = causal_lm_loss(run(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # .item() waits for the device, so a timer around step() is honest

    return step


def time_steps(step: Callable[[], object], steps: int, warmup: int = 2, device: torch.device | None = None) -> dict:
    """Run `warmup` untimed steps (compilation happens there), then `steps` timed; best and median seconds."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"best_s": times[0], "median_s": times[len(times) // 2], "warmup_s": warmup_s, "steps": steps}


def make_decode_step(model: nn.Module, context: int, prompt: list[int] | None = None) -> Callable[[], int]:
    """A closure decoding one greedy token with the KV cache after a `context`-token prompt (batch 1; random
    ids unless `prompt` is given); it starts over whenever the cache is full, so it can run any number of
    times. Its tokens are `llmlab.infer.generate`'s at temperature 0."""
    device = next(model.parameters()).device
    cache = KVCache.for_model(model, 1, model.config.seq_len)
    if prompt is None:
        prompt = torch.randint(0, model.config.vocab_size, (context,)).tolist()
    prompt = torch.tensor([prompt[:context]], device=device)  # (1, context)
    state = {"next": None}

    @torch.inference_mode()
    def step() -> int:
        if state["next"] is None or cache.pos >= cache.max_len:
            cache.reset()
            state["next"] = model(prompt, kv_cache=cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        logits = model(state["next"], kv_cache=cache, last_only=True)[:, -1]  # (1, V)
        state["next"] = logits.argmax(-1, keepdim=True)  # (1, 1)
        return int(state["next"])

    model.eval()
    return step


def decode_bytes_per_token(model: nn.Module, context: int) -> int:
    """Bytes a decoding step must read: every weight once (a tied head is the embedding, counted once; the
    embedding lookup itself reads one row, the head all of it) plus the cached keys and values of `context`
    positions."""
    seen, weights = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            weights += p.numel() * p.element_size()
    c = model.config
    kv = 2 * c.n_layer * c.n_kv_head * c.head_dim * context * next(model.parameters()).element_size()
    return weights + kv


def profile_steps(train_step: Callable, decode_step: Callable, train_steps: int, decode_steps: int,
                  trace_path: str | Path, device: torch.device, top: int = 15) -> list[dict]:
    """Run the steps under torch.profiler; write the Chrome trace; the `top` operators by self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(train_steps):
            with record_function("train_step"):
                train_step()
        for _ in range(decode_steps):
            with record_function("decode_step"):
                decode_step()
        sync(device)
    atomic_write(trace_path, prof.export_chrome_trace)
    on_gpu = device.type == "cuda"
    rows = []
    for e in prof.key_averages():
        if e.key in ("train_step", "decode_step"):
            continue
        self_us = getattr(e, "self_device_time_total", 0) if on_gpu else e.self_cpu_time_total
        rows.append({"op": e.key, "calls": e.count, "self_ms": self_us / 1e3, "total_ms": e.cpu_time_total / 1e3})
    rows.sort(key=lambda r: -r["self_ms"])
    total = sum(r["self_ms"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["self_ms"] / total
    return rows[:top]


def plot_roofline(points: dict[str, list[Matmul]], peak: float, bandwidth: float, path: str | Path,
                  title: str = "roofline", cache_bandwidth: float | None = None) -> None:
    """Measured roofs min(peak, I x bandwidth) and each matmul at (intensity, its FLOP/s), per phase.

    `cache_bandwidth` (a copy small enough to stay in cache) draws a second, dashed roof: weights that fit in
    a CPU's cache are read faster than memory allows, so small models' decoding can rise above the first."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt
    import numpy as np

    every = [mm for mms in points.values() for mm in mms]
    x = np.geomspace(min(0.1, *(mm.intensity / 2 for mm in every)), max(1e3, *(mm.intensity * 2 for mm in every)))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(x, np.minimum(peak, x * bandwidth), color="black", linewidth=1.5,
            label=f"roof: {peak / 1e9:.1f} GFLOP/s, {bandwidth / 1e9:.1f} GB/s (ridge at {peak / bandwidth:.1f})")
    if cache_bandwidth:
        ax.plot(x, np.minimum(peak, x * cache_bandwidth), color="gray", linestyle="--", linewidth=1,
                label=f"cache roof: {cache_bandwidth / 1e9:.1f} GB/s")
    for (phase, mms), marker in zip(points.items(), "osD^v", strict=False):
        ax.scatter([mm.intensity for mm in mms], [mm.flops_per_s or np.nan for mm in mms], marker=marker, s=36,
                   zorder=3, label=phase)
        for mm in mms:
            ax.annotate(mm.name, (mm.intensity, mm.flops_per_s or np.nan), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("FLOP/s reached alone")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
