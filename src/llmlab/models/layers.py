"""The decoder's building blocks, written out: norms, positions, attention, MLPs.

Choices are strings resolved through the dicts at the bottom (`NORMS`, `MLPS`,
`POS_EMBEDDINGS`), so a config picks a family's parts without a subclass.
Attention has two paths that must agree: an explicit one to read
(softmax(QK^T/sqrt(D) + bias) V) and PyTorch's fused `scaled_dot_product_attention`
to run fast. The residual block that wires them (and the mixture of experts) is
in `gpt.py` and `moe.py`.
References: LayerNorm (Ba et al. 2016), RMSNorm (Zhang & Sennrich 2019),
sinusoidal positions (Vaswani et al. 2017), RoPE (Su et al. 2021), ALiBi (Press et al. 2022),
QK-norm (Dehghani et al. 2023; OLMoE, Qwen3), GQA (Ainslie et al. 2023), SwiGLU (Shazeer 2020).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig
from llmlab.models.kv_cache import KVCache


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias, over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance, as in the paper and torch
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without centring or bias.

    Computed in float32 and cast back, as Llama does, so bf16 runs match it.
    """

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = False):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """The rotation speed of each pair of channels: theta^(-2i/D), optionally rescaled for long context."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind == "llama3":  # Llama 3.1: slow the low frequencies, keep the high ones, blend in between
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, blended, scaled)
    raise UserError(f"model config: rope_scaling type {kind!r} is not supported; use default, linear or llama3")


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos and sin tables for the given positions (B, T) -> each (B, 1, T, D)."""
    freqs = positions.float()[..., None] * inv_freq  # (B, T, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (B, T, D): channel i pairs with channel i + D/2
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (i, i + D/2) of x (B, H, T, D) by its position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class LearnedPositions(nn.Embedding):
    """GPT-2's table: one learned vector per position, added to the token embedding (seq_len rows, no more)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config.seq_len, config.n_embd)


class SinusoidalPositions(nn.Module):
    """Vaswani et al.'s fixed vectors: channel 2i is sin(p / 10000^(2i/C)), channel 2i+1 its cos.

    Nothing to learn and nothing stored: computed for whatever positions come, so any length works.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dim = config.n_embd

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        inv_freq = 10000.0 ** (-torch.arange(0, self.dim, 2, dtype=torch.float32, device=positions.device) / self.dim)
        angles = positions.float()[..., None] * inv_freq  # (B, T, C/2)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, T, C): sin, cos interleaved


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric series 2^(-8/n), 2^(-16/n), ... for n heads (Press et al. 2022).

    For a head count that is not a power of two, Bloom's rule: the series for the nearest lower power of
    two, then every other slope of the series for twice that many. n_head=8 -> 1/2, 1/4, ..., 1/256.
    """
    def series(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    low = 2 ** math.floor(math.log2(n_head))
    slopes = series(low) + series(2 * low)[0::2][:n_head - low]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """-slope * (query position - key position): a linear penalty on distance, per head -> (B, H, T, S).

    q_pos (B, T) and k_pos (B, S) are positions in the sequence (not in the padded row), so left padding
    and caches give the same biases as an unpadded run.
    """
    distance = (q_pos[:, :, None] - k_pos[:, None, :]).float()  # (B, T, S)
    return -slopes.to(q_pos.device)[None, :, None, None] * distance[:, None]  # (B, H, T, S)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head with n_rep query heads: (B, Hkv, S, D) -> (B, Hkv*n_rep, S, D)."""
    if n_rep == 1:
        return x
    B, Hkv, S, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       dropout: float = 0.0, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D) + bias + mask) v, returning the output and the attention weights.

    q (B, H, T, D), k and v (B, H, S, D), mask (B, 1, T, S) bool, True where a query may look.
    With mask None the attention is causal with queries at the end of the keys. bias (B, H, T, S) is
    added to the scores (ALiBi's distance penalty).
    """
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    if mask is None:
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
    weights = F.dropout(weights, p=dropout, training=dropout > 0)
    return weights @ v, weights  # (B, H, T, D), (B, H, T, S)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.dropout = config.dropout
        C, D = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(C, self.n_head * D, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, self.n_kv_head * D, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, self.n_kv_head * D, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.n_head * D, C, bias=config.o_bias)
        # QK-norm keeps attention logits from growing without bound (a cause of loss spikes)
        qk_width = {"none": 0, "head": D, "full": self.n_head * D}[config.qk_norm]
        self.q_norm = RMSNorm(qk_width, eps=config.norm_eps) if qk_width else None
        kv_width = D if config.qk_norm == "head" else self.n_kv_head * D
        self.k_norm = RMSNorm(kv_width, eps=config.norm_eps) if qk_width else None
        self.per_head_norm = config.qk_norm == "head"
        self.impl = "sdpa"  # or "explicit"; both give the same numbers
        self.last_weights: torch.Tensor | None = None  # filled by the explicit path when keep_weights is set
        self.keep_weights = False

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None,
                kv_cache: KVCache | None, layer: int, bias: torch.Tensor | None = None) -> torch.Tensor:
        """bias (B, H, T, S): added to the attention scores (ALiBi); see `explicit_attention` for the rest."""
        B, T, _ = x.shape
        q, k = self.q_proj(x), self.k_proj(x)  # (B, T, H*D), (B, T, Hkv*D)
        if self.q_norm is not None and not self.per_head_norm:  # OLMoE: one norm over all heads together
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        if self.q_norm is not None and self.per_head_norm:  # Qwen3: each head's D channels on their own
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if hasattr(kv_cache, "attend"):  # many sequences in one row (infer/paged_kv.py): it attends per group
            y = kv_cache.attend(layer, q, k, v, self.attend)  # (B, H, T, D)
        else:
            if kv_cache is not None:
                k, v = kv_cache.update(layer, k, v)  # (B, Hkv, S, D), S = cached + T
            y = self.attend(q, k, v, mask, bias)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, H*D)
        return self.o_proj(y)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, H, T, D) over k, v (B, Hkv, S, D) -> (B, H, T, D), by `impl`; mask and bias as in
        `explicit_attention` (mask None: causal, the queries being the last T keys)."""
        T, S = q.shape[-2], k.shape[-2]
        n_rep = self.n_head // self.n_kv_head
        dropout = self.dropout if self.training else 0.0
        if self.impl == "explicit" or self.keep_weights:
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, H, S, D)
            y, weights = explicit_attention(q, k, v, mask, dropout, bias)
            self.last_weights = weights.detach() if self.keep_weights else None
            return y
        if self.impl != "sdpa":
            raise UserError(f"attention impl {self.impl!r} is unknown; use 'sdpa' or 'explicit'")
        causal = mask is None and T > 1
        if (causal and S != T) or (bias is not None and mask is None):
            # queries after cached keys (SDPA's is_causal aligns top-left), or a bias to merge with causality
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            causal = False
        if bias is not None:  # one float mask: the bias where a query may look, -inf elsewhere
            mask = bias.to(q.dtype).masked_fill(~mask, float("-inf"))
        # enable_gqa: the kernel shares each K/V head with n_rep query heads, no copy of the cache
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal,
                                              enable_gqa=n_rep > 1)


class GeluMLP(nn.Module):
    """GPT-2's MLP: up, GELU (tanh approximation, as GPT-2 was trained), down."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


class SwiGLUMLP(nn.Module):
    """Llama's MLP: down(silu(gate(x)) * up(x)), a gated unit with three matrices."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
MLPS = {"gelu": GeluMLP, "swiglu": SwiGLUMLP}
# positions added to the token embeddings; "rope" rotates q and k and "alibi" biases the scores (see gpt.py),
# "none" (NoPE) leaves order to the causal mask alone (Kazemnejad et al. 2023)
POS_EMBEDDINGS = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}
