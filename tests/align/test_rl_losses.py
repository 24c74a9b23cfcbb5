"""RL losses against their references: GRPO against TRL 1.16's own `GRPOTrainer._compute_loss` (called on the
same log-probabilities and advantages), group advantages against TRL's `nanstd`, and the PPO pieces against
plain loops and TRL 0.26's PPOTrainer formulas (trl/experimental/ppo/ppo_trainer.py, removed from TRL since)."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

from llmlab.align.rl_losses import (
    gae,
    group_advantages,
    grpo_loss,
    kl_k1,
    kl_k3,
    masked_mean,
    ppo_policy_loss,
    ppo_token_rewards,
    ppo_value_loss,
    whiten,
)

N, T = 6, 7


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(N, T, generator=g) * 3
    old = logps + 0.3 * torch.randn(N, T, generator=g)  # ratios far enough from 1 that clipping happens
    ref = logps + 0.2 * torch.randn(N, T, generator=g)
    lengths = torch.tensor([7, 3, 5, 1, 7, 4])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    adv = torch.randn(N, generator=g)
    return logps, old, ref, mask, adv


def trl_loss(logps, old, ref, mask, adv, *, beta, loss_type, eps_low=0.2, eps_high=0.28, max_len=T):
    """TRL's `_compute_loss` with the model call replaced by our log-probabilities (one process, no accumulation)."""
    acc = SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                          reduce=lambda x, reduction="sum": x)
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, torch.zeros_like(logps), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, max_completion_length=max_len,
        accelerator=acc, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    inputs = {"prompt_ids": torch.zeros(N, 2, dtype=torch.long), "prompt_mask": torch.ones(N, 2, dtype=torch.long),
              "completion_ids": torch.zeros(N, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    return GRPOTrainer._compute_loss(fake, None, inputs), fake._metrics["train"]


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_loss_and_gradient_equal_trl(loss_type, beta):
    logps, old, ref, mask, adv = batch()
    ours_in, trl_in = logps.clone().requires_grad_(), logps.clone().requires_grad_()
    ours, metrics = grpo_loss(ours_in, old, ref, adv, mask, 0.2, 0.28, beta, loss_type, max_completion_length=T)
    theirs, trl_metrics = trl_loss(trl_in, old, ref, mask, adv, beta=beta, loss_type=loss_type)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_in.grad, trl_in.grad, rtol=1e-6, atol=1e-8)
    for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean") + (("kl",) if beta else ()):
        assert metrics[key] == pytest.approx(trl_metrics[key][0], abs=1e-6)
    assert metrics["clip_ratio/region_mean"] > 0  # the batch does exercise the clip


def test_grpo_loss_without_old_logps_is_one_iteration():
    """old_logps None: TRL's per_token_logps.detach(); the loss is -mean advantage, the gradient is A per token."""
    logps, _, _, mask, adv = batch(1)
    x = logps.clone().requires_grad_()
    loss, _ = grpo_loss(x, None, None, adv, mask, loss_type="bnpo")
    expected = -(adv[:, None] * mask).sum() / mask.sum()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(x.grad, -(adv[:, None] * mask) / mask.sum())


def test_grpo_loss_bad_input():
    logps, old, ref, mask, adv = batch()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logps, old, ref, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logps, old, ref, adv, mask, loss_type="dr_grpo")


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_as_trl(scale):
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 1.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    adv, std = group_advantages(rewards, 4, scale)
    grouped = rewards.view(-1, 4)
    trl_std = nanstd(grouped, dim=1).repeat_interleave(4)
    expected = rewards - grouped.mean(1).repeat_interleave(4)
    if scale:
        expected = expected / (trl_std + 1e-4)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(std, trl_std)
    assert adv[-4:].abs().max() == 0  # equal rewards: no signal
    with pytest.raises(ValueError):
        group_advantages(rewards, 5)


def test_kl_estimators():
    logps, _, ref, mask, _ = batch()
    torch.testing.assert_close(kl_k1(logps, ref), logps - ref)
    k3 = kl_k3(logps, ref)
    assert (k3 >= 0).all()
    r = (ref - logps).exp()
    torch.testing.assert_close(k3, r - torch.log(r) - 1)


# --- PPO: TRL 0.26's formulas, transcribed (masked_mean / masked_var / masked_whiten, the GAE loop, the losses)

def trl_masked_whiten(values, mask, shift_mean=True):
    mean = (values * mask).sum() / mask.sum()
    var = (((values - mean) ** 2) * mask).sum() / mask.sum()
    var = var * mask.sum() / (mask.sum() - 1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def trl_gae(rewards, values, gamma, lam):
    lastgaelam, out = 0, []
    for t in reversed(range(rewards.shape[1])):
        nextvalues = values[:, t + 1] if t < rewards.shape[1] - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        out.append(lastgaelam)
    advantages = torch.stack(out[::-1], axis=1)
    return advantages, advantages + values


def loop_gae(rewards, values, mask, gamma, lam):
    """Per row, per position, in plain Python: each completion is an episode that ends after its last token."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            next_value = float(values[b, t + 1]) if t + 1 < n else 0.0
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_against_trl_and_a_loop(gamma, lam):
    g = torch.Generator().manual_seed(3)
    rewards, values = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    full = torch.ones(N, T)
    ours = gae(rewards, values, full, gamma, lam)
    theirs = trl_gae(rewards, values, gamma, lam)
    torch.testing.assert_close(ours[0], theirs[0])
    torch.testing.assert_close(ours[1], theirs[1])
    _, _, _, mask, _ = batch()
    mask = mask.float()
    ours = gae(rewards * mask, values * mask, mask, gamma, lam)
    ref = loop_gae(rewards * mask, values * mask, mask, gamma, lam)
    torch.testing.assert_close(ours[0], ref[0])
    torch.testing.assert_close(ours[1], ref[1])


def test_whiten_and_masked_mean_as_trl():
    logps, _, _, mask, _ = batch()
    mask = mask.float()
    torch.testing.assert_close(whiten(logps, mask), trl_masked_whiten(logps, mask))
    torch.testing.assert_close(whiten(logps, mask, shift_mean=False), trl_masked_whiten(logps, mask, False))
    assert masked_mean(logps, mask) == pytest.approx(float(logps[mask.bool()].mean()), abs=1e-6)
    w = whiten(logps, mask)[mask.bool()]
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-5) and float(w.std()) == pytest.approx(1.0, abs=1e-4)


def test_ppo_losses_as_trl():
    logps, old, _, mask, _ = batch(2)
    mask = mask.float()
    g = torch.Generator().manual_seed(5)
    adv, returns = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    values, old_values = torch.randn(N, T, generator=g), torch.randn(N, T, generator=g)
    ratio = torch.exp(logps - old)
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)
    expected_pg = (torch.max(pg1, pg2) * mask).sum() / mask.sum()
    loss, clipfrac = ppo_policy_loss(logps, old, adv, mask, 0.2)
    torch.testing.assert_close(loss, expected_pg)
    assert clipfrac == pytest.approx(float(((pg2 > pg1).float() * mask).sum() / mask.sum()))
    vclip = torch.clamp(values, old_values - 0.2, old_values + 0.2)
    v1, v2 = (values - returns) ** 2, (vclip - returns) ** 2
    vloss, vfrac = ppo_value_loss(values, old_values, returns, mask, 0.2)
    torch.testing.assert_close(vloss, 0.5 * (torch.max(v1, v2) * mask).sum() / mask.sum())
    assert vfrac == pytest.approx(float(((v2 > v1).float() * mask).sum() / mask.sum()))


def test_ppo_token_rewards_put_the_score_on_the_last_token():
    logps, _, ref, mask, _ = batch()
    mask = mask.float()
    scores = torch.arange(N, dtype=torch.float32)
    rewards, kl = ppo_token_rewards(scores, logps, ref, mask, kl_coef=0.1)
    for b in range(N):
        n = int(mask[b].sum())
        for t in range(T):
            expected = -0.1 * float(logps[b, t] - ref[b, t]) if t < n else 0.0
            expected += float(scores[b]) if t == n - 1 else 0.0
            assert float(rewards[b, t]) == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(kl, (logps - ref) * mask)
