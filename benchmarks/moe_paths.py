"""Mixture-of-experts paths: the readable loop against the sorted and the batched (padded bmm) paths.

One MoE layer (SwiGLU experts, top-k routing from a random router, no capacity limit), the same weights and
tokens for every path, forward + backward of a scalar of the output (training) and forward alone under
no_grad (inference). Prints tokens/s per path and each fast path's ratio to the loop; best of `--repeats`
timings of `--steps` steps each, after a warmup. Last line: one JSON object.

    python benchmarks/moe_paths.py                  # a few shapes on the CPU
    python benchmarks/moe_paths.py --device cuda
"""

import argparse
import json
import time

import torch

from llmlab.common.measure import sync
from llmlab.models import ModelConfig
from llmlab.models.moe import MoE

PATHS = ("loop", "sorted", "batched")
# (n_embd, expert_size, n_expert, top_k, tokens): compare moe's default, moe-small's, many small experts, wide
SHAPES = [(128, 128, 8, 2, 1024), (192, 128, 8, 2, 2048), (64, 64, 32, 2, 1024), (256, 512, 8, 2, 2048)]


def tokens_per_s(fn, n_tokens: int, steps: int, repeats: int, device: torch.device) -> float:
    fn()  # warmup: allocator, kernels
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return n_tokens * steps / best


def measure(shape: tuple, steps: int, repeats: int, device: torch.device) -> dict:
    C, size, E, k, N = shape
    config = ModelConfig(vocab_size=16, n_layer=1, n_head=4, n_embd=C, mlp="swiglu", bias=False, n_expert=E,
                         expert_top_k=k, expert_size=size)
    torch.manual_seed(0)
    moe = MoE(config).to(device)
    x = torch.randn(1, N, C, device=device, requires_grad=True)

    def train_step():
        moe(x).pow(2).mean().backward()

    @torch.no_grad()
    def infer_step():
        moe(x)

    row = {"n_embd": C, "expert_size": size, "n_expert": E, "top_k": k, "tokens": N}
    for path in PATHS:
        moe.impl = path
        row[f"{path}_train"] = tokens_per_s(train_step, N, steps, repeats, device)
        row[f"{path}_infer"] = tokens_per_s(infer_step, N, steps, repeats, device)
    for path in PATHS[1:]:
        for mode in ("train", "infer"):
            row[f"{path}_{mode}_ratio"] = row[f"{path}_{mode}"] / row[f"loop_{mode}"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    print(f"device {device}, threads {torch.get_num_threads()}; tokens/s (ratio to the loop)")
    for shape in SHAPES:
        row = measure(shape, args.steps, args.repeats, device)
        rows.append(row)
        cells = [f"{m} loop {row[f'loop_{m}']:.0f}, " + ", ".join(
            f"{p} {row[f'{p}_{m}']:.0f} ({row[f'{p}_{m}_ratio']:.2f}x)" for p in PATHS[1:]) for m in ("train", "infer")]
        print(f"C={shape[0]} expert={shape[1]} E={shape[2]} k={shape[3]} N={shape[4]}: " + "; ".join(cells),
              flush=True)
    print(json.dumps({"benchmark": "moe_paths", "device": str(device), "threads": torch.get_num_threads(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
