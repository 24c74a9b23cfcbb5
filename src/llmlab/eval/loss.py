"""Held-out loss: nats per target token over batches, without training anything.

One implementation for every stage: pretraining's validation windows, SFT's
assistant-only targets (other positions are -100 and cost nothing: the model
projects only target positions to the vocabulary, `logits_mask`), and bits per
byte. A batch is `(idx, targets)` or `(idx, targets, model keyword arguments)`
such as positions and masks of packed rows.
"""

from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from llmlab.common.constants import IGNORE_INDEX


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, batches: Iterable[tuple],
                 autocast_dtype: torch.dtype | None = None) -> tuple[float, int]:
    """(summed loss in nats, number of targets) over `batches`; targets of -100 are skipped."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    total, count = 0.0, 0
    try:
        for batch in batches:
            idx, targets = batch[0].to(device), batch[1].to(device)
            kwargs = {k: v.to(device) for k, v in (batch[2] if len(batch) > 2 else {}).items()}
            keep = targets != IGNORE_INDEX  # (B, T)
            with amp:
                logits = model(idx, logits_mask=keep, **kwargs)  # (N, vocab)
            total += F.cross_entropy(logits.float(), targets[keep], reduction="sum").item()
            count += int(keep.sum())
    finally:
        model.train(was_training)
    return total, count


def mean_heldout_loss(model: torch.nn.Module, batches: Iterable[tuple],
                      autocast_dtype: torch.dtype | None = None) -> float:
    """Mean nats per target token (nan when there are no targets)."""
    total, count = heldout_loss(model, batches, autocast_dtype)
    return total / count if count else float("nan")


@torch.no_grad()
def loss_by_position(model: torch.nn.Module, batches: Iterable[tuple], seq_len: int) -> list[float]:
    """Mean loss (nats) at each position 0..seq_len-1 of the windows in `batches`, (idx, targets) of at most
    seq_len tokens: where in its context a model does well, and where it breaks past its training length."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = torch.zeros(seq_len, dtype=torch.float64), torch.zeros(seq_len, dtype=torch.float64)
    try:
        for idx, targets in batches:
            targets = targets.to(device)
            logits = model(idx.to(device)).float()  # (B, T, V)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                   reduction="none")  # (B, T), 0 where there is no target
            T = idx.shape[1]
            total[:T] += loss.sum(0).double().cpu()
            count[:T] += (targets != IGNORE_INDEX).sum(0).double().cpu()
    finally:
        model.train(was_training)
    return (total / count.clamp(min=1)).tolist()
