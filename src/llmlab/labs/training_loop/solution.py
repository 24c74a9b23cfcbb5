"""Lab: training-loop, the reference solution: llmlab's own objective, AdamW, schedule and training loop.

`causal_lm_loss` (llmlab.train.objectives) takes targets already shifted, so this file shifts; `AdamW`
(llmlab.train.optimizers) equals torch.optim.AdamW step for step; `lr_at` is llmlab.train.optim's as it is;
`train_loop` (llmlab.train.loop) does the accumulation, clipping, stepping and bf16 autocast of
`train_step` and `train`. llmlab clips with torch's own clip_grad_norm_, so `clip_grad_norm` is written out.
"""

import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import causal_lm_loss
from llmlab.train.optim import lr_at
from llmlab.train.optimizers import AdamW, adam_update

__all__ = ["AdamW", "clip_grad_norm", "lr_at", "next_token_loss", "train", "train_step"]


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    targets = tokens[:, 1:]  # (B, T - 1): position t predicts token t + 1
    targets = targets.masked_fill(targets == ignore_index, IGNORE_INDEX)
    return causal_lm_loss(logits[:, :-1], targets)  # float32, mean over the targets not ignored


@torch.no_grad()
def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.stack([g.double().pow(2).sum() for g in grads]).sum().sqrt().float()  # one norm for all
    if norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


def _loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return next_token_loss(model(tokens), tokens)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch, steps: int, lr: float,
          warmup_steps: int = 0, grad_accum: int = 1, grad_clip: float = 1.0,
          autocast_dtype: torch.dtype | None = None) -> list[float]:
    settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=warmup_steps, grad_accum=grad_accum,
                            grad_clip=grad_clip, progress=False)
    state = train_loop(model, optimizer, next_batch, settings, TrainState(), loss_fn=_loss,
                       autocast_dtype=autocast_dtype)
    return [row["loss"] for row in state.history]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[torch.Tensor],
               grad_clip: float = 1.0, autocast_dtype: torch.dtype | None = None) -> float:
    # one step of llmlab's loop at the optimizer's current lr (lr_at(0, 1, lr, 0) is lr itself)
    batches = iter(micro_batches)
    losses = train(model, optimizer, lambda: next(batches), 1, optimizer.param_groups[0]["lr"],
                   grad_accum=len(micro_batches), grad_clip=grad_clip, autocast_dtype=autocast_dtype)
    return losses[0]


LLMLAB_CODE = [causal_lm_loss, adam_update, lr_at, train_loop]  # printed by `llmlab labs solution training-loop`
