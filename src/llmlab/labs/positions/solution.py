"""Lab: positions, the reference solution: llmlab's own position code (llmlab.models.layers) behind the lab's
names: `SinusoidalPositions`, the RoPE tables and rotation every llmlab decoder uses, and ALiBi's slopes and
bias as Bloom computes them."""

import torch

from llmlab.models.config import ModelConfig
from llmlab.models.layers import SinusoidalPositions, alibi_slopes, apply_rope, rope_cos_sin, rope_inv_freq
from llmlab.models.layers import alibi_bias as llmlab_alibi_bias


def sinusoidal(T: int, C: int) -> torch.Tensor:
    table = SinusoidalPositions(ModelConfig(n_embd=C, n_head=1))
    return table(torch.arange(T)[None])[0]  # (1, T) positions -> (T, C)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    inv_freq = rope_inv_freq(x.shape[-1], theta)  # (D/2,)
    cos, sin = rope_cos_sin(positions[None], inv_freq, x.dtype)  # each (1, 1, T, D)
    return apply_rope(x, cos, sin)


def alibi_bias(n_head: int, T: int) -> torch.Tensor:
    positions = torch.arange(T)[None]  # (1, T), for queries and keys alike
    return llmlab_alibi_bias(alibi_slopes(n_head), positions, positions)[0]  # (H, T, T)


LLMLAB_CODE = [SinusoidalPositions, rope_inv_freq, rope_cos_sin, apply_rope, alibi_slopes, llmlab_alibi_bias]
