"""Lab: preference. Fill in the bodies below, then run `llmlab labs check preference` (or the notebook).

Preference data are pairs: for one prompt, a chosen and a rejected completion. A reward model learns to score
the chosen one higher (Bradley-Terry); DPO teaches the language model itself to prefer it, measured against a
frozen reference copy. Every loss is the mean over the batch.
"""

import torch
import torch.nn.functional as F  # noqa: F401  (F.logsigmoid is the stable log(sigmoid(x)))


def completion_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The log-probability of each row's completion: the sum over positions t with targets[b, t] != -100 of
    log softmax(logits[b, t])[targets[b, t]]. logits (B, T, V), targets (B, T) -> (B,).

    (logits[b, t] is the model's prediction for targets[b, t]; prompt and padding positions hold -100.)
    """
    raise NotImplementedError("TODO: log_softmax over V, gather the targets, zero the -100 positions, sum over T")


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """A reward model's loss: mean of -log sigmoid(r_chosen - r_rejected), rewards (B,) -> a scalar."""
    raise NotImplementedError("TODO: one line, stable for large differences")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023) from completion log-probabilities (B,) of the policy and the reference:
    mean of -log sigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))."""
    raise NotImplementedError("TODO: the two log-ratios, their difference, scaled by beta, -logsigmoid, mean")
