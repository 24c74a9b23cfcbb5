"""DPO training pieces for the shared loop: batches with their reference log-probabilities, the loss, and
held-out preference accuracy.

Direct Preference Optimization (Rafailov et al. 2023) trains the policy so that
its implicit reward, β log π(y|x)/π_ref(y|x), ranks the chosen answer above the
rejected one; no reward model, no sampling. One step:

    batch      chosen rows then rejected rows (`llmlab.data.preference.collate_preference`),
               plus the reference's summed log-probabilities of both (`ReferenceLogps`, cached)
    forward    the policy's summed and mean completion log-probabilities (`llmlab.align.logprobs`)
    loss       `llmlab.align.losses`: dpo_loss (sigmoid, ipo, hinge) or simpo_loss (no reference)

`preference_loss` is a `loss_fn` for `llmlab.train.loop.train_loop`: it returns
the loss and TRL's per-step metrics under TRL's names (`rewards/chosen`,
`rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
`logps/rejected`), which the loop writes into each history row.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llmlab.align.logprobs import ReferenceLogps, sequence_logps
from llmlab.align.losses import DPO_LOSS_TYPES, dpo_loss, simpo_loss
from llmlab.data.loader import EpochBatches
from llmlab.data.preference import PreferenceExample, batch_order, collate_preference

LOSS_TYPES = (*DPO_LOSS_TYPES, "simpo")
REFERENCE_FREE = ("simpo",)
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


@dataclass
class PreferenceLoss:
    """Which preference loss, and its constants (β, cDPO's label smoothing, SimPO's target margin γ)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {self.loss_type!r}: unknown; choose one of {', '.join(LOSS_TYPES)}")

    @property
    def needs_reference(self) -> bool:
        return self.loss_type not in REFERENCE_FREE


def make_batch(examples: list[PreferenceExample], indices: list[int], pad_id: int, max_len: int | None,
               policy: torch.nn.Module, reference: ReferenceLogps | None) -> tuple:
    """(idx, targets, {attn_mask, ref_logps}) for `train_loop`, on the policy's device; ref_logps (2B,) or None."""
    device = next(policy.parameters()).device
    b = collate_preference([examples[i] for i in indices], pad_id, max_len)
    ref = reference.get(policy, indices) if reference is not None else None
    return b["idx"].to(device), b["targets"].to(device), {"attn_mask": b["attn_mask"].to(device), "ref_logps": ref}


def preference_batches(examples: list[PreferenceExample], batch_size: int, pad_id: int, max_len: int | None,
                       policy: torch.nn.Module, reference: ReferenceLogps | None, seed: int = 0,
                       position: int = 0) -> Callable[[], tuple]:
    """Endless batches, reshuffled each epoch by seed + epoch; `position` = batches already served (resume)."""
    order = EpochBatches(lambda epoch: batch_order(len(examples), batch_size, seed + epoch), position=position)
    return lambda: make_batch(examples, order(), pad_id, max_len, policy, reference)


def preference_terms(model: torch.nn.Module, batch: tuple, spec: PreferenceLoss
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, chosen rewards (B,), rejected rewards (B,), chosen logps (B,), rejected logps (B,)) for one batch."""
    idx, targets, extras = batch
    sums, means, counts = sequence_logps(model, idx, targets, extras.get("attn_mask"))
    B = idx.shape[0] // 2
    if spec.loss_type == "simpo":
        loss, chosen_r, rejected_r = simpo_loss(means[:B], means[B:], spec.beta, spec.simpo_gamma,
                                                spec.label_smoothing)
        return loss, chosen_r, rejected_r, means[:B].detach(), means[B:].detach()  # CPO logs the mean for SimPO
    ref = extras["ref_logps"]
    loss, chosen_r, rejected_r = dpo_loss(sums[:B], sums[B:], ref[:B], ref[B:], spec.beta, spec.loss_type,
                                          spec.label_smoothing, counts[:B], counts[B:])
    return loss, chosen_r, rejected_r, sums[:B].detach(), sums[B:].detach()


def preference_loss(spec: PreferenceLoss) -> Callable[[torch.nn.Module, tuple], tuple[torch.Tensor, dict]]:
    """A `loss_fn(model, batch) -> (loss, metrics)` for `train_loop`, with TRL's metric names and meanings."""

    def loss_fn(model: torch.nn.Module, batch: tuple) -> tuple[torch.Tensor, dict]:
        loss, chosen_r, rejected_r, chosen_lp, rejected_lp = preference_terms(model, batch, spec)
        return loss, {
            "rewards/chosen": chosen_r.mean().item(), "rewards/rejected": rejected_r.mean().item(),
            "rewards/accuracies": (chosen_r > rejected_r).float().mean().item(),
            "rewards/margins": (chosen_r - rejected_r).mean().item(),
            "logps/chosen": chosen_lp.mean().item(), "logps/rejected": rejected_lp.mean().item(),
        }

    return loss_fn


@torch.no_grad()
def preference_accuracy(model: torch.nn.Module, examples: list[PreferenceExample], spec: PreferenceLoss,
                        pad_id: int, max_len: int | None, reference: ReferenceLogps | None,
                        batch_size: int = 1) -> dict[str, float]:
    """How often the implicit reward ranks chosen above rejected on `examples` (ties count half, so a policy
    equal to its reference scores 0.5), with the mean reward margin and loss.

    Pairs run one at a time, as `ReferenceLogps` runs them: the same shapes give bitwise the same numbers, so
    an untrained policy ties its reference exactly instead of by float noise.
    """
    was_training = model.training
    model.eval()
    wins, margins, losses = 0.0, [], []
    try:
        for start in range(0, len(examples), batch_size):
            indices = list(range(start, min(start + batch_size, len(examples))))
            batch = make_batch(examples, indices, pad_id, max_len, model, reference)
            loss, chosen_r, rejected_r, _, _ = preference_terms(model, batch, spec)
            wins += (chosen_r > rejected_r).sum().item() + 0.5 * (chosen_r == rejected_r).sum().item()
            margins += (chosen_r - rejected_r).tolist()
            losses.append(loss.item() * len(indices))
    finally:
        model.train(was_training)
    n = max(len(examples), 1)
    return {"accuracy": wins / n, "margin": sum(margins) / n, "loss": sum(losses) / n}
