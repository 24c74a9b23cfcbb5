"""DPO training step, llmlab vs TRL's DPOTrainer: time and peak memory on the same model, batch and lengths.

Both sides hold the same weights (a SmolLM2-135M-shaped Llama by default, random init, no download) as a
policy and a frozen reference: llmlab's `Transformer` with `llmlab.align.dpo`'s loss, and transformers'
`LlamaForCausalLM` (converted from ours with `llmlab.models.hf`) inside a `trl.DPOTrainer`, whose own
`_compute_loss` runs (fused LM head, reference forward, sigmoid loss, metrics). A step is the reference
forward, the policy forward and backward, and AdamW on every weight (full DPO). The reference is
recomputed every step on both sides, so caching gives neither an edge. Steps alternate between the two
so background load hits both alike; the median is reported. Compare ratios, not absolute times.

    python benchmarks/dpo_step.py --pairs 2 --prompt-len 64 --completion-len 64 --steps 4
    python benchmarks/dpo_step.py --device cuda --pairs 8 --prompt-len 256 --completion-len 256

The last line printed is one JSON object with the figures and the ratios (llmlab / TRL).
"""

import argparse
import copy
import json
import multiprocessing
import statistics
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import torch
import transformers
import trl
from datasets import Dataset

from llmlab.align.dpo import PreferenceLoss, preference_loss
from llmlab.align.logprobs import sequence_logps
from llmlab.common import log
from llmlab.common.measure import PeakMemory, best_seconds
from llmlab.data.preference import PreferenceExample, collate_preference
from llmlab.models import Transformer, get_preset
from llmlab.models.hf import config_to_hf, state_dict_to_hf
from llmlab.tokenizer import Tokenizer


def build(args, device):
    """(llmlab policy, llmlab reference, TRL trainer, examples): the same weights on both sides."""
    torch.manual_seed(0)
    config = get_preset(args.preset, seq_len=max(args.prompt_len + args.completion_len, 256))
    ours = Transformer(config)
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    hf.load_state_dict(state_dict_to_hf(ours.state_dict(), config), strict=False)
    if config.tie_embeddings:
        hf.tie_weights()
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, config.vocab_size, (n,), generator=g).tolist()  # noqa: E731
    examples = [PreferenceExample(rand(args.prompt_len), rand(args.completion_len), rand(args.completion_len))
                for _ in range(args.pairs)]
    tok_dir = tempfile.mkdtemp()  # TRL needs a tokenizer to exist; the batch is ours, already tokenised
    Tokenizer.train("a tiny text to make a tokenizer from", 260).save_hf(tok_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    hf_tok.pad_token = hf_tok.eos_token = "a"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = trl.DPOTrainer(
            model=hf.to(device).train(), ref_model=copy.deepcopy(hf).to(device).eval(), processing_class=hf_tok,
            args=trl.DPOConfig(output_dir=tempfile.mkdtemp(), report_to=[], bf16=False, use_cpu=device.type == "cpu",
                               max_length=None, per_device_train_batch_size=args.pairs),
            train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "a", "rejected": "aa"}]))
    ref = copy.deepcopy(ours).requires_grad_(False).eval()
    return ours.to(device).train(), ref.to(device), trainer, examples


def make_steps(ours, ref, trainer, examples, device) -> dict:
    """One full-DPO training step per side on the same pairs."""
    batch = {k: v.to(device) for k, v in collate_preference(examples, pad_id=0).items()}
    trl_inputs = {k: v.to(device) for k, v in trainer.data_collator(
        [{"prompt_ids": e.prompt_ids, "chosen_ids": e.chosen_ids, "rejected_ids": e.rejected_ids}
         for e in examples]).items()}
    loss_fn = preference_loss(PreferenceLoss(beta=0.1))
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-6)
    opt_trl = torch.optim.AdamW(trainer.model.parameters(), lr=1e-6)

    def llmlab_step():
        with torch.no_grad():
            ref_logps = sequence_logps(ref, batch["idx"], batch["targets"], batch["attn_mask"])[0]
        loss, _ = loss_fn(ours, (batch["idx"], batch["targets"], {"attn_mask": batch["attn_mask"],
                                                                   "ref_logps": ref_logps}))
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return loss.item()

    def trl_step():
        loss = trainer._compute_loss(trainer.model, trl_inputs, False)
        loss.backward()
        opt_trl.step()
        opt_trl.zero_grad(set_to_none=True)
        return loss.item()

    return {"llmlab": llmlab_step, "trl": trl_step}


def peak_of(args, name: str) -> float | None:
    """Extra memory two steps need above the loaded models (MB), each side in a fresh process."""
    log.set_quiet(True)
    device = torch.device(args.device)
    step = make_steps(*build(args, device), device)[name]
    memory = PeakMemory(device)
    step(), step()
    return memory.extra_mb()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=2, help="preference pairs per step (2x rows)")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--completion-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per side (after a warm-up step)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    log.set_quiet(True)
    device = torch.device(args.device)
    ours, ref, trainer, examples = build(args, device)
    steps = make_steps(ours, ref, trainer, examples, device)
    first = {name: step() for name, step in steps.items()}  # the same weights: the same first loss
    print(f"first-step loss: llmlab {first['llmlab']:.6f}, TRL {first['trl']:.6f}")
    memory = {}
    for name in steps:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            memory[name] = pool.submit(peak_of, args, name).result()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps + 1):  # alternate; round 0 is warm-up
        for name, step in (steps.items() if i % 2 == 0 else reversed(steps.items())):
            seconds = best_seconds(partial(step), 1, device)
            if i > 0:
                times[name].append(seconds)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in steps:
        mem = f"{memory[name]:.0f} MB" if memory[name] is not None else "n/a"
        print(f"{name:7s} {med[name] * 1e3:9.1f} ms/step (median of {args.steps}), peak extra memory {mem}")
    ratio = med["llmlab"] / med["trl"]
    print(f"llmlab / TRL time per step: {ratio:.3f} ({'llmlab faster' if ratio < 1 else 'TRL faster'})")
    result = {"benchmark": "dpo_step", "preset": args.preset, "device": str(device), "pairs": args.pairs,
              "prompt_len": args.prompt_len, "completion_len": args.completion_len,
              "first_loss_llmlab": first["llmlab"], "first_loss_trl": first["trl"],
              "llmlab_ms_per_step": med["llmlab"] * 1e3, "trl_ms_per_step": med["trl"] * 1e3,
              "time_ratio_llmlab_over_trl": ratio, "llmlab_peak_extra_mb": memory["llmlab"],
              "trl_peak_extra_mb": memory["trl"],
              "memory_ratio_llmlab_over_trl": (memory["llmlab"] / memory["trl"]
                                               if memory["llmlab"] and memory["trl"] else None),
              "torch": torch.__version__, "trl": trl.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
