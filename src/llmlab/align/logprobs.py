"""Sequence log-probabilities of completions given their prompts, and the reference model's, cached.

`sequence_logps` runs the model once over a collated preference batch
(`llmlab.data.preference.collate_preference`: idx, targets, attn_mask, chosen
rows then rejected rows) and returns, per row, the sum and the mean of
log p(token | everything before it) over the completion tokens. Only the
positions that have a target are projected to the vocabulary (the model's
`logits_mask`): prompts and padding cost no head compute, the same saving as
TRL's fused LM head.

The reference of DPO is the model before training. `ReferenceLogps` computes
its log-probabilities the first time an example is seen and keeps them
(TRL's `precompute_ref_log_probs`, done lazily, so a short run pays only for
the examples it uses), either with a frozen copy of the model or, for LoRA
and QLoRA, with the policy itself and its adapters switched off
(`llmlab.finetune.lora.lora_disabled`): no second model in memory.
"""

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from llmlab.common.constants import IGNORE_INDEX
from llmlab.data.preference import PreferenceExample, collate_preference
from llmlab.finetune.lora import lora_disabled, lora_modules


def sequence_logps(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor,
                   attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum, mean, count) of completion-token log-probabilities per row, each (B,), for idx/targets (B, T).

    targets are -100 where a position predicts no completion token (prompt, padding).
    """
    keep = targets != IGNORE_INDEX  # (B, T)
    logits = model(idx, attn_mask=attn_mask, logits_mask=keep)  # (N, vocab)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits: softmax in float32
    token_logps = -F.cross_entropy(logits, targets[keep], reduction="none")  # (N,)
    rows = keep.nonzero()[:, 0]  # (N,) the row of each projected position
    sums = torch.zeros(idx.shape[0], device=idx.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)
    counts = keep.sum(dim=1)  # (B,)
    return sums, sums / counts.clamp(min=1), counts


class ReferenceLogps:
    """The reference model's summed completion log-probabilities per example, computed once each.

    reference: a frozen model; None means the policy with its LoRA adapters off (the policy must have some).
    Each example runs on its own (a pair of rows), so its value never depends on which batch first needed
    it, and a resumed run, refilling the cache in another order, gets the same numbers.
    """

    def __init__(self, examples: list[PreferenceExample], pad_id: int, max_len: int | None = None,
                 reference: torch.nn.Module | None = None):
        self.examples, self.pad_id, self.max_len, self.reference = examples, pad_id, max_len, reference
        self.cache: dict[int, tuple[float, float]] = {}  # example index -> (chosen, rejected)

    def _model(self, policy: torch.nn.Module) -> tuple[torch.nn.Module, Callable]:
        if self.reference is not None:
            return self.reference, nullcontext
        if not lora_modules(policy):
            raise ValueError("ReferenceLogps without a reference model needs a policy with LoRA layers to switch off")
        return policy, lambda: lora_disabled(policy)

    @torch.no_grad()
    def get(self, policy: torch.nn.Module, indices: list[int]) -> torch.Tensor:
        """(2B,) reference sums for examples `indices`: chosen rows, then rejected rows (a collated batch's order)."""
        param = next(policy.parameters())
        todo = [i for i in indices if i not in self.cache]
        if todo:
            model, context = self._model(policy)
            was_training = model.training
            model.eval()  # the reference is a fixed function: no dropout
            try:
                with context():
                    for i in todo:
                        b = collate_preference([self.examples[i]], self.pad_id, self.max_len)
                        sums, _, _ = sequence_logps(model, b["idx"].to(param.device),
                                                    b["targets"].to(param.device), b["attn_mask"].to(param.device))
                        self.cache[i] = (sums[0].item(), sums[1].item())
            finally:
                model.train(was_training)
        values = [self.cache[i][0] for i in indices] + [self.cache[i][1] for i in indices]
        return torch.tensor(values, dtype=torch.promote_types(param.dtype, torch.float32), device=param.device)
