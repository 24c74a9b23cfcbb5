"""Lab: norms. Fill in the bodies below, then run `llmlab labs check norms` (or the notebook).

x has shape (..., dim): any number of leading dimensions (batch, positions), features last. A norm works on
each feature vector x[..., :] on its own.
"""

import math  # noqa: F401

import torch
import torch.nn as nn


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias, with mean and (biased) variance over the last dimension.

    weight: a parameter of `dim` ones; bias: a parameter of `dim` zeros.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        raise NotImplementedError("TODO: store eps; register weight (ones) and bias (zeros) as nn.Parameter")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: centre, divide by sqrt(variance + eps), scale and shift")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x**2, last dim) + eps) * weight: LayerNorm without the centring and the bias (Llama).

    weight: a parameter of `dim` ones.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        raise NotImplementedError("TODO: store eps; register weight (ones) as nn.Parameter")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: divide by the root mean square of the last dimension, scale")


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU, x * Phi(x) with Phi the standard normal's CDF (exact with erf, or GPT-2's tanh approximation)."""
    raise NotImplementedError("TODO: x * 0.5 * (1 + erf(x / sqrt(2)))")


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU (swish), x * sigmoid(x)."""
    raise NotImplementedError("TODO: x * sigmoid(x)")


class SwiGLU(nn.Module):
    """Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)), on x (..., n_embd) -> (..., n_embd).

    Keep the names: gate_proj and up_proj are nn.Linear(n_embd, hidden, bias=False), down_proj is
    nn.Linear(hidden, n_embd, bias=False).
    """

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        raise NotImplementedError("TODO: create gate_proj, up_proj and down_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: the gate through silu, times the up projection, then down")


def pre_norm(x: torch.Tensor, norm, f) -> torch.Tensor:
    """One Pre-LN residual step (GPT-2, Llama): x + f(norm(x)). norm and f map (B, T, C) -> (B, T, C)."""
    raise NotImplementedError("TODO: normalise the branch's input, keep the residual stream as it is")


def post_norm(x: torch.Tensor, norm, f) -> torch.Tensor:
    """One Post-LN residual step (the original Transformer, BERT): norm(x + f(x))."""
    raise NotImplementedError("TODO: add the branch to the stream, then normalise the sum")
