"""Lab: training-loop. Fill in the bodies below, then run `llmlab labs check training-loop` (or the notebook).

The pieces of a language model's training loop, each small: the next-token loss, AdamW, the learning-rate
schedule, gradient clipping, one optimizer step over several micro-batches (in bf16 if asked), and the loop.
A batch is token ids `tokens` (B, T); the model maps them to logits (B, T, V), and position t predicts
token t + 1. Later functions may (and should) call the earlier ones.
"""

import math  # noqa: F401  (cos and pi, for the schedule)

import torch
import torch.nn.functional as F  # noqa: F401


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """The mean cross-entropy of predicting each next token.

    logits: (B, T, V) for the tokens (B, T). Position t's logits predict tokens[:, t + 1], so the last position
    predicts nothing and the first token is never a target: B * (T - 1) predictions.
    Targets equal to `ignore_index` (padding, a prompt) count neither in the sum nor in the mean.
    Returns a float32 scalar, even for bfloat16 logits (a bf16 loss keeps only 3 significant digits).
    """
    raise NotImplementedError("TODO: shift logits and tokens against each other, then cross-entropy")


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW.

    For each parameter p with gradient g, at step t = 1, 2, ... (kept per parameter in self.state[p]):
        p = p - lr * weight_decay * p                      (decoupled: not through g)
        m = beta1 * m + (1 - beta1) * g                    (m, v start at zeros)
        v = beta2 * v + (1 - beta2) * g^2
        m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)   (bias correction)
        p = p - lr * m_hat / (sqrt(v_hat) + eps)
    Read lr and the rest from each of self.param_groups in step(): a schedule changes group["lr"] every step.
    Skip parameters whose .grad is None.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:
        raise NotImplementedError("TODO: for each group, for each p with a grad: decay, moments, corrected step")


def lr_at(step: int, max_steps: int, lr: float, warmup_steps: int, min_lr_ratio: float = 0.1) -> float:
    """The learning rate at `step` (0, 1, ...): linear warmup to `lr`, then cosine decay to lr * min_lr_ratio.

    Warmup (step < warmup_steps): lr * (step + 1) / warmup_steps.
    Then, with progress = (step - warmup_steps) / max(1, max_steps - warmup_steps), capped at 1:
        lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * progress)) / 2)
    lr_at(0, 100, 1.0, 10) = 0.1;  lr_at(9, 100, 1.0, 10) = 1.0;  lr_at(100, 100, 1.0, 10) = 0.1.
    """
    raise NotImplementedError("TODO: warmup, then cosine")


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """Clip the gradients of `params` (an iterable of tensors) by their global norm, in place.

    The global norm is sqrt of the sum of every gradient's squared entries, over all parameters together.
    If it is above max_norm, multiply every gradient by max_norm / norm; otherwise leave them alone.
    Skip parameters whose .grad is None. Returns the norm before clipping (as torch.nn.utils.clip_grad_norm_).
    """
    raise NotImplementedError("TODO: one norm over all gradients, one scale for all of them")


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: list[torch.Tensor],
               grad_clip: float = 1.0, autocast_dtype: torch.dtype | None = None) -> float:
    """One optimizer step over len(micro_batches) micro-batches (gradient accumulation). Returns the loss.

    For each micro-batch of tokens (B, T): the loss next_token_loss(model(tokens), tokens), divided by the
    number of micro-batches, then backward; so the gradients add up to those of their mean. Then, if
    grad_clip > 0, clip_grad_norm over the optimizer's parameters; then optimizer.step(), and clear the
    gradients (optimizer.zero_grad()) for the next step.
    autocast_dtype: if given (torch.bfloat16), run the forward and the loss inside
    torch.autocast(device_type, dtype=autocast_dtype), with device_type the parameters' ("cpu", "cuda").
    The weights and gradients stay float32; only the matmuls run in bf16.
    Returns the mean of the micro-batches' losses, as a Python float.
    """
    raise NotImplementedError("TODO: accumulate, clip, step, zero the gradients")


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch, steps: int, lr: float,
          warmup_steps: int = 0, grad_accum: int = 1, grad_clip: float = 1.0,
          autocast_dtype: torch.dtype | None = None) -> list[float]:
    """Train for `steps` optimizer steps; returns each step's loss.

    Before step s (0, 1, ..., steps - 1), set group["lr"] = lr_at(s, steps, lr, warmup_steps) in every group
    of optimizer.param_groups; then train_step on grad_accum micro-batches, each from next_batch() (a
    function returning tokens (B, T)). Put the model in training mode first (model.train()).
    """
    raise NotImplementedError("TODO: a loop of steps: schedule, micro-batches, train_step")
