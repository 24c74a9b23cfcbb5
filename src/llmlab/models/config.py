"""`ModelConfig`: every decoder family is a choice of strings and sizes here.

GPT-2, Llama, Bloom, Mixtral, Qwen-MoE and OLMoE differ only in these fields
(positions, norm and its placement, QK-norm, MLP or mixture of experts, biases,
head counts); behaviour never depends on a model's name. Presets below cover a
~1M-parameter toy up to GPT-2 124M and a ~1B Llama, plus toy MoE and variant shapes.
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from llmlab.common.errors import UserError

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
NORM_NAMES = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
QK_NORMS = ("none", "head", "full")
MLP_NAMES = ("gelu", "swiglu")
ROUTER_SOFTMAX = ("after", "before")


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
    pos: str = "learned"  # learned table, sinusoidal (Vaswani), rope (Su), alibi (Press), none (NoPE)
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # Llama 3 style frequency scaling, as in HF's config
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"  # "post": x = norm(x + f(x)) as in the original Transformer, no final norm
    qk_norm: str = "none"  # RMSNorm on q and k before RoPE: "head" per head (Qwen3), "full" over all heads (OLMoE)
    emb_norm: bool = False  # a norm right after the token embedding (Bloom)
    mlp: str = "gelu"  # also each expert's shape when n_expert > 0
    bias: bool = True  # biases on every linear layer and norm (GPT-2); False for Llama
    qkv_bias: bool | None = None  # None: same as bias; True for Qwen2 (bias on q/k/v only)
    o_bias: bool | None = None  # bias on attention's output projection; None: same as bias (Llama attention_bias)
    tie_embeddings: bool = True
    # mixture of experts: n_expert > 0 replaces every block's MLP by a router and n_expert MLPs (see moe.py)
    n_expert: int = 0
    expert_top_k: int = 2  # experts each token goes to
    expert_size: int | None = None  # each expert's hidden width; None: intermediate_size
    router_softmax: str = "after"  # "after": softmax over the k best logits (Mixtral); "before": over all (Qwen)
    norm_topk_prob: bool = True  # "before" only: rescale the k kept probabilities to sum to 1 (OLMoE: False)
    shared_expert_size: int = 0  # hidden width of an always-on expert with a sigmoid gate (Qwen2-MoE); 0: none
    capacity_factor: float | None = None  # None: no token is ever dropped (as HF inference); else see moe.py
    aux_loss_coef: float = 0.01  # load-balancing loss weight, Switch Transformer's alpha
    z_loss_coef: float = 0.001  # router z-loss weight, ST-MoE's value
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
        if self.o_bias is None:
            self.o_bias = self.bias
        for name, value, allowed in (("pos", self.pos, POSITIONS), ("norm", self.norm, NORM_NAMES),
                                     ("mlp", self.mlp, MLP_NAMES), ("norm_placement", self.norm_placement,
                                                                    NORM_PLACEMENTS),
                                     ("qk_norm", self.qk_norm, QK_NORMS),
                                     ("router_softmax", self.router_softmax, ROUTER_SOFTMAX)):
            if value not in allowed:
                raise UserError(f"model config: {name}={value!r} is unknown; choose one of {', '.join(allowed)}")
        if self.n_head % self.n_kv_head:
            raise UserError(f"model config: n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.pos == "rope" and self.head_dim % 2:
            raise UserError(f"model config: RoPE needs an even head_dim, got {self.head_dim}")
        if self.pos == "sinusoidal" and self.n_embd % 2:
            raise UserError(f"model config: sinusoidal positions need an even n_embd, got {self.n_embd}")
        if self.n_expert < 0 or (self.n_expert and not 1 <= self.expert_top_k <= self.n_expert):
            raise UserError(f"model config: expert_top_k={self.expert_top_k} must be between 1 and "
                            f"n_expert={self.n_expert}")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise UserError(f"model config: capacity_factor={self.capacity_factor} must be positive (or None)")

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
MIXTRAL = dict(LLAMA, n_expert=8, expert_top_k=2, router_softmax="after")

PRESETS: dict[str, dict[str, Any]] = {
    # ~1M-parameter toys for tests and laptops
    "gpt2-tiny": dict(GPT2, vocab_size=4096, seq_len=256, n_layer=4, n_head=4, n_embd=128),
    "llama-tiny": dict(LLAMA, vocab_size=4096, seq_len=256, n_layer=4, n_head=4, n_kv_head=2, n_embd=128,
                       tie_embeddings=True),
    # the speedrun default: a few million parameters, trains in minutes on a laptop CPU
    "llama-small": dict(LLAMA, vocab_size=4096, seq_len=256, n_layer=6, n_head=6, n_kv_head=2, n_embd=192,
                        tie_embeddings=True),
    # llama-small's attention with 8 experts of a quarter of its MLP: active MLP width ~ half a dense one
    "moe-small": dict(MIXTRAL, vocab_size=4096, seq_len=256, n_layer=6, n_head=6, n_kv_head=2, n_embd=192,
                      expert_size=128, tie_embeddings=True),
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
