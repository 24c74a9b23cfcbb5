"""A BERT-style encoder: bidirectional attention, Post-LN blocks, an MLM head, pooling and a class head.

Devlin et al. 2018 (BERT). What differs from the decoder in `gpt.py`:
- every token sees every other (no causal mask); padding keys are masked with `attn_mask`;
- token + learned position + token-type (segment) embeddings, then a LayerNorm;
- Post-LN blocks as in the original Transformer: x = norm(x + attn(x)), x = norm(x + mlp(x));
- the exact (erf) GELU in the MLP;
- heads by `config.head`: "mlm" (transform + LayerNorm + decoder tied to the embeddings + bias) gives
  (B, T, vocab) logits, "none" gives the hidden states (B, T, C), "classify" gives (B, n_classes) from the
  pooler (dense + tanh over [CLS]) as BertForSequenceClassification.
`embed` turns texts into sentence vectors (mean or [CLS] pooling, L2-normalised), as sentence-transformers
does (Reimers & Gurevych 2019). Attention, LayerNorm and the attention switch come from `layers.py`; module
names follow BERT's so `hf_encoders.py` maps weights key by key. Masking for MLM is `llmlab.data.masking`.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig
from llmlab.models.layers import Attention, LayerNorm

ACTIVATIONS = {"gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}
HEADS = ("mlm", "none", "classify")
POOLINGS = ("mean", "cls")


@dataclass
class BertConfig:
    arch: str = "bert"  # what `llmlab.load` builds from a saved config
    vocab_size: int = 30522
    seq_len: int = 512  # learned positions: the longest input
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    intermediate_size: int | None = None  # None: 4 * n_embd
    type_vocab_size: int = 2  # segment A / segment B (sentence pairs)
    act: str = "gelu"  # BERT's exact erf GELU; "gelu_new" is the tanh approximation
    norm_eps: float = 1e-12  # BERT's; far below the decoder's 1e-5, and it matters for equal logits
    dropout: float = 0.0
    head: str = "mlm"  # mlm, none (hidden states) or classify
    tie_embeddings: bool = True  # the MLM decoder shares the token embedding matrix
    pooler: bool = False  # dense + tanh over [CLS] (BertModel, and what the class head reads)
    n_classes: int = 0
    pad_id: int = 0
    embed_len: int | None = None  # sentence-transformers' max_seq_length: `embed` cuts texts there
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)  # converter notes, ignored by the model

    def __post_init__(self) -> None:
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if self.n_embd % self.n_head:
            raise UserError(f"model config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        for name, value, allowed in (("act", self.act, tuple(ACTIVATIONS)), ("head", self.head, HEADS)):
            if value not in allowed:
                raise UserError(f"model config: {name}={value!r} is unknown; choose one of {', '.join(allowed)}")
        if self.head == "classify" and (self.n_classes < 2 or not self.pooler):
            raise UserError(f"model config: a classify head needs n_classes >= 2 and the pooler "
                            f"(got n_classes={self.n_classes}, pooler={self.pooler})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def layer_config(self) -> ModelConfig:
        """The decoder's config for the parts BERT shares with it (attention with biases)."""
        return ModelConfig(vocab_size=self.vocab_size, seq_len=self.seq_len, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd, intermediate_size=self.intermediate_size,
                           bias=True, dropout=self.dropout, norm_eps=self.norm_eps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> "BertConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


class BertMLP(nn.Module):
    """up, activation, down (BERT's "intermediate" and "output" dense layers)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.act = ACTIVATIONS[config.act]
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


class PostLNBlock(nn.Module):
    """x = norm(x + attn(x)); x = norm(x + mlp(x)): the norm after each residual sum, as BERT has it."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attn = Attention(config.layer_config())
        self.attn_norm = LayerNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = BertMLP(config)
        self.mlp_norm = LayerNorm(config.n_embd, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, None, mask, None, 0)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


class Bert(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.tok_emb = nn.Embedding(config.vocab_size, C)
        self.pos_emb = nn.Embedding(config.seq_len, C)
        self.type_emb = nn.Embedding(config.type_vocab_size, C)
        self.emb_norm = LayerNorm(C, eps=config.norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(PostLNBlock(config) for _ in range(config.n_layer))
        self.pooler = nn.Linear(C, C) if config.pooler else None
        if config.head == "mlm":
            self.mlm_dense = nn.Linear(C, C)
            self.mlm_norm = LayerNorm(C, eps=config.norm_eps)
            self.lm_head = nn.Linear(C, config.vocab_size)  # the bias is BERT's `cls.predictions.bias`
            if config.tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight
        elif config.head == "classify":
            self.classifier = nn.Linear(C, config.n_classes)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def set_attention(self, impl: str) -> None:
        """Switch every layer between "sdpa" (fused) and "explicit" (readable, can keep its weights)."""
        for block in self.blocks:
            block.attn.impl = impl

    def encode(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, T, C) for ids (B, T); attn_mask (B, T) is 1 on tokens, 0 on padding."""
        B, T = idx.shape
        if T > self.config.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's {self.config.seq_len} positions")
        positions = torch.arange(T, device=idx.device)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(idx)
        x = self.tok_emb(idx) + self.pos_emb(positions) + self.type_emb(types)  # (B, T, C)
        x = self.drop(self.emb_norm(x))
        # always a mask: the shared Attention reads None as causal
        keys = attn_mask.bool() if attn_mask is not None else torch.ones_like(idx, dtype=torch.bool)
        mask = keys[:, None, None, :]  # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def pool(self, hidden: torch.Tensor, attn_mask: torch.Tensor | None = None, pooling: str = "mean"
             ) -> torch.Tensor:
        """(B, T, C) -> (B, C): the mean over real tokens, or the [CLS] (first) position."""
        if pooling == "cls":
            return hidden[:, 0]
        if pooling != "mean":
            raise UserError(f"pooling {pooling!r} is unknown; choose one of {', '.join(POOLINGS)}")
        if attn_mask is None:
            return hidden.mean(1)
        m = attn_mask[..., None].to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def forward(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, logits_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """MLM logits (B, T, vocab) (or (N, vocab) for the N True entries of logits_mask), class logits
        (B, n_classes), or hidden states (B, T, C), by `config.head`."""
        x = self.encode(idx, attn_mask, token_type_ids)
        if self.config.head == "classify":
            pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C): [CLS], as BERT's next-sentence head reads it
            return self.classifier(self.drop(pooled))
        if self.config.head == "none":
            return x
        if logits_mask is not None:
            x = x[logits_mask]  # (N, C): MLM needs only the ~15% masked positions
        x = self.mlm_norm(ACTIVATIONS[self.config.act](self.mlm_dense(x)))
        return self.lm_head(x)


@torch.no_grad()
def embed(model: Bert, tokenizer: Any, texts: list[str], pooling: str = "mean", normalize: bool = True,
          batch_size: int = 32, max_len: int | None = None) -> torch.Tensor:
    """Sentence vectors (N, C): tokenise with [CLS]/[SEP], cut to max_len tokens (default: the model's
    `embed_len`, else its positions), encode, pool over real tokens, and L2-normalise."""
    if isinstance(texts, str):
        texts = [texts]
    max_len = max_len or model.config.embed_len or model.config.seq_len
    if max_len < 3:
        raise UserError(f"max_len={max_len}: need room for [CLS], [SEP] and at least one token")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            ids = [tokenizer.add_special(tokenizer.encode(t, add_special_tokens=False)[:max_len - 2])
                   for t in texts[i:i + batch_size]]
            idx, mask = tokenizer.pad(ids)
            idx, mask = idx.to(device), mask.to(device)
            vectors = model.pool(model.encode(idx, mask), mask, pooling)  # (B, C)
            out.append((F.normalize(vectors, p=2, dim=1) if normalize else vectors).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.config.n_embd)
