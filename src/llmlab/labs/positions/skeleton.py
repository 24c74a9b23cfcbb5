"""Lab: positions. Fill in the bodies below, then run `llmlab labs check positions` (or the notebook).

Attention by itself does not know the order of its inputs. Three ways to tell it: add a fixed vector per
position to the token embeddings (sinusoidal), rotate queries and keys by an angle per position (RoPE), or
penalise the scores by distance (ALiBi).
"""

import math  # noqa: F401

import torch


def sinusoidal(T: int, C: int) -> torch.Tensor:
    """Vaswani et al.'s table (T, C) for positions 0..T-1 and an even width C:
    channel 2i of position p is sin(p / 10000^(2i/C)), channel 2i+1 is cos(p / 10000^(2i/C))."""
    raise NotImplementedError("TODO: angles (T, C/2) from positions times frequencies, then sin and cos interleaved")


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE (Su et al. 2021) as Llama and llmlab apply it: x (B, H, T, D), positions (T,) -> (B, H, T, D).

    Channel i (i < D/2) and channel i + D/2 form a pair rotated by the angle p * theta^(-2i/D):
    (a, b) -> (a cos - b sin, b cos + a sin), for a = x[..., i] and b = x[..., i + D/2].
    """
    raise NotImplementedError("TODO: angles (T, D/2), cos and sin repeated to (T, D), x * cos + rotate_half(x) * sin")


def alibi_bias(n_head: int, T: int) -> torch.Tensor:
    """ALiBi (Press et al. 2022): the bias (n_head, T, T) added to the attention scores, for n_head a power of 2.

    bias[h, i, j] = -slope_h * (i - j) for keys j <= i (later entries are masked anyway), with the slopes a
    geometric series, slope_h = 2^(-8 (h + 1) / n_head): head 0 has the largest slope, so the shortest reach.
    """
    raise NotImplementedError("TODO: slopes (H,), distances i - j (T, T), their product, negated")
