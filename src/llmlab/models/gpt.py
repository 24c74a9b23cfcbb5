"""THE decoder: one `Transformer` for every decoder-only family.

GPT-2 (learned positions, LayerNorm, GELU, biases), Llama (RoPE, RMSNorm,
SwiGLU, grouped-query attention), Bloom (ALiBi, a norm on the embeddings) and
the mixtures of experts (Mixtral, Qwen-MoE, OLMoE: `moe.py` in place of the
MLP, QK-norm) are the same code with a different `ModelConfig`; so are the
textbook variants (Post-LN, sinusoidal or no positions). The model knows
nothing about text, only token ids. `forward` returns logits, for every
position, the last one, or only the positions a loss needs; the losses live in
`llmlab.train.objectives` (a mixture's auxiliary losses: `aux_loss()` after a forward).
"""

import torch
import torch.nn as nn

from llmlab.models.config import ModelConfig
from llmlab.models.kv_cache import KVCache
from llmlab.models.layers import (
    MLPS,
    NORMS,
    POS_EMBEDDINGS,
    Attention,
    alibi_bias,
    alibi_slopes,
    rope_cos_sin,
    rope_inv_freq,
)
from llmlab.models.moe import MoE


class Block(nn.Module):
    """One residual block. Pre-LN (GPT-2, Llama): x + attn(norm(x)), then x + mlp(norm(x)).
    Post-LN (Vaswani et al. 2017, BERT): norm(x + attn(x)), then norm(x + mlp(x)); its gradients near the
    output are larger than near the input, which is why it needs a learning-rate warmup (Xiong et al. 2020).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.post_norm = config.norm_placement == "post"
        self.attn_norm = NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.attn = Attention(config)
        self.mlp_norm = NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.mlp = MoE(config) if config.n_expert else MLPS[config.mlp](config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope, mask, kv_cache, layer, bias=None) -> torch.Tensor:
        if self.post_norm:
            x = self.attn_norm(x + self.dropout(self.attn(x, rope, mask, kv_cache, layer, bias)))
            return self.mlp_norm(x + self.dropout(self.mlp(x)))
        x = x + self.dropout(self.attn(self.attn_norm(x), rope, mask, kv_cache, layer, bias))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = POS_EMBEDDINGS[config.pos](config) if config.pos in POS_EMBEDDINGS else None
        self.emb_norm = NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias) \
            if config.emb_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        # Post-LN blocks end on a norm already, so no final one (as in the original Transformer and BERT)
        self.norm_f = nn.Identity() if config.norm_placement == "post" else \
            NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if config.pos == "rope":
            inv_freq = rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
            self.register_buffer("rope_inv_freq", inv_freq, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual branch adds to the stream, so shrink the last projections
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=config.init_std / (2 * config.n_layer) ** 0.5)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def set_attention(self, impl: str) -> None:
        """Switch every layer between "sdpa" (fused) and "explicit" (readable) attention."""
        for block in self.blocks:
            block.attn.impl = impl

    def set_moe(self, impl: str) -> None:
        """Set every mixture-of-experts layer's experts path: "auto", "loop" (readable), "sorted" or "batched"."""
        for block in self.blocks:
            if isinstance(block.mlp, MoE):
                block.mlp.impl = impl

    def aux_loss(self) -> torch.Tensor:
        """The last forward's mixture-of-experts losses, mean over layers, weighted by the config's
        coefficients: aux_loss_coef * load balance + z_loss_coef * router z-loss (0 for a dense model)."""
        moes = [b.mlp for b in self.blocks if isinstance(b.mlp, MoE) and b.mlp.aux]
        if not moes:
            return self.tok_emb.weight.new_zeros(())
        c = self.config
        balance = sum(m.aux["balance"] for m in moes) / len(moes)
        z = sum(m.aux["z"] for m in moes) / len(moes)
        return c.aux_loss_coef * balance + c.z_loss_coef * z

    def routing_stats(self) -> list[dict]:
        """Per MoE layer, from the last forward: tokens per expert (kept assignments), dropped assignments,
        and the two auxiliary losses unweighted."""
        return [{"layer": i, "tokens": b.mlp.load["tokens"].tolist(), "dropped": int(b.mlp.load["dropped"]),
                 **{k: float(v.detach()) for k, v in b.mlp.aux.items()}}
                for i, b in enumerate(self.blocks) if isinstance(b.mlp, MoE) and b.mlp.load]

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False,
                logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids idx (B, T); (B, 1, vocab_size) with last_only.

        kv_cache: continue from the cached positions and store this step's keys and values.
        positions: (B, T) position of each token; default: cache.pos + 0..T-1 (set it for left padding).
        attn_mask: (B, S) True for real keys (S = cached + T), or a full (B, T, S) mask; causality is added.
        last_only: project only the last position to the vocabulary (generation needs no more; a 512-token
            prefill of a 49k vocabulary would otherwise build a 100 MB logits tensor to use one row of it).
        logits_mask: (B, T) bool; project only these positions -> (N, vocab_size) for the N True entries.
            SFT trains on assistant tokens only: the head's (B*T, vocab) matmul over prompts and padding
            would cost ~20% of a small model's compute and most of its activation memory for nothing.
        """
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than the context window "
                             f"({self.config.seq_len})")
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)
        x = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions).to(x.dtype)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        x = self.drop(x)
        rope = rope_cos_sin(positions, self.rope_inv_freq, x.dtype) if self.config.pos == "rope" else None
        bias = self._alibi(positions, attn_mask, kv_cache, start + T) if self.config.pos == "alibi" else None
        mask = self._mask(attn_mask, T, start, idx.device)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, kv_cache, i, bias)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        if logits_mask is not None:
            x = x[logits_mask]  # (N, C)
        return self.lm_head(self.norm_f(x))

    def _alibi(self, positions: torch.Tensor, attn_mask: torch.Tensor | None, kv_cache, S: int) -> torch.Tensor:
        """ALiBi's bias (B, H, T, S) from the queries' positions and the keys'.

        Key positions: from the cache if it knows them (`key_positions`, (B, S)); else counted along a (B, S)
        key mask (left padding), as Bloom does; else 0..S-1.
        """
        k_pos = getattr(kv_cache, "key_positions", None)
        if k_pos is None and attn_mask is not None:
            if attn_mask.dim() != 2:
                raise ValueError("ALiBi needs each key's position: pass a (B, S) key mask, or a cache with "
                                 "key_positions, not a (B, T, S) mask")
            k_pos = attn_mask.long().cumsum(-1) - 1  # (B, S)
        if k_pos is None:
            k_pos = torch.arange(S, device=positions.device)[None]  # (1, S)
        return alibi_bias(alibi_slopes(self.config.n_head), positions, k_pos.to(positions.device))

    @staticmethod
    def _mask(attn_mask: torch.Tensor | None, T: int, start: int, device: torch.device) -> torch.Tensor | None:
        """Combine a padding or document mask with causality -> (B, 1, T, S) bool, or None for plain causal."""
        if attn_mask is None:
            return None
        S = start + T
        causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(start)  # (T, S)
        allowed = attn_mask[:, None, :] if attn_mask.dim() == 2 else attn_mask  # (B, 1|T, S)
        mask = causal & allowed.to(torch.bool)
        # a query whose keys are all masked (a padding position) would softmax to NaN: let it see itself
        mask |= torch.eye(T, S, dtype=torch.bool, device=device).roll(start, dims=1)
        return mask[:, None]  # (B, 1, T, S)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward): 6 per matmul weight plus attention's scores.

    As in PaLM's appendix B and nanoGPT: 6N + 12 * n_layer * (n_head * head_dim) * T, where N counts
    weights used in matmuls (embedding lookups are free, the output head is not).
    """
    C, L, D, hidden = config.n_embd, config.n_layer, config.head_dim, config.intermediate_size
    attn = C * D * (2 * config.n_head + 2 * config.n_kv_head)
    per_unit = 3 if config.mlp == "swiglu" else 2  # matrices in one MLP
    if config.n_expert:  # active weights only: the router, k experts and the shared expert (with its gate)
        expert = config.expert_size or hidden
        shared = config.shared_expert_size * per_unit * C + C if config.shared_expert_size else 0
        mlp = C * config.n_expert + config.expert_top_k * C * expert * per_unit + shared
    else:
        mlp = C * hidden * per_unit
    n_matmul = L * (attn + mlp) + C * config.vocab_size
    T = seq_len or config.seq_len
    return 6 * n_matmul + 12 * L * config.n_head * D * T
