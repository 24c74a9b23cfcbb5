"""THE decoder: one `Transformer` for every decoder-only family.

GPT-2 (learned positions, LayerNorm, GELU, biases) and Llama (RoPE, RMSNorm,
SwiGLU, grouped-query attention) are the same code with a different
`ModelConfig`. The model knows nothing about text, only token ids. `forward`
returns logits, for every position, the last one, or only the positions a loss
needs; the losses live in `llmlab.train.objectives`.
"""

import torch
import torch.nn as nn

from llmlab.models.config import ModelConfig
from llmlab.models.kv_cache import KVCache
from llmlab.models.layers import NORMS, Block, rope_cos_sin, rope_inv_freq


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.seq_len, config.n_embd) if config.pos == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = NORMS[config.norm](config.n_embd, eps=config.norm_eps, bias=config.bias)
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
            x = x + self.pos_emb(positions)
        x = self.drop(x)
        rope = rope_cos_sin(positions, self.rope_inv_freq, x.dtype) if self.config.pos == "rope" else None
        mask = self._mask(attn_mask, T, start, idx.device)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, kv_cache, i)
        if kv_cache is not None:
            kv_cache.advance(T)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        if logits_mask is not None:
            x = x[logits_mask]  # (N, C)
        return self.lm_head(self.norm_f(x))

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
    mlp = C * hidden * (3 if config.mlp == "swiglu" else 2)
    n_matmul = L * (attn + mlp) + C * config.vocab_size
    T = seq_len or config.seq_len
    return 6 * n_matmul + 12 * L * config.n_head * D * T
