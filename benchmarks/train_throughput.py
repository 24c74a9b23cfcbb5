"""Training throughput: llmlab's Transformer vs transformers' model of the identical config.

Same weights (copied through llmlab's converter), same batch, same optimizer
(AdamW), the same autocast (`--precision`, as `llmlab pretrain`'s: auto is bf16 on
CUDA and float32 on CPU), forward + backward + step, one run, same machine. Prints
tokens/s for both and the ratio; on CUDA also MFU. Last line: one JSON object.

    python benchmarks/train_throughput.py --preset llama-small --batch-size 8 --steps 10
    python benchmarks/train_throughput.py --preset llama-tiny --precision bf16   # the speedrun's CPU path
"""

import argparse
import json
import time

import torch
import transformers

from llmlab.common.measure import sync
from llmlab.models import Transformer, get_preset
from llmlab.models.gpt import flops_per_token
from llmlab.models.hf import config_to_hf, state_dict_to_hf
from llmlab.train.loop import PRECISIONS, autocast, autocast_dtype, peak_flops
from llmlab.train.objectives import causal_lm_loss


def time_steps(step, n_steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds per step over `n_steps` steps, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="llama-small")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    args = parser.parse_args()

    device = torch.device(args.device)
    config = get_preset(args.preset, seq_len=args.seq_len)
    torch.manual_seed(0)
    ours = Transformer(config).to(device)
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf_config._attn_implementation = "sdpa"
    hf = transformers.AutoModelForCausalLM.from_config(hf_config).to(device)
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), config), strict=False)
    idx = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len + 1), device=device)
    x, y = idx[:, :-1], idx[:, 1:]
    amp_dtype = autocast_dtype(args.precision, device)
    amp = autocast(device, amp_dtype)
    fused = device.type == "cuda"

    def stepper(model, loss_of):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

        def step():
            with amp:
                loss = loss_of(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    ours_step = stepper(ours, lambda m: causal_lm_loss(m(x), y))
    hf_step = stepper(hf, lambda m: causal_lm_loss(m(input_ids=x).logits, y))
    # interleave so both see the same machine state
    t_ours = time_steps(ours_step, args.steps, args.warmup, device)
    t_hf = time_steps(hf_step, args.steps, args.warmup, device)
    t_ours = min(t_ours, time_steps(ours_step, args.steps, 0, device))
    t_hf = min(t_hf, time_steps(hf_step, args.steps, 0, device))

    tokens = args.batch_size * args.seq_len
    result = {"preset": args.preset, "device": str(device), "precision": str(amp_dtype or torch.float32),
              "batch_size": args.batch_size, "seq_len": args.seq_len,
              "llmlab_tokens_per_s": tokens / t_ours, "transformers_tokens_per_s": tokens / t_hf,
              "ratio_llmlab_over_transformers": t_hf / t_ours}
    peak = peak_flops(device)
    if peak:
        fpt = flops_per_token(config, args.seq_len)
        result.update(llmlab_mfu=fpt * tokens / t_ours / peak, transformers_mfu=fpt * tokens / t_hf / peak)
    print(f"llmlab       {result['llmlab_tokens_per_s']:>10,.0f} tokens/s")
    print(f"transformers {result['transformers_tokens_per_s']:>10,.0f} tokens/s")
    print(f"ratio        {result['ratio_llmlab_over_transformers']:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
