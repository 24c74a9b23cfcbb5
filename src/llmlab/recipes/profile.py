"""`llmlab profile`: where a training step and a decoding step spend their time, against this machine's peaks.

    llmlab profile --preset llama-tiny --out runs/profile
    llmlab profile --model runs/speedrun --device cuda

Measures the peak matmul FLOP/s and the memory bandwidth, times training steps (MFU) and decoding steps (MBU),
profiles a few of each (trace.json, the top operators), places every linear layer's matmul on a roofline
(roofline.png), and optionally times training under bf16 autocast and torch.compile. Writes report.md and
report.json. The measurements are `llmlab.train.profile`'s.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.common import log
from llmlab.common.config import arg
from llmlab.common.device import resolve_device
from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic, write_text_atomic
from llmlab.models import Transformer, get_preset
from llmlab.models.config import PRESETS
from llmlab.models.gpt import count_parameters, flops_per_token
from llmlab.train.loop import peak_flops
from llmlab.train.profile import (
    decode_bytes_per_token,
    linear_matmuls,
    make_decode_step,
    make_train_step,
    memory_bandwidth,
    peak_matmul_flops,
    plot_roofline,
    profile_steps,
    time_matmuls,
    time_steps,
)


@dataclass
class ProfileArgs:
    model: str | None = arg(None, "a model llmlab.load opens (run folder, checkpoint, alias); default: a fresh "
                                  "--preset")
    preset: str = arg("llama-tiny", "model preset when no --model is given (the speedrun's)", choices=sorted(PRESETS))
    out: str = arg("runs/profile", "folder for report.md, report.json, trace.json, roofline.png")
    device: str = arg("auto", "cpu, cuda or auto")
    batch_size: int = arg(8, "sequences per training step")
    seq_len: int | None = arg(None, "training context length (default: the model's, at most 256)")
    steps: int = arg(5, "timed training steps (after 2 warm-ups); the best one counts")
    decode_tokens: int = arg(32, "timed decoding steps")
    profile_steps: int = arg(2, "training and decoding steps run under torch.profiler")
    top: int = arg(15, "operators in the top-by-self-time table")
    matmul_size: int | None = arg(None, "side of the square matmul that measures peak FLOP/s (default: 1024 on a "
                                        "CPU, 8192 on a GPU)")
    copy_mb: int = arg(256, "megabytes copied to measure memory bandwidth (far beyond the caches)")
    cache_mb: int = arg(2, "megabytes copied to measure the cache's bandwidth on a CPU (0: skip)")
    bf16: bool = arg(True, "also time training under bf16 autocast")
    compile: bool = arg(True, "also time training with torch.compile (its compile time is reported apart)")


def _model(args: ProfileArgs, device: torch.device) -> torch.nn.Module:
    if args.model:
        from llmlab.loading import load

        model = load(args.model, device=device).model
        if not hasattr(model, "config") or not hasattr(model.config, "n_kv_head"):
            raise UserError(f"--model {args.model}: not a decoder llmlab can profile; give a decoder's folder")
        return model.train()
    config = get_preset(args.preset)
    return Transformer(get_preset(args.preset, seq_len=min(config.seq_len, 256))).to(device)


def run(args: ProfileArgs) -> dict:
    if args.batch_size < 1 or args.steps < 1 or args.decode_tokens < 1 or args.profile_steps < 1:
        raise UserError("--batch-size, --steps, --decode-tokens and --profile-steps must be at least 1")
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = _model(args, device)
    T = args.seq_len or min(model.config.seq_len, 256)
    if T > model.config.seq_len:
        raise UserError(f"--seq-len {T}: longer than the model's context window ({model.config.seq_len})")
    tokens = args.batch_size * T
    context = T // 2  # decoding starts after a prompt of half the training context
    if context + args.decode_tokens > model.config.seq_len:
        raise UserError(f"--decode-tokens {args.decode_tokens}: the prompt of {context} tokens plus these do not fit "
                        f"the context window ({model.config.seq_len})")

    log.info(f"[1/5] peaks on {device}: a square float32 matmul, a {args.copy_mb} MB copy")
    peak = peak_matmul_flops(device, torch.float32, args.matmul_size)
    peak_bf16 = peak_matmul_flops(device, torch.bfloat16, args.matmul_size) if device.type == "cuda" else None
    bandwidth = memory_bandwidth(device, args.copy_mb)
    cache = memory_bandwidth(device, args.cache_mb, repeats=50) if args.cache_mb and device.type == "cpu" else None

    log.info(f"[2/5] training: {args.steps} steps of {args.batch_size} x {T} tokens")
    amp = torch.bfloat16 if device.type == "cuda" else None  # as pretraining trains on each device
    train = time_steps(make_train_step(model, args.batch_size, T, amp), args.steps, device=device)
    fpt = flops_per_token(model.config, T)
    tokens_per_s = tokens / train["best_s"]
    train_peak = peak_bf16 if amp else peak
    spec = peak_flops(device)
    training = {**train, "tokens": tokens, "tokens_per_s": tokens_per_s, "flops_per_token": fpt,
                "achieved_flops": fpt * tokens_per_s, "mfu": fpt * tokens_per_s / train_peak,
                "mfu_spec": fpt * tokens_per_s / spec if spec else None, "spec_peak_flops": spec,
                "dtype": "bfloat16 autocast" if amp else "float32"}

    log.info(f"[3/5] decoding: {args.decode_tokens} tokens after a {context}-token prompt")
    decode_step = make_decode_step(model, context)
    decode = time_steps(decode_step, args.decode_tokens, device=device)
    mean_context = context + args.decode_tokens // 2
    bytes_per_token = decode_bytes_per_token(model, mean_context)
    decoding = {**decode, "tokens_per_s": 1 / decode["best_s"], "bytes_per_token": bytes_per_token,
                "achieved_bandwidth": bytes_per_token / decode["best_s"],
                "mbu": bytes_per_token / decode["best_s"] / bandwidth, "context": mean_context}
    model.train()

    log.info(f"[4/5] torch.profiler over {args.profile_steps} training and decoding steps; the roofline")
    top = profile_steps(make_train_step(model, args.batch_size, T, amp), decode_step, args.profile_steps,
                        args.profile_steps, out / "trace.json", device, args.top)
    model.train()
    roof = {"training (B*T rows)": time_matmuls(linear_matmuls(model, tokens), device),
            "decoding (1 row)": time_matmuls(linear_matmuls(model, 1), device)}
    plot_roofline(roof, peak, bandwidth, out / "roofline.png", cache_bandwidth=cache,
                  title=f"roofline on {device}: float32 linear layers of {count_parameters(model) / 1e6:.2f}M params")

    variants = {}
    if args.bf16 and device.type == "cpu":
        log.info("[5/5] training under bf16 autocast")
        variants["bf16 autocast"] = time_steps(make_train_step(model, args.batch_size, T, torch.bfloat16),
                                               args.steps, device=device)
    if args.compile:
        log.info("[5/5] training with torch.compile (the first steps compile)")
        variants["torch.compile"] = time_steps(make_train_step(model, args.batch_size, T, amp, compile=True),
                                               args.steps, device=device)
    for v in variants.values():
        v.update(tokens_per_s=tokens / v["best_s"], speedup=train["best_s"] / v["best_s"])

    report = {"device": str(device), "model": model.config.to_dict(), "n_params": count_parameters(model),
              "peak_flops": peak, "peak_flops_bf16": peak_bf16, "bandwidth": bandwidth,
              "cache_bandwidth": cache, "training": training,
              "decoding": decoding, "variants": variants, "top_ops": top,
              "roofline": {k: [mm.to_dict() for mm in v] for k, v in roof.items()},
              "config": dataclasses.asdict(args), "threads": torch.get_num_threads()}
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", _report_markdown(report))
    log.info(f"MFU {training['mfu']:.1%}, MBU {decoding['mbu']:.1%} on {device}; report in {out / 'report.md'}")
    return report


def _report_markdown(r: dict) -> str:
    t, d = r["training"], r["decoding"]
    c = r["model"]
    lines = [
        "# llmlab profile", "",
        f"{r['n_params']:,} parameters ({c['n_layer']} layers, width {c['n_embd']}, vocabulary {c['vocab_size']}) on "
        f"{r['device']} with {r['threads']} threads.", "",
        "## Peaks measured in this run", "",
        "| figure | value |", "|---|---|",
        f"| float32 matmul | {r['peak_flops'] / 1e9:,.1f} GFLOP/s |",
        *([f"| bfloat16 matmul | {r['peak_flops_bf16'] / 1e9:,.1f} GFLOP/s |"] if r["peak_flops_bf16"] else []),
        f"| memory bandwidth (copy) | {r['bandwidth'] / 1e9:,.1f} GB/s |",
        *([f"| cache bandwidth ({r['config']['cache_mb']} MB copy) | {r['cache_bandwidth'] / 1e9:,.1f} GB/s |"]
          if r["cache_bandwidth"] else []),
        f"| ridge point | {r['peak_flops'] / r['bandwidth']:.1f} FLOPs per byte |", "",
        "## Training and decoding", "",
        "| figure | value |", "|---|---|",
        f"| training step ({t['tokens']:,} tokens, {t['dtype']}) | best {t['best_s'] * 1e3:,.1f} ms, median "
        f"{t['median_s'] * 1e3:,.1f} ms |",
        f"| training tokens/s | {t['tokens_per_s']:,.0f} |",
        f"| FLOPs per token (6N + attention) | {t['flops_per_token']:,.0f} |",
        f"| **MFU** (against the measured peak) | **{t['mfu']:.1%}** |",
        *([f"| MFU against the spec sheet ({t['spec_peak_flops'] / 1e12:.0f} TFLOP/s) | {t['mfu_spec']:.1%} |"]
          if t["mfu_spec"] else []),
        f"| decoding step (batch 1, ~{d['context']} cached positions) | best {d['best_s'] * 1e3:,.2f} ms |",
        f"| decoding tokens/s | {d['tokens_per_s']:,.0f} |",
        f"| bytes read per token (weights + KV cache) | {d['bytes_per_token']:,} |",
        f"| **MBU** (against the measured bandwidth) | **{d['mbu']:.1%}** |",
        *([f"| MBU against the cache's bandwidth | {d['achieved_bandwidth'] / r['cache_bandwidth']:.1%} |"]
          if r["cache_bandwidth"] else []), "",
        "Weights that fit in a CPU's cache are read faster than memory allows: a small model's MBU can pass "
        "100%.", "",
    ]
    if r["variants"]:
        lines += ["## Training variants", "", "| variant | best step | tokens/s | speed-up | warm-up (compile) |",
                  "|---|---|---|---|---|",
                  f"| baseline ({t['dtype']}) | {t['best_s'] * 1e3:,.1f} ms | {t['tokens_per_s']:,.0f} | 1.00x | "
                  f"{t['warmup_s']:.1f} s |"]
        for name, v in r["variants"].items():
            lines.append(f"| {name} | {v['best_s'] * 1e3:,.1f} ms | {v['tokens_per_s']:,.0f} | {v['speedup']:.2f}x | "
                         f"{v['warmup_s']:.1f} s |")
        lines.append("")
    lines += ["## Roofline", "", "![roofline](roofline.png)", "",
              "| phase | layer | count | (m, k, n) | FLOPs per byte | GFLOP/s alone |", "|---|---|---|---|---|---|"]
    for phase, mms in r["roofline"].items():
        for mm in mms:
            lines.append(f"| {phase} | {mm['name']} | {mm['count']} | ({mm['m']}, {mm['k']}, {mm['n']}) | "
                         f"{mm['intensity']:.2f} | {(mm['flops_per_s'] or 0) / 1e9:,.2f} |")
    lines += ["", "## Top operators by self time (under torch.profiler)", "",
              "Open `trace.json` in chrome://tracing or https://ui.perfetto.dev for the timeline.", "",
              "| operator | calls | self ms | share | total ms |", "|---|---|---|---|---|"]
    for op in r["top_ops"]:
        lines.append(f"| `{op['op']}` | {op['calls']} | {op['self_ms']:,.2f} | {op['share']:.1%} | "
                     f"{op['total_ms']:,.2f} |")
    return "\n".join([*lines, ""])
