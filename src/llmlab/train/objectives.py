"""Losses. Targets of -100 are ignored (padding, prompt tokens in SFT)."""

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of next-token logits (B, T, V) against targets (B, T), in float32."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Loss in a unit that does not depend on the tokenizer: nats over all targets -> bits per UTF-8 byte."""
    return total_nats / math.log(2) / total_bytes
