"""Lab: gpt-to-llama. Below is a working GPT-2; turn a copy of it into Llama by filling in the bodies after it,
then run `llmlab labs check gpt-to-llama` (or the notebook).

Both models read their sizes from llmlab's `ModelConfig` (n_layer, n_head, n_kv_head, n_embd, head_dim,
intermediate_size, vocab_size, seq_len, rope_theta, norm_eps, tie_embeddings) and use the parameter names of
llmlab's decoder, so llmlab's weights load into them key by key. Llama (Touvron et al. 2023) changes five things:
RMSNorm for LayerNorm, RoPE for the position table, SwiGLU for the GELU MLP, grouped-query attention (fewer
key/value heads than query heads), and no biases anywhere. Embeddings stay tied when the config says so.
Shapes: B batch, T positions, C = n_embd, H = n_head heads of D = head_dim, Hkv = n_kv_head.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- GPT-2 (given: read it, then change a copy) -------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, self.n_head = config.n_embd, config.n_head
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D) each
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class GeluMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))  # as GPT-2 was trained


class GPT2Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = GeluMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))  # Pre-LN: normalise each branch's input, keep the residual stream
        return x + self.mlp(self.mlp_norm(x))


class GPT2(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.seq_len, config.n_embd)  # one learned vector per position
        self.blocks = nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer))
        self.norm_f = nn.LayerNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix embeds the tokens and scores them

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size)."""
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))


# ---- Llama (yours) -----------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis: LayerNorm without centring and without a bias.
    weight: a parameter of `dim` ones."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        raise NotImplementedError("TODO: eps and the weight")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: divide by the root mean square, times the weight")


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """RoPE (Su et al. 2021) as Llama applies it: x (B, H, T, D), positions (T,) -> (B, H, T, D).

    Channel i (i < D/2) and channel i + D/2 form a pair rotated by the angle p * theta^(-2i/D):
    (a, b) -> (a cos - b sin, b cos + a sin), for a = x[..., i] and b = x[..., i + D/2]. (The positions lab's.)
    """
    raise NotImplementedError("TODO: angles (T, D/2), cos and sin repeated to (T, D), x * cos + rotate_half(x) * sin")


class LlamaAttention(nn.Module):
    """CausalSelfAttention, changed three ways:

    - no biases; q_proj: C -> H * D, o_proj: H * D -> C, with D = config.head_dim;
    - grouped-query attention: k_proj and v_proj make only Hkv = config.n_kv_head heads (C -> Hkv * D), and
      key/value head j serves the n_head // n_kv_head consecutive query heads from j * (n_head // n_kv_head) on;
    - RoPE on q and k (not v) after the split into heads, at positions 0..T-1, with theta = config.rope_theta.
    Tables kept on the module, if any, must be buffers with persistent=False: a state_dict holds weights only.
    """

    def __init__(self, config):
        super().__init__()
        raise NotImplementedError("TODO: the four projections, without biases, and the sizes forward needs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C), causal."""
        raise NotImplementedError("TODO: q (B, H, T, D), k and v (B, Hkv, T, D), rope, share k and v, attend")


class SwiGLUMLP(nn.Module):
    """Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)), hidden width config.intermediate_size, no biases."""

    def __init__(self, config):
        super().__init__()
        raise NotImplementedError("TODO: gate_proj, up_proj and down_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: the gated unit")


class LlamaBlock(nn.Module):
    """GPT2Block with RMSNorm (eps = config.norm_eps) for both norms, LlamaAttention and SwiGLUMLP: same names."""

    def __init__(self, config):
        super().__init__()
        raise NotImplementedError("TODO: attn_norm, attn, mlp_norm, mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: the two Pre-LN residual branches")


class Llama(nn.Module):
    """GPT2 with LlamaBlocks, a final RMSNorm, and no position table (RoPE works inside attention); lm_head tied
    to tok_emb when config.tie_embeddings. The names stay GPT2's: tok_emb, blocks, norm_f, lm_head."""

    def __init__(self, config):
        super().__init__()
        raise NotImplementedError("TODO: tok_emb, blocks, norm_f, lm_head (tied when the config says so)")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab_size)."""
        raise NotImplementedError("TODO: embed, the blocks, the final norm, the head")
