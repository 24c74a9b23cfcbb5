"""Training objectives: what the loop minimises. Targets of -100 are ignored (padding, prompt tokens in SFT).

Each `*_loss(model, batch)` takes the model and one batch `(idx, targets[, model keyword arguments])`
and returns a scalar to minimise; the loop calls whichever the recipe hands it.
"""

import torch
import torch.nn.functional as F

from llmlab.common.constants import IGNORE_INDEX
from llmlab.infer.classify import last_token_logits


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of next-token logits (B, T, V) against targets (B, T), in float32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def lm_loss(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
    """Next-token loss over every position: pretraining."""
    idx, targets = batch[0], batch[1]
    kwargs = batch[2] if len(batch) > 2 else {}
    return causal_lm_loss(model(idx, **kwargs), targets)


def sft_loss(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
    """Next-token loss over target positions only (assistant tokens in SFT), projecting only those
    positions to the vocabulary (`logits_mask`): prompts and padding cost no head compute."""
    idx, targets = batch[0], batch[1]
    kwargs = batch[2] if len(batch) > 2 else {}
    keep = targets != IGNORE_INDEX  # (B, T)
    logits = model(idx, logits_mask=keep, **kwargs)  # (N, vocab)
    return F.cross_entropy(logits.float(), targets[keep])


def classification_loss(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
    """Cross-entropy of the class logits at each row's last real token; batch = (idx, labels, {attn_mask})."""
    idx, labels, kwargs = batch
    return F.cross_entropy(last_token_logits(model(idx, **kwargs), kwargs["attn_mask"]).float(), labels)
