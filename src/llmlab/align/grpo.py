"""GRPO (Shao et al. 2024; DeepSeek-R1, 2025): group-relative policy optimisation with verifiable rewards.

One `grpo_step`:

    1. sample `group_size` completions of each prompt with the KV cache (`rollout`)
    2. score them with reward functions (`rewards.score_samples`), weighted and summed
    3. advantages: each reward against its own group's mean (and std)
    4. `num_iterations` passes of the clipped-ratio loss (`rl_losses.grpo_loss`), with an optional k3 KL
       to the reference; from the second pass on the ratio is against the sampling policy's logps

and the numbers TRL logs: reward mean/std per function, completion length, KL, clip fractions. No value
model, no reward model: the group mean is the baseline. For LoRA the reference is the same model with
the adapters switched off (`llmlab.finetune.lora.lora_disabled`), so it costs no memory. The loop,
schedule and checkpoints are the recipe's (`llmlab.recipes.align_rl`); `answer_accuracy` scores greedy
answers on held-out prompts (accuracy, tokens per answer, share finished).
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from llmlab.align.rewards import RewardFn, Sample, answer_is_correct, score_samples
from llmlab.align.rl_losses import GRPO_LOSS_TYPES, group_advantages, grpo_loss
from llmlab.align.rollout import completion_logps, rollout
from llmlab.common.errors import UserError
from llmlab.finetune.lora import lora_disabled, lora_modules
from llmlab.infer.generate import generate_batch

RefFn = Callable[[list[list[int]], torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class GRPOSettings:
    group_size: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    beta: float = 0.0  # TRL's default: no KL term (DAPO and Dr. GRPO drop it for verifiable rewards)
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2  # DAPO's "clip higher" uses 0.28
    loss_type: str = "grpo"
    num_iterations: int = 1
    scale_rewards: bool = True
    grad_clip: float = 1.0
    micro_batch: int = 0  # completions per forward/backward (0: all at once)

    def check(self) -> None:
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise UserError(f"loss_type {self.loss_type!r}: unknown; choose one of {', '.join(GRPO_LOSS_TYPES)}")
        if self.group_size < 2:
            raise UserError(f"group_size {self.group_size}: GRPO compares completions within a group; use 2 or more")
        if self.num_iterations < 1 or self.max_new_tokens < 1:
            raise UserError("num_iterations and max_new_tokens must be at least 1")


def reference_fn(model: torch.nn.Module, ref_model: torch.nn.Module | None = None, temperature: float = 1.0) -> RefFn:
    """Per-token logps under the reference: `ref_model`, or `model` with its adapters off (LoRA)."""
    if ref_model is None and not lora_modules(model):
        raise ValueError("a reference needs ref_model, or a LoRA model whose adapters can be switched off")

    def ref(prompt_ids: list[list[int]], completion_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = ref_model if ref_model is not None else model
        context = lora_disabled(model) if ref_model is None else contextlib.nullcontext()
        with torch.no_grad(), context:
            return completion_logps(target, prompt_ids, completion_ids, mask, temperature)[0]

    return ref


def grpo_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokenizer, tasks: list[dict],
              rewards: dict[str, RewardFn], weights: list[float], settings: GRPOSettings, *, seed: int,
              stop_ids: set[int], ref: RefFn | None = None, skip_reward_errors: bool = False) -> dict[str, float]:
    """One GRPO update on `tasks` ({"prompt_ids", "prompt", "answer"}); returns the step's metrics.

    Raises UserError on a non-finite loss before the optimizer steps, so the caller's last checkpoint stands.
    """
    s = settings
    G = s.group_size
    ro = rollout(model, tokenizer, [t["prompt_ids"] for t in tasks], G, s.max_new_tokens, seed=seed,
                 stop_ids=stop_ids, temperature=s.temperature, top_p=s.top_p, with_logps=s.num_iterations > 1)
    samples = [Sample(tasks[i // G]["prompt"], text, tasks[i // G].get("answer"), ro.prompt_ids[i],
                      ro.completion_ids[i, :int(ro.mask[i].sum())].tolist(), bool(ro.truncated[i]))
               for i, text in enumerate(ro.texts)]
    scores = score_samples(samples, rewards, weights, skip_reward_errors)
    advantages, std = group_advantages(scores.total, G, s.scale_rewards)
    ref_logps = None
    if s.beta != 0.0:
        if ref is None:
            raise ValueError("beta > 0 needs a reference (reference_fn)")
        ref_logps = ref(ro.prompt_ids, ro.completion_ids, ro.mask)
    N = len(samples)
    mb = s.micro_batch or N
    chunks = [slice(i, min(i + mb, N)) for i in range(0, N, mb)]
    num_items = float(ro.mask.sum())
    model.train()
    losses, metric_rows = [], []
    for _ in range(s.num_iterations):
        total = 0.0
        for c in chunks:
            logps, _ = completion_logps(model, ro.prompt_ids[c], ro.completion_ids[c], ro.mask[c], s.temperature)
            loss, metrics = grpo_loss(logps, None if ro.logps is None else ro.logps[c],
                                      None if ref_logps is None else ref_logps[c], advantages[c], ro.mask[c],
                                      s.epsilon_low, s.epsilon_high, s.beta, s.loss_type, s.max_new_tokens,
                                      num_items)
            # dapo already divides by the whole batch's tokens; the others average their chunks
            loss = loss if s.loss_type == "dapo" else loss / len(chunks)
            if not math.isfinite(loss.item()):
                optimizer.zero_grad(set_to_none=True)
                raise UserError(f"GRPO: the loss is {loss.item()} (not finite); stopped before updating, the last "
                                "checkpoint is untouched; lower --lr or check the rewards")
            loss.backward()
            total += loss.item()
            metric_rows.append(metrics)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip) if s.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    out = {"loss": sum(losses) / len(losses), "reward": scores.total.mean().item(),
           "reward_std": scores.total.std().item() if N > 1 else 0.0,
           "completion_length": ro.lengths.mean().item(), "truncated": ro.truncated.float().mean().item(),
           "frac_reward_zero_std": (std.view(-1, G)[:, 0] == 0).float().mean().item(),
           "grad_norm": float(grad_norm) if grad_norm is not None else None, "reward_errors": scores.errors}
    out.update({f"rewards/{name}": sum(v) / len(v) for name, v in scores.per_function.items()})
    for key in metric_rows[0]:
        out[key] = sum(m[key] for m in metric_rows) / len(metric_rows)
    out["sample"] = ro.texts[0]
    return out


def encode_prompts(rows: list[dict], tokenizer, seq_len: int, max_new_tokens: int) -> list[dict]:
    """{"messages", "answer"} rows -> the tasks `grpo_step` and `answer_accuracy` take: {"prompt_ids", "prompt",
    "answer"}, rendered with the chat template and a generation prompt; UserError when one cannot fit."""
    out = []
    for r in rows:
        text = tokenizer.render(r["messages"], add_generation_prompt=True)
        ids = tokenizer.encode(text, allowed_special="all")
        if len(ids) + max_new_tokens > seq_len:
            raise UserError(f"prompt {text[:60]!r}...: {len(ids)} tokens + --max-new-tokens {max_new_tokens} do not "
                            f"fit the context window of {seq_len}; shorten it or lower --max-new-tokens")
        out.append({"prompt_ids": ids, "prompt": text, "answer": r["answer"]})
    return out


@torch.no_grad()
def answer_accuracy(model: torch.nn.Module, tokenizer, tasks: list[dict], max_new_tokens: int, stop_ids: set[int],
                    batch_size: int = 16) -> dict:
    """Greedy answers to held-out tasks, scored by `answer_is_correct`:

        accuracy           share answered correctly
        tokens_per_answer  mean new tokens, the stop token included (what an answer costs)
        finished           share that ended their turn within `max_new_tokens`
        samples            the first 8 answers with their references
    """
    if not tasks:
        return {"accuracy": float("nan"), "tokens_per_answer": float("nan"), "finished": float("nan"), "samples": []}
    outs = []
    for i in range(0, len(tasks), batch_size):
        outs += generate_batch(model, [t["prompt_ids"] for t in tasks[i:i + batch_size]], max_new_tokens,
                               temperature=0.0, stop_ids=stop_ids)
    answers = [tokenizer.decode([t for t in o if t not in stop_ids]) for o in outs]
    hits = [answer_is_correct(a, t["answer"]) for a, t in zip(answers, tasks, strict=True)]
    return {"accuracy": sum(hits) / len(hits), "tokens_per_answer": sum(len(o) for o in outs) / len(outs),
            "finished": sum(bool(o) and o[-1] in stop_ids for o in outs) / len(outs),
            "samples": [{"answer": a, "reference": t["answer"]} for a, t in zip(answers[:8], tasks[:8], strict=True)]}
