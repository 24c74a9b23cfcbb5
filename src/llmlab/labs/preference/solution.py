"""Lab: preference, the reference solution: llmlab's own preference code (llmlab.align), held equal to TRL's.

`bradley_terry_loss` is llmlab's reward-model loss as it is; `dpo_loss` is llmlab's, which also returns the
rewards TRL logs; `completion_logprob` is `sequence_logps`, given the logits instead of a model to run.
"""

import torch

from llmlab.align import losses
from llmlab.align.logprobs import sequence_logps
from llmlab.align.losses import bradley_terry_loss

__all__ = ["completion_logprob", "bradley_terry_loss", "dpo_loss"]


def completion_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    def project(idx, attn_mask, logits_mask):  # sequence_logps runs a model; here the logits are given
        return logits[logits_mask]  # (N, V)

    sums, _means, _counts = sequence_logps(project, targets, targets)
    return sums


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    loss, _chosen_rewards, _rejected_rewards = losses.dpo_loss(policy_chosen, policy_rejected, ref_chosen,
                                                               ref_rejected, beta=beta)
    return loss


LLMLAB_CODE = [sequence_logps, bradley_terry_loss, losses.dpo_loss]  # `llmlab labs solution preference`
