"""Lab: attention. Fill in the three bodies below, then run `llmlab labs check attention` (or the notebook).

Shapes use B batch, H heads, T query positions, S key positions, D head_dim, C = H * D the model width.
"""

import math  # noqa: F401  (you will want math.sqrt)

import torch
import torch.nn as nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Scaled dot-product attention: softmax(q k^T / sqrt(D)) v, per batch row and head.

    q, k, v: (B, H, T, D), the queries, keys and values of T positions.
    causal: if True, position i may only look at positions j <= i (itself and the past), as in a decoder.
    Returns (B, H, T, D): for each query, the average of the values weighted by the softmax of its scores.
    """
    raise NotImplementedError("TODO: scores (B, H, T, T), scale, mask if causal, softmax over keys, times v")


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross-attention: queries from one sequence, keys and values from another (an encoder's output, an image).

    q: (B, H, T, D); k, v: (B, H, S, D), where S may differ from T.
    No mask: every query may look at every key. Returns (B, H, T, D).
    """
    raise NotImplementedError("TODO: like attention, with T queries over S keys and no causal mask")


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on (B, T, C) inputs: project, split into heads, attend, merge, project.

    Keep these four layers and names (the check copies their weights into torch.nn.MultiheadAttention):
    q_proj, k_proj, v_proj, o_proj, each nn.Linear(n_embd, n_embd) with a bias.
    """

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        raise NotImplementedError("TODO: n_embd must divide by n_head; create q_proj, k_proj, v_proj, o_proj")

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C). Split C into H heads of D channels, attend per head, merge back."""
        raise NotImplementedError("TODO: q, k, v (B, T, C) -> (B, H, T, D), attention, -> (B, T, C), o_proj")
