"""Lab: gpt-to-llama, the reference solution: llmlab's one decoder (llmlab.models) behind the lab's names.

In llmlab, GPT-2 and Llama are not two models but one `Transformer` with different `ModelConfig` strings:
positions "learned" or "rope", norm "layernorm" or "rmsnorm", mlp "gelu" or "swiglu", biases or none. Each
class below takes the lab's config, sets Llama's (or GPT-2's) choices on it, and lets llmlab's code build the
part. Grouped-query attention is just n_kv_head < n_head in the same `Attention`.
"""

import dataclasses

import torch

from llmlab.models import layers
from llmlab.models.gpt import Block, Transformer
from llmlab.models.layers import apply_rope, rope_cos_sin, rope_inv_freq

GPT2_CHOICES = dict(pos="learned", norm="layernorm", mlp="gelu", bias=True, qkv_bias=True, o_bias=True)
LLAMA_CHOICES = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False, o_bias=False)


def _llama(config):
    return dataclasses.replace(config, **LLAMA_CHOICES)


class GPT2(Transformer):
    def __init__(self, config):
        super().__init__(dataclasses.replace(config, **GPT2_CHOICES))


class RMSNorm(layers.RMSNorm):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__(dim, eps)


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    cos, sin = rope_cos_sin(positions[None], rope_inv_freq(x.shape[-1], theta), x.dtype)  # each (1, 1, T, D)
    return apply_rope(x, cos, sin)


def _rope_tables(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    positions = torch.arange(x.shape[1], device=x.device)[None]  # (1, T): positions 0..T-1
    return rope_cos_sin(positions, module.rope_inv_freq, x.dtype)


class LlamaAttention(layers.Attention):
    def __init__(self, config):
        config = _llama(config)
        super().__init__(config)
        self.register_buffer("rope_inv_freq", rope_inv_freq(config.head_dim, config.rope_theta), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, _rope_tables(self, x), mask=None, kv_cache=None, layer=0)  # mask None: causal


class SwiGLUMLP(layers.SwiGLUMLP):
    def __init__(self, config):
        super().__init__(_llama(config))


class LlamaBlock(Block):
    def __init__(self, config):
        config = _llama(config)
        super().__init__(config)
        self.register_buffer("rope_inv_freq", rope_inv_freq(config.head_dim, config.rope_theta), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x, _rope_tables(self, x), mask=None, kv_cache=None, layer=0)


class Llama(Transformer):
    def __init__(self, config):
        super().__init__(_llama(config))


LLMLAB_CODE = [layers.RMSNorm, apply_rope, layers.repeat_kv, layers.Attention, layers.SwiGLUMLP, Block,
               Transformer]  # printed by `llmlab labs solution gpt-to-llama`
