"""Preference losses: plain functions of sequence log-probabilities, equal to TRL's for the same numbers.

Nothing here runs a model: the callers sum (or average) each completion's token
log-probabilities (`llmlab.align.logprobs`) and pass them in, one value per
example, shape (B,). Each loss returns the batch mean and the per-example
rewards that TRL logs (`rewards/chosen`, `rewards/rejected`).

    dpo_loss            DPO (Rafailov et al. 2023), with a reference model:
                          sigmoid  -log σ(β Δ), Δ = (π_c - ref_c) - (π_r - ref_r); label smoothing is cDPO's
                          ipo      (Δ/n - 1/(2β))² with each log-ratio averaged over its tokens (Azar et al. 2023)
                          hinge    max(0, 1 - β Δ) (SLiC, Zhao et al. 2023)
    simpo_loss          SimPO (Meng et al. 2024), reference-free: -log σ(β (mean π_c - mean π_r) - γ)
    orpo_loss           ORPO's odds-ratio term (Hong et al. 2024), reference-free, on mean log-probabilities
    bradley_terry_loss  the reward model's pairwise loss, -log σ(r_c - r_r - margin)

Worked example: policy log-probs chosen -10, rejected -12, reference -11 and -11,
β = 0.1: Δ = 1 - (-1) = 2, sigmoid loss = -log σ(0.2) = 0.598, rewards 0.1 and -0.1.
"""

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, chosen rewards (B,), rejected rewards (B,)) from summed log-probabilities (B,) each.

    Rewards are β times each completion's log-ratio to the reference, detached, as TRL logs them.
    `ipo` needs the completions' token counts (`chosen_lengths`, `rejected_lengths`): TRL (after the IPO
    authors) averages each log-ratio over its tokens so β means the same at every length.
    `label_smoothing` ε (cDPO, Mitchell 2023) assumes a share ε of the labels are flipped: sigmoid only.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * delta) * (1 - label_smoothing)
                  - F.logsigmoid(-beta * delta) * label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("ipo averages each log-ratio over its tokens: pass chosen_lengths and rejected_lengths")
        avg_delta = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (avg_delta - 1 / (2 * beta)) ** 2  # eq. 17 of the IPO paper, β playing τ
    else:
        raise ValueError(f"loss_type {loss_type!r}: unknown; choose one of {', '.join(DPO_LOSS_TYPES)}")
    return losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def simpo_loss(policy_chosen_mean_logps: torch.Tensor, policy_rejected_mean_logps: torch.Tensor,
               beta: float = 2.0, gamma: float = 0.5,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO from *mean* token log-probabilities (B,): no reference model, a target margin γ.

    As TRL's CPOTrainer with loss_type="simpo": -log σ(β (c - r) - γ), written there as β (c - r - γ/β).
    Rewards are β times the mean log-probabilities. The paper tunes β in 2-10 and γ/β in 0.3-1.6: mean
    log-probabilities differ by far less than sums do, so β must be much larger than DPO's 0.1.
    """
    logits = (policy_chosen_mean_logps - policy_rejected_mean_logps) - gamma / beta
    losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
              - F.logsigmoid(-beta * logits) * label_smoothing)
    return losses.mean(), beta * policy_chosen_mean_logps.detach(), beta * policy_rejected_mean_logps.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate at both ends (Mächler 2012): log(-expm1(x)) near 0, log1p(-exp(x))
    far from it."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_loss(policy_chosen_mean_logps: torch.Tensor, policy_rejected_mean_logps: torch.Tensor,
              beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio loss from mean token log-probabilities (B,): (mean loss, chosen and rejected rewards).

    log odds(y) = log p - log(1 - p); the loss is -β log σ(log odds_c - log odds_r), to be added to the
    chosen answers' NLL (ORPO's full objective, eq. 6). TRL's ORPOTrainer returns β log σ(...) and subtracts it.
    """
    chosen, rejected = policy_chosen_mean_logps.float(), policy_rejected_mean_logps.float()
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
    losses = -beta * F.logsigmoid(log_odds)
    return losses.mean(), beta * chosen.detach(), beta * rejected.detach()


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """The reward model's loss: -log σ(r_c - r_r - margin), averaged over pairs (B,).

    With a margin (Llama 2's reward models, Touvron et al. 2023) a pair must be ranked apart by at least
    that much before its loss fades. r_c=2, r_r=0 -> 0.127; with margin 1 -> 0.313.
    """
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()
