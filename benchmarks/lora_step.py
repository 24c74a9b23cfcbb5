"""LoRA training step, llmlab vs peft: time and peak memory on the same model, batch and sequence length.

Both sides hold the same weights (a SmolLM2-135M-shaped Llama by default, random init, no download):
llmlab's `Transformer` + `apply_lora`, and transformers' `LlamaForCausalLM` + `peft.get_peft_model`.
A step is forward, cross-entropy over every position, backward and AdamW on the adapter. Steps
alternate between the two so background load hits both alike; the median is reported. CPU numbers
on a shared machine are noisy: compare ratios, not absolute times.

    python benchmarks/lora_step.py --batch 4 --seq-len 256 --steps 6
    python benchmarks/lora_step.py --device cuda --dtype bfloat16 --batch 8 --seq-len 1024

The last line printed is one JSON object with the figures and the ratios (llmlab / peft).
"""

import argparse
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from functools import partial

import peft
import torch
import torch.nn.functional as F
import transformers

from llmlab.common.measure import PeakMemory, best_seconds
from llmlab.finetune.lora import apply_lora
from llmlab.models import Transformer, get_preset
from llmlab.models.hf import config_to_hf, state_dict_to_hf


def build(args, device):
    """Both models with the same weights and LoRA settings: (llmlab, peft, config)."""
    torch.manual_seed(0)
    config = get_preset(args.preset, seq_len=max(args.seq_len, 256))
    ours = Transformer(config)
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), config), strict=False)
    if config.tie_embeddings:
        hf.tie_weights()
    targets = args.targets.split(",")
    apply_lora(ours, args.rank, args.alpha, 0.0, targets)
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                                     target_modules=targets))
    return ours.to(device).train(), theirs.to(device).train(), config


def make_step(model, forward, device, dtype):
    """One training step of `model` (forward(idx) -> logits), adapter parameters only."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step(idx):
        with amp:
            logits = forward(idx)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def steps_for(ours, theirs, device, dtype) -> dict:
    return {"llmlab": make_step(ours, ours, device, dtype),
            "peft": make_step(theirs, lambda x: theirs(input_ids=x).logits, device, dtype)}


def peak_of(args, name: str) -> float | None:
    """Extra memory two training steps need above the loaded models (MB). Run in a fresh process per
    side, so neither inherits memory the other freed (a CPU process's resident set never shrinks)."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    ours, theirs, config = build(args, device)
    step = steps_for(ours, theirs, device, dtype)[name]
    idx = torch.randint(0, config.vocab_size, (args.batch, args.seq_len)).to(device)
    memory = PeakMemory(device)  # CUDA: allocator peak; CPU: peak resident set, reset here
    step(idx), step(idx)
    return memory.extra_mb()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per side (after 2 warm-up steps)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    ours, theirs, config = build(args, device)
    idx = torch.randint(0, config.vocab_size, (args.batch, args.seq_len),
                        generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():  # same weights, adapters start at zero: the same logits
        diff = (ours(idx) - theirs(input_ids=idx).logits).abs().max().item()
    print(f"max |logits llmlab - peft| before training: {diff:.2e}")
    steps = steps_for(ours, theirs, device, dtype)
    memory = {}
    for name in steps:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            memory[name] = pool.submit(peak_of, args, name).result()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps + 1):  # alternate, so background load hits both alike; round 0 is warm-up
        for name, step in (steps.items() if i % 2 == 0 else reversed(steps.items())):
            seconds = best_seconds(partial(step, idx), 1, device)  # one step, GPU work waited for
            if i > 0:
                times[name].append(seconds)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in steps:
        mem = f"{memory[name]:.0f} MB" if memory[name] is not None else "n/a"
        print(f"{name:7s} {med[name] * 1e3:9.1f} ms/step (median of {args.steps}), peak extra memory {mem}")
    ratio = med["llmlab"] / med["peft"]
    print(f"llmlab / peft time per step: {ratio:.3f} ({'llmlab faster' if ratio < 1 else 'peft faster'})")
    result = {"benchmark": "lora_step", "preset": args.preset, "device": str(device), "dtype": args.dtype,
              "batch": args.batch, "seq_len": args.seq_len, "rank": args.rank, "targets": args.targets,
              "llmlab_ms_per_step": med["llmlab"] * 1e3, "peft_ms_per_step": med["peft"] * 1e3,
              "time_ratio_llmlab_over_peft": ratio, "llmlab_peak_extra_mb": memory["llmlab"],
              "peft_peak_extra_mb": memory["peft"],
              "memory_ratio_llmlab_over_peft": (memory["llmlab"] / memory["peft"]
                                                if memory["llmlab"] and memory["peft"] else None),
              "torch": torch.__version__, "peft": peft.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
