"""Lab: attention, the reference solution: llmlab's own attention (llmlab.models.layers) behind the lab's names.

`explicit_attention` is the readable path of every llmlab decoder (its fused path, torch's
scaled_dot_product_attention, is held equal to it by the tests); `Attention` is the decoder's attention layer.
"""

import torch

from llmlab.models.config import ModelConfig
from llmlab.models.layers import Attention, explicit_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    T = q.shape[-2]
    everything = torch.ones(1, 1, T, T, dtype=torch.bool, device=q.device)  # (1, 1, T, S): no mask
    out, _weights = explicit_attention(q, k, v, mask=None if causal else everything)  # None: causal
    return out


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    T, S = q.shape[-2], k.shape[-2]
    everything = torch.ones(1, 1, T, S, dtype=torch.bool, device=q.device)  # (1, 1, T, S)
    out, _weights = explicit_attention(q, k, v, mask=everything)
    return out


class MultiHeadAttention(Attention):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__(ModelConfig(n_embd=n_embd, n_head=n_head, bias=True))
        self.impl = "explicit"

    def forward(self, x: torch.Tensor, causal: bool = True) -> torch.Tensor:
        T = x.shape[1]
        everything = torch.ones(1, 1, T, T, dtype=torch.bool, device=x.device)  # (1, 1, T, T)
        return super().forward(x, rope=None, mask=None if causal else everything, kv_cache=None, layer=0)


LLMLAB_CODE = [explicit_attention, Attention]  # what `llmlab labs solution attention` prints after this file
