"""A T5-style encoder-decoder: relative position buckets, RMSNorm, cross-attention, a cached greedy decoder.

Raffel et al. 2019 (T5); Shaw et al. 2018 (relative positions); Shazeer 2020 (gated FFN, T5 v1.1).
What differs from the decoder in `gpt.py`:
- no position embeddings: each head adds a learned bias, looked up by the *bucket* of the distance
  between key and query (exact for small distances, logarithmic up to `rel_max_distance`). The encoder's
  buckets are bidirectional, the decoder's causal; layer 0 of each stack owns the table and every layer
  reuses the bias it computes;
- RMSNorm without bias ("T5LayerNorm") before each sublayer (Pre-LN), and q·k is NOT divided by
  sqrt(head_dim): T5 folds that factor into the initialisation of q instead (see `_init_weights`);
- each decoder block attends to itself (causal), then to the encoder output (cross-attention), then the FFN;
- FFN per `mlp` (HF's `feed_forward_proj`): "relu" (T5), "gated-gelu" (v1.1, Flan-T5), ...;
- a tied head scales the decoder output by n_embd**-0.5 first (`scale_logits`), as the original T5 did.
`model(input_ids, decoder_input_ids)` returns decoder logits (B, T, vocab). Generation keeps the decoder's
self-attention keys/values in a `KVCache` and computes the cross-attention keys/values once per input.
Span-corruption pretraining data is `llmlab.data.masking`; HF weight names are `hf_encoders.py`'s.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models.kv_cache import KVCache
from llmlab.models.layers import RMSNorm

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
               "silu": F.silu}


@dataclass
class T5Config:
    arch: str = "t5"  # what `llmlab.load` builds from a saved config
    vocab_size: int = 32128
    seq_len: int = 512  # longest input and output (positions are relative: only a limit for the cache)
    n_layer: int = 6  # encoder blocks
    n_decoder_layer: int | None = None  # None: as many as the encoder
    n_head: int = 8
    head_dim: int = 64  # T5's d_kv, set apart from n_embd // n_head
    n_embd: int = 512
    intermediate_size: int = 2048
    mlp: str = "relu"  # "relu", "gelu", "gated-gelu" (tanh GELU, as HF), "gated-relu", "gated-silu"
    rel_buckets: int = 32
    rel_max_distance: int = 128  # distances beyond this share the last bucket
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    scale_logits: bool = True  # multiply the decoder output by n_embd**-0.5 before the head (tied T5)
    dropout: float = 0.0
    pad_id: int = 0
    eos_id: int = 1
    decoder_start_id: int = 0  # T5 starts decoding from the pad token
    init_factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)  # converter notes, ignored by the model

    def __post_init__(self) -> None:
        if self.n_decoder_layer is None:
            self.n_decoder_layer = self.n_layer
        if self.activation not in ACTIVATIONS:
            raise UserError(f"model config: mlp={self.mlp!r} is unknown; use relu, gelu, gated-gelu, gated-relu "
                            "or gated-silu")

    @property
    def gated(self) -> bool:
        return self.mlp.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.mlp.removeprefix("gated-")
        return "gelu_new" if self.mlp == "gated-gelu" else act  # HF's "gated-gelu" is the tanh GELU

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> "T5Config":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


def relative_position_bucket(relative: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Bucket of each distance key - query (Mesh TensorFlow's scheme, as HF's T5).

    Half the buckets (per direction when bidirectional) are exact distances 0, 1, 2, ...; the rest grow
    logarithmically up to max_distance. Causal buckets see only keys at or before the query.
    With 32 bidirectional buckets: distance -1 -> 1, +1 -> 17, -200 -> 15, 0 -> 0.
    """
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = -torch.clamp(relative, max=0)  # keys in the future count as distance 0
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class T5Attention(nn.Module):
    """Multi-head attention with an additive bias and no 1/sqrt(D) scaling; self- or cross-attention."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        inner = config.n_head * config.head_dim
        self.q_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.k_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.v_proj = nn.Linear(config.n_embd, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.n_embd, bias=False)
        self.dropout = config.dropout
        self.impl = "sdpa"  # or "explicit"; both give the same numbers
        self.keep_weights = False  # the explicit path then stores its weights in last_weights (for plots)
        self.last_weights: torch.Tensor | None = None

    def split(self, x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        B, T, _ = x.shape
        return proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, T, C); bias (B|1, H|1, T, S) added to the scores (positions and -inf masks); kv (B, H, S, D)."""
        B, T, _ = x.shape
        q = self.split(x, self.q_proj)  # (B, H, T, D)
        k, v = kv
        dropout = self.dropout if self.training else 0.0
        if self.impl == "explicit" or self.keep_weights:
            scores = q @ k.transpose(-2, -1) + bias  # (B, H, T, S), unscaled as in T5
            weights = F.softmax(scores.float(), dim=-1).to(q.dtype)
            self.last_weights = weights.detach() if self.keep_weights else None
            y = F.dropout(weights, p=dropout, training=dropout > 0) @ v
        elif self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout, scale=1.0)
        else:
            raise UserError(f"attention impl {self.impl!r} is unknown; use 'sdpa' or 'explicit'")
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))  # (B, T, C)


class T5MLP(nn.Module):
    """down(act(up(x))), or gated: down(act(gate(x)) * up(x))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.act = ACTIVATIONS[config.activation]
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False) if config.gated else None
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is None:
            return self.down_proj(self.act(self.up_proj(x)))
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class T5Block(nn.Module):
    """Pre-norm: x + attn(norm(x)), [x + cross_attn(norm(x), encoder output)], x + mlp(norm(x))."""

    def __init__(self, config: T5Config, cross: bool):
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = T5Attention(config)
        self.cross_norm = RMSNorm(config.n_embd, eps=config.norm_eps) if cross else None
        self.cross_attn = T5Attention(config) if cross else None
        self.mlp_norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = T5MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, bias, cache: KVCache | None = None, layer: int = 0, cross_kv=None, cross_bias=None):
        h = self.attn_norm(x)
        k, v = self.attn.split(h, self.attn.k_proj), self.attn.split(h, self.attn.v_proj)  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, S, D), S = cached + T
        x = x + self.drop(self.attn(h, bias, (k, v)))
        if self.cross_attn is not None:
            x = x + self.drop(self.cross_attn(self.cross_norm(x), cross_bias, cross_kv))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


class T5Stack(nn.Module):
    """The encoder (bidirectional buckets) or the decoder (causal buckets, cross-attention)."""

    def __init__(self, config: T5Config, n_layer: int, decoder: bool):
        super().__init__()
        self.config, self.decoder = config, decoder
        self.rel_bias = nn.Embedding(config.rel_buckets, config.n_head)  # HF keeps it in block 0
        self.blocks = nn.ModuleList(T5Block(config, cross=decoder) for _ in range(n_layer))
        self.norm_f = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def position_bias(self, T: int, S: int, start: int, device: torch.device) -> torch.Tensor:
        """(1, H, T, S): the learned bias for queries at start..start+T-1 and keys at 0..S-1."""
        query = torch.arange(start, start + T, device=device)[:, None]
        key = torch.arange(S, device=device)[None, :]
        buckets = relative_position_bucket(key - query, not self.decoder, self.config.rel_buckets,
                                           self.config.rel_max_distance)  # (T, S)
        return self.rel_bias(buckets).permute(2, 0, 1)[None]  # (1, H, T, S)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, cache: "EncDecCache | None" = None,
                enc: torch.Tensor | None = None, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) embedded tokens -> (B, T, C). key_mask (B, S) is 1 on real keys (encoder padding)."""
        B, T, _ = x.shape
        start = cache.self_kv.pos if cache is not None else 0
        S = start + T
        bias = self.position_bias(T, S, start, x.device)  # (1, H, T, S), shared by every layer
        allowed = torch.ones(T, S, dtype=torch.bool, device=x.device)
        if self.decoder:
            allowed = allowed.tril(start)  # (T, S): causal, queries after the cached keys
        allowed = allowed[None, None]  # (1, 1, T, S)
        if key_mask is not None:
            allowed = allowed & key_mask.bool()[:, None, None, :]  # (B, 1, T, S)
        bias = bias.masked_fill(~allowed, float("-inf"))
        cross_bias = None
        if self.decoder:
            keys = enc_mask.bool() if enc_mask is not None else torch.ones(enc.shape[:2], dtype=torch.bool,
                                                                            device=x.device)
            cross_bias = torch.zeros(keys.shape, dtype=x.dtype, device=x.device).masked_fill(~keys, float("-inf"))
            cross_bias = cross_bias[:, None, None, :]  # (B, 1, 1, S_enc): no positions across the two stacks
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            cross_kv = None
            if self.decoder:
                cross_kv = cache.cross_kv(i, block.cross_attn, enc) if cache is not None else (
                    block.cross_attn.split(enc, block.cross_attn.k_proj),
                    block.cross_attn.split(enc, block.cross_attn.v_proj))
            x = block(x, bias, cache.self_kv if cache is not None else None, i, cross_kv, cross_bias)
        if cache is not None:
            cache.self_kv.advance(T)
        return self.drop(self.norm_f(x))


class EncDecCache:
    """The decoder's self-attention keys/values (a `KVCache`) and each layer's cross-attention keys/values,
    computed from the encoder output on the first step and reused after (they never change)."""

    def __init__(self, self_kv: KVCache):
        self.self_kv = self_kv
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def cross_kv(self, layer: int, attn: T5Attention, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer not in self.cross:
            self.cross[layer] = (attn.split(enc, attn.k_proj), attn.split(enc, attn.v_proj))  # (B, H, S, D)
        return self.cross[layer]


class T5(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)  # shared by encoder, decoder (and head)
        self.encoder = T5Stack(config, config.n_layer, decoder=False)
        self.decoder = T5Stack(config, config.n_decoder_layer, decoder=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Mesh TensorFlow's init, as HF's T5: std 1/sqrt(fan-in), and q also divided by sqrt(head_dim),
        which stands in for the missing 1/sqrt(D) in attention."""
        f, C, D = self.config.init_factor, self.config.n_embd, self.config.head_dim
        if isinstance(module, nn.Embedding):  # token embeddings std 1 (their head scales by C**-0.5); buckets
            nn.init.normal_(module.weight, std=f * 1.0 if module is self.tok_emb else f * C ** -0.5)
        elif isinstance(module, T5Attention):
            nn.init.normal_(module.q_proj.weight, std=f * (C * D) ** -0.5)
            nn.init.normal_(module.k_proj.weight, std=f * C ** -0.5)
            nn.init.normal_(module.v_proj.weight, std=f * C ** -0.5)
            nn.init.normal_(module.o_proj.weight, std=f * (module.n_head * D) ** -0.5)
        elif isinstance(module, T5MLP):
            for proj in (module.gate_proj, module.up_proj):
                if proj is not None:
                    nn.init.normal_(proj.weight, std=f * C ** -0.5)
            nn.init.normal_(module.down_proj.weight, std=f * self.config.intermediate_size ** -0.5)
        elif module is self and not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=f * 1.0)

    def set_attention(self, impl: str) -> None:
        """Switch every attention layer between "sdpa" and "explicit"."""
        for m in self.modules():
            if isinstance(m, T5Attention):
                m.impl = impl

    def encode(self, input_ids: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output (B, S, C) for input ids (B, S); attn_mask (B, S) is 1 on tokens, 0 on padding."""
        return self.encoder(self.tok_emb(input_ids), key_mask=attn_mask)

    def decode(self, decoder_input_ids: torch.Tensor, enc: torch.Tensor, attn_mask: torch.Tensor | None = None,
               cache: EncDecCache | None = None) -> torch.Tensor:
        """Decoder logits (B, T, vocab) given the encoder output; with a cache, continue after its positions."""
        x = self.decoder(self.tok_emb(decoder_input_ids), cache=cache, enc=enc, enc_mask=attn_mask)
        if self.config.scale_logits:
            x = x * self.config.n_embd ** -0.5
        return self.lm_head(x)

    def forward(self, input_ids: torch.Tensor, decoder_input_ids: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(decoder_input_ids, self.encode(input_ids, attn_mask), attn_mask)

    def new_cache(self, batch_size: int, max_len: int) -> EncDecCache:
        p = self.tok_emb.weight
        c = self.config
        return EncDecCache(KVCache(c.n_decoder_layer, batch_size, c.n_head, max_len, c.head_dim, p.dtype, p.device))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, attn_mask: torch.Tensor | None = None,
                 eos_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding -> (B, n) new ids (no start token); rows that ended are padded with pad_id.

        With use_cache, each step feeds one token and reuses the cached keys/values; without, each step
        reruns the decoder over the whole prefix (the reference the cache is tested against).
        """
        c = self.config
        eos_id = c.eos_id if eos_id is None else eos_id
        B = input_ids.shape[0]
        enc = self.encode(input_ids, attn_mask)
        cache = self.new_cache(B, max_new_tokens + 1) if use_cache else None
        out = torch.full((B, 1), c.decoder_start_id, dtype=torch.long, device=input_ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            step = out[:, -1:] if use_cache else out
            logits = self.decode(step, enc, attn_mask, cache)[:, -1]  # (B, vocab)
            nxt = logits.argmax(-1).masked_fill(done, c.pad_id)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if done.all():
                break
        return out[:, 1:]
