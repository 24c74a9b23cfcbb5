"""PPO-style RLHF (Ziegler et al. 2019; Ouyang et al. 2022): a policy with a value head against a reward.

One `ppo_step`, as TRL's former PPOTrainer (trl 0.26, trl/experimental/ppo) does it:

    1. sample one completion per prompt with the KV cache (`rollout`)
    2. one no-grad pass: the sampling policy's per-token logps and values, and the reference's logps
    3. score each completion (a reward model through `model_reward`, or rule rewards)
    4. per-token rewards: -kl_coef * KL_k1 on every token, the score on the last one
    5. GAE advantages (whitened over the batch) and returns
    6. `ppo_epochs` passes over shuffled mini-batches: clipped policy loss + vf_coef x clipped value loss

The value head is one linear layer on the final hidden states, sharing the policy's trunk (TRL's
`AutoModelForCausalLMWithValueHead`); it sits beside the model, so the policy's checkpoint stays the
plain model `llmlab.load` opens and the head is saved on its own. The reference is a frozen model, or
the policy with its LoRA adapters off (`llmlab.align.grpo.reference_fn`).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from llmlab.align.grpo import RefFn
from llmlab.align.rewards import RewardFn, Sample, score_samples
from llmlab.align.rl_losses import gae, ppo_policy_loss, ppo_token_rewards, ppo_value_loss, whiten
from llmlab.align.rollout import completion_logps, rollout
from llmlab.common.errors import UserError


class ValueHead(nn.Module):
    """V(state) from the final hidden states: (..., C) -> (...)."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.summary = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.summary.weight)  # values start at 0: a neutral baseline, no noise in the first advantages
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.float()).squeeze(-1)


@dataclass
class PPOSettings:
    max_new_tokens: int = 24
    temperature: float = 1.0
    kl_coef: float = 0.05  # TRL's default
    gamma: float = 1.0  # TRL's default: no discount within a completion
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4
    mini_batch: int = 0  # completions per update within an epoch (0: the whole rollout, one update per epoch)
    whiten_rewards: bool = False
    grad_clip: float = 1.0


def model_reward(reward_model: torch.nn.Module,
                 score: Callable[[torch.nn.Module, list[list[int]]], torch.Tensor]) -> RewardFn:
    """A reward function from a trained reward model: `score(model, [prompt ids + completion ids])[0]`
    (`llmlab.align.reward.score`, which scores a list of sequences)."""

    def reward(sample: Sample) -> float:
        return float(score(reward_model, [sample.prompt_ids + sample.completion_ids])[0])

    return reward


def ppo_step(model: torch.nn.Module, value_head: ValueHead, optimizer: torch.optim.Optimizer, tokenizer,
             tasks: list[dict], rewards: dict[str, RewardFn], weights: list[float], settings: PPOSettings, *,
             seed: int, stop_ids: set[int], ref: RefFn, skip_reward_errors: bool = False) -> dict[str, float]:
    """One PPO update on `tasks` ({"prompt_ids", "prompt", "answer"?}); returns the step's metrics.

    Raises UserError on a non-finite loss before the optimizer steps, so the caller's last checkpoint stands.
    """
    s = settings
    ro = rollout(model, tokenizer, [t["prompt_ids"] for t in tasks], 1, s.max_new_tokens, seed=seed,
                 stop_ids=stop_ids, temperature=s.temperature, with_logps=False)
    mask = ro.mask
    was_training = model.training
    model.eval()
    with torch.no_grad():
        old_logps, hidden = completion_logps(model, ro.prompt_ids, ro.completion_ids, mask, s.temperature, True)
        old_values = value_head(hidden) * mask
    model.train(was_training)
    ref_logps = ref(ro.prompt_ids, ro.completion_ids, mask)
    samples = [Sample(t["prompt"], text, t.get("answer"), ro.prompt_ids[i],
                      ro.completion_ids[i, :int(mask[i].sum())].tolist(), bool(ro.truncated[i]))
               for i, (t, text) in enumerate(zip(tasks, ro.texts, strict=True))]
    scores = score_samples(samples, rewards, weights, skip_reward_errors)
    token_rewards, kl = ppo_token_rewards(scores.total, old_logps, ref_logps, mask, s.kl_coef)
    if s.whiten_rewards:
        token_rewards = whiten(token_rewards, mask, shift_mean=False) * mask
    advantages, returns = gae(token_rewards, old_values, mask, s.gamma, s.lam)
    advantages = whiten(advantages, mask) * mask
    N = len(samples)
    mb = s.mini_batch or N
    order = torch.Generator().manual_seed(seed)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    stats: dict[str, list[float]] = {"pg_loss": [], "vf_loss": [], "clipfrac": [], "vf_clipfrac": []}
    for _ in range(s.ppo_epochs):
        perm = torch.randperm(N, generator=order)
        for start in range(0, N, mb):
            idx = perm[start:start + mb]
            rows = [ro.prompt_ids[i] for i in idx.tolist()]
            logps, hidden = completion_logps(model, rows, ro.completion_ids[idx], mask[idx], s.temperature, True)
            values = value_head(hidden) * mask[idx]
            pg_loss, clipfrac = ppo_policy_loss(logps, old_logps[idx], advantages[idx], mask[idx], s.cliprange)
            vf_loss, vf_clipfrac = ppo_value_loss(values, old_values[idx], returns[idx], mask[idx],
                                                  s.cliprange_value)
            loss = pg_loss + s.vf_coef * vf_loss
            if not math.isfinite(loss.item()):
                optimizer.zero_grad(set_to_none=True)
                raise UserError(f"PPO: the loss is {loss.item()} (not finite); stopped before updating, the last "
                                "checkpoint is untouched; lower --lr or check the rewards")
            loss.backward()
            if s.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in zip(stats, (pg_loss.item(), vf_loss.item(), clipfrac, vf_clipfrac), strict=True):
                stats[k].append(v)
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["loss"] = out["pg_loss"] + s.vf_coef * out["vf_loss"]
    out.update({"reward": scores.total.mean().item(), "kl": kl.sum(1).mean().item(),
                "non_score_reward": (-s.kl_coef * kl).sum(1).mean().item(),
                "completion_length": ro.lengths.mean().item(), "reward_errors": scores.errors,
                "sample": ro.texts[0]})
    out.update({f"rewards/{name}": sum(v) / len(v) for name, v in scores.per_function.items()})
    return out
