"""AdamW with decoupled weight decay on matrices only, and a warmup + cosine learning-rate schedule.

Decay pulls weights towards zero; on norms' gains, biases and embeddings that
only hurts (Loshchilov & Hutter 2019; GPT-3 and nanoGPT exclude them too).
"""

import math

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: 2-D weights of linear layers decay; norms, biases and embeddings do not."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))  # a tied weight is one parameter
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_adamw(model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95),
               device_type: str = "cpu") -> torch.optim.AdamW:
    fused = device_type == "cuda"  # one kernel for all parameters on GPU
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=1e-8, fused=fused)


def lr_at(step: int, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1,
          progress: float | None = None) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at max_steps.

    lr_at(0, 100, 1.0, 10) = 0.1; lr_at(9, 100, 1.0, 10) = 1.0; lr_at(100, 100, 1.0, 10) = 0.1.
    `progress` (0..1), when given, replaces the step count after warmup: a run on a time budget decays
    by elapsed time, so it fills the budget however fast the machine turns out to be.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if progress is None:
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    progress = min(1.0, progress)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
