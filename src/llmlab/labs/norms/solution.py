"""Lab: norms, the reference solution: llmlab's own norms and MLP (llmlab.models.layers) behind the lab's names.

The norms are llmlab's classes as they are. The activations are the ones its MLPs call (GPT-2's GELU with the
tanh approximation, Llama's SiLU); the two residual placements are the two branches of llmlab's `Block.forward`.
"""

import torch
import torch.nn.functional as F

from llmlab.models.config import ModelConfig
from llmlab.models.gpt import Block
from llmlab.models.layers import GeluMLP, LayerNorm, RMSNorm, SwiGLUMLP

__all__ = ["LayerNorm", "RMSNorm", "gelu", "silu", "SwiGLU", "pre_norm", "post_norm"]


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # as GeluMLP: GPT-2 was trained with the tanh approximation


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)  # as SwiGLUMLP


class SwiGLU(SwiGLUMLP):
    def __init__(self, n_embd: int, hidden: int):
        super().__init__(ModelConfig(n_embd=n_embd, n_head=1, mlp="swiglu", intermediate_size=hidden, bias=False))


def pre_norm(x: torch.Tensor, norm, f) -> torch.Tensor:
    return x + f(norm(x))  # Block.forward, pre-LN: x = x + attn(attn_norm(x))


def post_norm(x: torch.Tensor, norm, f) -> torch.Tensor:
    return norm(x + f(x))  # Block.forward, post-LN: x = attn_norm(x + attn(x))


LLMLAB_CODE = [LayerNorm, RMSNorm, GeluMLP, SwiGLUMLP, Block.forward]  # printed by `llmlab labs solution norms`
