"""Contrastive fine-tuning of a sentence encoder on (question, passage) pairs with in-batch negatives.

InfoNCE (van den Oord et al. 2018), as sentence-transformers' MultipleNegativesRankingLoss computes it
(Henderson et al. 2017): for a batch of B questions q_i and their passages p_i (and optionally hard
negatives after them), every other passage in the batch is a negative for q_i:

    logits[i, j] = scale * cos(q_i, p_j)        (B, B * (1 + negatives))
    loss         = cross_entropy(logits, labels = [0, 1, ..., B - 1])

scale = 20 (temperature 0.05) as sentence-transformers' default: cosines live in [-1, 1], and without the
scale the softmax could barely tell the positive from the rest. A batch never holds the same passage twice:
a repeated passage would be a "negative" that is really a positive. The loop is `llmlab.train.loop.train_loop`
with this loss; the encoder is `llmlab.models.bert.Bert` (all-MiniLM-L6-v2 by default), pooled as the
embedder pools it (mean over real tokens, L2-normalised).
"""

import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.optim import make_adamw

SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default (temperature 0.05)


def info_nce(queries: torch.Tensor, passages: torch.Tensor, scale: float = SCALE) -> torch.Tensor:
    """Mean InfoNCE loss: queries (B, C); passages (B * (1 + n), C), the B positives first, then negatives."""
    if len(passages) < len(queries) or len(passages) % len(queries):
        raise UserError(f"info_nce: {len(queries)} queries need their {len(queries)} positives first "
                        f"(then whole sets of negatives), got {len(passages)} passages")
    logits = scale * F.normalize(queries, dim=-1) @ F.normalize(passages, dim=-1).T  # (B, B * (1 + n))
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))


def encode(model: torch.nn.Module, idx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence vectors with gradients (B, C): the encoder's states, mean over real tokens, L2-normalised."""
    return F.normalize(model.pool(model.encode(idx, mask), mask, "mean"), dim=-1)


def pair_batches(pairs: list[tuple[str, str]], tokenizer: Any, batch_size: int, max_len: int, seed: int = 0
                 ) -> Callable[[], tuple[torch.Tensor, ...]]:
    """next_batch() -> (q_idx, q_mask, p_idx, p_mask); shuffled epochs, no passage twice in one batch."""
    if len(pairs) < 2 or batch_size < 2:
        raise UserError(f"contrastive training needs at least 2 pairs and batch_size >= 2 (in-batch negatives); "
                        f"got {len(pairs)} pairs, batch_size={batch_size}")
    rng = random.Random(seed)

    def ids(text: str) -> list[int]:
        return tokenizer.add_special(tokenizer.encode(text, add_special_tokens=False)[:max_len - 2])

    encoded = [(ids(q), ids(p), p) for q, p in pairs]
    queue: list[int] = []

    def next_batch() -> tuple[torch.Tensor, ...]:
        rows, seen, skipped = [], set(), []
        while len(rows) < batch_size:
            if not queue:
                if len(rows) + len(skipped) >= len(encoded):
                    break  # fewer distinct passages than batch_size: a smaller batch
                order = list(range(len(encoded)))
                rng.shuffle(order)
                queue.extend(order)
            i = queue.pop()
            (skipped if encoded[i][2] in seen else rows).append(i)
            seen.add(encoded[i][2])
        queue.extend(skipped)  # their turn comes in a later batch
        q_idx, q_mask = tokenizer.pad([encoded[i][0] for i in rows])
        p_idx, p_mask = tokenizer.pad([encoded[i][1] for i in rows])
        return q_idx, q_mask, p_idx, p_mask

    return next_batch


def contrastive_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], scale: float = SCALE) -> torch.Tensor:
    device = next(model.parameters()).device
    q_idx, q_mask, p_idx, p_mask = (t.to(device) for t in batch)
    return info_nce(encode(model, q_idx, q_mask), encode(model, p_idx, p_mask), scale)


def train_embedder(model: torch.nn.Module, tokenizer: Any, pairs: list[tuple[str, str]], steps: int = 100,
                   batch_size: int = 16, lr: float = 2e-5, warmup_steps: int = 10, max_len: int | None = None,
                   scale: float = SCALE, seed: int = 0, progress: bool = True) -> TrainState:
    """Fine-tune the encoder in place on (question, passage) pairs; returns the loop's state (loss history)."""
    if not (hasattr(model, "encode") and hasattr(model, "pool")):
        raise UserError("train-embedder needs an encoder (a BERT-style model such as all-minilm-l6-v2)")
    if steps < 1 or lr <= 0:
        raise UserError(f"steps={steps}, lr={lr}: both must be positive")
    torch.manual_seed(seed)
    max_len = max_len or model.config.embed_len or model.config.seq_len
    next_batch = pair_batches(pairs, tokenizer, batch_size, max_len, seed)
    optimizer = make_adamw(model, lr, weight_decay=0.01, betas=(0.9, 0.999),  # transformers' AdamW defaults
                           device_type=next(model.parameters()).device.type)
    settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=min(warmup_steps, steps // 2), min_lr_ratio=0.0,
                            progress=progress)
    state = train_loop(model, optimizer, next_batch, settings, TrainState(),
                       loss_fn=lambda m, b: contrastive_loss(m, b, scale))
    model.eval()
    return state
