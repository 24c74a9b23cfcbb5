"""Choosing the next token from logits: small pure functions, with transformers' meaning for each name.

Every function takes logits (B, V) and returns new logits (B, V) or token ids (B,);
nothing here runs the model, keeps state or knows about text. `sample` chains
them in transformers' order: repetition penalty, then temperature, top-k,
top-p, min-p, then a draw. Filters set the logits of removed tokens to -inf,
and each keeps at least one token.

Worked example: logits [2.0, 1.0, 0.0, -1.0] have probabilities
[0.64, 0.24, 0.09, 0.03]; top_k=2 keeps the first two, top_p=0.7 keeps the
first two (0.64 alone is below 0.7), min_p=0.2 keeps tokens with p >= 0.2 * 0.64,
also the first two. Temperature 0 means greedy: the argmax, no randomness.
"""

import torch


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token of each row: (B, V) -> (B,)."""
    return logits.argmax(dim=-1)


def apply_repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019) on every token already in prev_ids (B, S).

    A seen token's logit is divided by `penalty` when positive and multiplied when
    negative, so penalty > 1 always makes it less likely. Repeats count once.
    """
    if penalty == 1.0 or prev_ids.numel() == 0:
        return logits
    seen = logits.gather(-1, prev_ids)  # (B, S)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, prev_ids, seen)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by the temperature: below 1 sharpens the distribution, above 1 flattens it."""
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too)."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the smallest set of likeliest tokens whose mass reaches p.

    As transformers does it: sort ascending, drop the tokens whose cumulative
    probability stays at or below 1 - p, never the most likely one.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1)  # ascending
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
    drop_sorted = cum <= 1 - p
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens at least min_p times as likely as the likeliest one (Nguyen et al. 2024)."""
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def sample(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
           prev_ids: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V) of the last position, with transformers' pipeline order."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float()
    if prev_ids is not None:
        logits = apply_repetition_penalty(logits, prev_ids, repetition_penalty)
    if temperature == 0:
        return greedy(logits)
    logits = apply_temperature(logits, temperature)
    if top_k is not None and top_k > 0:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None and min_p > 0:
        logits = min_p_filter(logits, min_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)
