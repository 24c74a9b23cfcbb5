"""RL losses for language models: plain functions of per-token log-probabilities, values and rewards.

Nothing here runs a model. Shapes: N completions of at most T tokens; `mask` (N, T) is 1 on a
completion's tokens (through its stop token) and 0 on the right padding.

GRPO (Shao et al. 2024, DeepSeekMath), as TRL 1.16's `GRPOTrainer._compute_loss` computes it:

    ratio  r = exp(logp - old_logp)                          per token
    loss   -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta * KL_k3(ref || policy)
    KL_k3  exp(ref - logp) - (ref - logp) - 1                 (Schulman's k3, unbiased and >= 0)

    loss_type  grpo     mean over each completion's tokens, then over completions
               bnpo     mean over all tokens of the batch
               dr_grpo  sum / (N * max_completion_length)    (Dr. GRPO, Liu et al. 2025: no length bias)
               dapo     sum / tokens in the whole generation batch (DAPO, Yu et al. 2025)

Group-normalised advantages: A = (r - mean of its group) / (std of its group + 1e-4), std with Bessel's
correction, as TRL; `scale_rewards=False` is Dr. GRPO's unscaled version.

PPO for RLHF (Schulman et al. 2017; Ouyang et al. 2022), as TRL's former PPOTrainer (0.26,
trl/experimental/ppo): per-token reward -kl_coef * KL_k1 plus the score on the last token, GAE
advantages (whitened), the clipped policy loss and the clipped value loss 0.5 * max((v - R)^2,
(clip(v) - R)^2). One difference, on purpose: `gae` treats the token after a completion's end as
terminal (value 0); TRL bootstraps from the value one position past the end.
"""

import torch

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
STD_EPS = 1e-4  # TRL's: a group where every reward is equal gets advantage 0, not 0/0


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the positions where mask is 1 (of one dim, or of everything)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the masked positions; with Bessel's correction n / (n - 1) when `unbiased`."""
    centered = values - masked_mean(values, mask)
    var = masked_mean(centered ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("whitening needs at least two unmasked values; use a bigger batch")
        var = var * n / (n - 1)
    return var


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / std over the masked positions; `shift_mean=False` keeps the mean (scales only)."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def group_advantages(rewards: torch.Tensor, group_size: int,
                     scale_rewards: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages (N,), each group's std repeated (N,)) for rewards (N,) laid out group after group.

    rewards [1, 0, 0, 0] with group_size 2 -> means [0.5, 0], advantages [0.707, -0.707, 0, 0] (scaled).
    """
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"group_size must be at least 2 and divide the {rewards.numel()} rewards (got {group_size})")
    grouped = rewards.view(-1, group_size)  # (P, G)
    mean = grouped.mean(1).repeat_interleave(group_size)  # (N,)
    std = grouped.std(1).repeat_interleave(group_size)  # (N,) Bessel-corrected, as TRL's nanstd
    advantages = rewards - mean
    if scale_rewards:
        advantages = advantages / (std + STD_EPS)
    return advantages, std


def kl_k1(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(policy || ref) on tokens sampled from the policy: logp - ref_logp."""
    return logps - ref_logps


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate: exp(ref - logp) - (ref - logp) - 1, never negative (Schulman 2020)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, epsilon_low: float = 0.2, epsilon_high: float = 0.2,
              beta: float = 0.0, loss_type: str = "grpo", max_completion_length: int | None = None,
              num_items: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, metrics) for per-token log-probabilities (N, T) and advantages (N,).

    old_logps None means the policy that sampled is the one training (one inner iteration): the ratio is 1
    with its gradient. ref_logps is needed when beta > 0. dr_grpo needs max_completion_length; dapo divides
    by num_items (tokens in the whole generation batch; default: this batch's).
    """
    if loss_type not in GRPO_LOSS_TYPES:
        raise ValueError(f"loss_type {loss_type!r}: unknown; choose one of {', '.join(GRPO_LOSS_TYPES)}")
    mask = mask.to(logps.dtype)
    old_logps = logps.detach() if old_logps is None else old_logps
    adv = advantages[:, None]  # (N, 1)
    ratio = torch.exp(logps - old_logps)  # (N, T)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    metrics: dict[str, float] = {}
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps (the reference model's per-token log-probabilities)")
        kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * kl
        metrics["kl"] = masked_mean(kl, mask).item()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo divides by max_completion_length: pass it")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_length)
    else:
        normalizer = mask.sum() if num_items is None else torch.tensor(float(num_items))
        loss = (per_token * mask).sum() / normalizer.clamp(min=1.0)
    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (adv < 0)
        high = (ratio > 1 + epsilon_high) & (adv > 0)
        metrics.update({"clip_ratio/low_mean": masked_mean(low.float(), mask).item(),
                        "clip_ratio/high_mean": masked_mean(high.float(), mask).item(),
                        "clip_ratio/region_mean": masked_mean((low | high).float(), mask).item()})
    return loss, metrics


def ppo_token_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards (N, T), kl (N, T)): -kl_coef * k1 on every token, plus each score (N,) on its last token."""
    mask = mask.to(logps.dtype)
    kl = kl_k1(logps, ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (N,) index of each completion's last token
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns), both (N, T), 0 on padding.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}; the position after a
    completion's last token counts as terminal (V = 0, A = 0). returns = A + V, the value target.
    """
    mask = mask.to(values.dtype)
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])  # (N,) A_{t+1}
    for t in reversed(range(T)):
        alive = mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)  # (N,) is t+1 still in the completion
        next_value = values[:, t + 1] * alive if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * alive * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    cliprange: float = 0.2) -> tuple[torch.Tensor, float]:
    """(clipped surrogate loss, share of tokens where the clip bit), advantages per token (N, T)."""
    ratio = torch.exp(logps - old_logps)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    return loss, masked_mean((loss2 > loss1).float(), mask).item()


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   cliprange_value: float = 0.2) -> tuple[torch.Tensor, float]:
    """(0.5 * clipped squared error, share of tokens where the clip bit): values stay near the rollout's."""
    clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss1, loss2 = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.max(loss1, loss2), mask), masked_mean((loss2 > loss1).float(), mask).item()
