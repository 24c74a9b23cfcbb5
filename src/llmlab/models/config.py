"""`ModelConfig`: every decoder family is a choice of strings and sizes here.

GPT-2 and Llama differ only in these fields (positions, norm, MLP, biases,
head counts); behaviour never depends on a model's name. Presets below cover a
~1M-parameter toy up to GPT-2 124M and a ~1B Llama.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmlab.common.errors import UserError

POSITIONS = ("learned", "rope")
NORM_NAMES = ("layernorm", "rmsnorm")
MLP_NAMES = ("gelu", "swiglu")


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    seq_len: int = 1024  # longest context; learned positions and the RoPE table have this many rows
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention: None means n_head (plain multi-head)
    n_embd: int = 768
    head_dim: int | None = None  # None means n_embd // n_head; some models set it apart
    intermediate_size: int | None = None  # MLP hidden width; None: 4*n_embd (gelu) or ~8/3*n_embd (swiglu)
    pos: str = "learned"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # Llama 3 style frequency scaling, as in HF's config
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    bias: bool = True  # biases on every linear layer and norm (GPT-2); False for Llama
    qkv_bias: bool | None = None  # None: same as bias; True for Qwen2 (bias on q/k/v only)
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    extra: dict[str, Any] = field(default_factory=dict)  # converter notes, ignored by the model

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None:
            if self.n_embd % self.n_head:
                raise UserError(f"model config: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
            self.head_dim = self.n_embd // self.n_head
        if self.intermediate_size is None:
            if self.mlp == "swiglu":  # 2/3 of 4*n_embd keeps the parameter count of a GELU MLP
                self.intermediate_size = 64 * ((int(8 * self.n_embd / 3) + 63) // 64)
            else:
                self.intermediate_size = 4 * self.n_embd
        if self.qkv_bias is None:
            self.qkv_bias = self.bias
        for name, value, allowed in (("pos", self.pos, POSITIONS), ("norm", self.norm, NORM_NAMES),
                                     ("mlp", self.mlp, MLP_NAMES)):
            if value not in allowed:
                raise UserError(f"model config: {name}={value!r} is unknown; choose one of {', '.join(allowed)}")
        if self.n_head % self.n_kv_head:
            raise UserError(f"model config: n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.pos == "rope" and self.head_dim % 2:
            raise UserError(f"model config: RoPE needs an even head_dim, got {self.head_dim}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


GPT2 = dict(pos="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True, norm_eps=1e-5)
LLAMA = dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, norm_eps=1e-5)

PRESETS: dict[str, dict[str, Any]] = {
    # ~1M-parameter toys for tests and laptops
    "gpt2-tiny": dict(GPT2, vocab_size=4096, seq_len=256, n_layer=4, n_head=4, n_embd=128),
    "llama-tiny": dict(LLAMA, vocab_size=4096, seq_len=256, n_layer=4, n_head=4, n_kv_head=2, n_embd=128,
                       tie_embeddings=True),
    # the speedrun default: a few million parameters, trains in minutes on a laptop CPU
    "llama-small": dict(LLAMA, vocab_size=4096, seq_len=256, n_layer=6, n_head=6, n_kv_head=2, n_embd=192,
                        tie_embeddings=True),
    "llama-medium": dict(LLAMA, vocab_size=8192, seq_len=512, n_layer=8, n_head=8, n_kv_head=4, n_embd=512,
                         tie_embeddings=True),
    # real sizes
    "gpt2": dict(GPT2, vocab_size=50257, seq_len=1024, n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(GPT2, vocab_size=50257, seq_len=1024, n_layer=24, n_head=16, n_embd=1024),
    "smollm2-135m": dict(LLAMA, vocab_size=49152, seq_len=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576,
                         intermediate_size=1536, rope_theta=100000.0, tie_embeddings=True),
    "llama-1b": dict(LLAMA, vocab_size=128256, seq_len=8192, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048,
                     intermediate_size=8192, rope_theta=500000.0, tie_embeddings=True),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise UserError(f"preset {name!r}: unknown; choose one of {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
