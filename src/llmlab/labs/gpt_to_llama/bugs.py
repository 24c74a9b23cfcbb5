"""Lab: gpt-to-llama, planted bugs: learner-style correct answers with one typical mistake each, and the words
the checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

LLAMA = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, positions, theta=10000.0):
    D = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)
    angles = positions[:, None].float() * inv_freq  # (T, D/2)
    angles = torch.cat([angles, angles], -1)  # (T, D)
    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * angles.cos() + rotated * angles.sin()


class LlamaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.theta = config.rope_theta
        C, D = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(C, self.n_head * D, bias=False)
        self.k_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.v_proj = nn.Linear(C, self.n_kv_head * D, bias=False)
        self.o_proj = nn.Linear(self.n_head * D, C, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        positions = torch.arange(T)
        q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)
        n_rep = self.n_head // self.n_kv_head
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class SwiGLUMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = LlamaAttention(config)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLUMLP(config)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx):
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm_f(x))
'''

RMS = "return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight"
SHARE = "k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)"
ROTATE = "q, k = rope(q, positions, self.theta), rope(k, positions, self.theta)"
TIE = "        if config.tie_embeddings:\n            self.lm_head.weight = self.tok_emb.weight"

BUGS = [
    Bug("rms-centred", "RMSNorm", planted(LLAMA, RMS, "x = x - x.mean(-1, keepdim=True)\n        " + RMS),
        "RMSNorm subtracts the mean"),
    Bug("rms-eps-outside", "RMSNorm", planted(LLAMA, "torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)",
                                              "1 / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps)"),
        "eps belongs inside the square root"),
    Bug("rms-bias", "RMSNorm", planted(LLAMA, "self.weight = nn.Parameter(torch.ones(dim))\n",
                                       "self.weight = nn.Parameter(torch.ones(dim))\n"
                                       "        self.bias = nn.Parameter(torch.zeros(dim))\n"), "RMSNorm has no bias"),
    Bug("rope-pairs", "rope", planted(planted(
        LLAMA, "torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)",
        "torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)"),
        "torch.cat([angles, angles], -1)", "angles.repeat_interleave(2, -1)"), "with i + D/2"),
    Bug("rope-wrong-way", "rope", planted(LLAMA, "torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)",
                                          "torch.cat([x[..., D // 2:], -x[..., :D // 2]], -1)"), "the wrong way"),
    Bug("rope-ignores-positions", "rope", planted(LLAMA, "angles = positions[:, None].float() * inv_freq",
                                                  "angles = torch.arange(x.shape[-2])[:, None].float() * inv_freq"),
        "the positions are not used"),
    Bug("attn-tiled-heads", "LlamaAttention", planted(LLAMA, SHARE, "k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, "
                                                      "n_rep, 1, 1)"), "CONSECUTIVE query heads"),
    Bug("attn-no-rope", "LlamaAttention", planted(LLAMA, ROTATE, "pass"), "no RoPE"),
    Bug("attn-rope-on-v", "LlamaAttention", planted(LLAMA, ROTATE, ROTATE + "\n        v = rope(v, positions, "
                                                    "self.theta)"), "not v"),
    Bug("attn-default-theta", "LlamaAttention", planted(LLAMA, ROTATE, "q, k = rope(q, positions), rope(k, positions)"),
        "config.rope_theta"),
    Bug("attn-biases", "LlamaAttention", planted(LLAMA, "self.q_proj = nn.Linear(C, self.n_head * D, bias=False)",
                                                 "self.q_proj = nn.Linear(C, self.n_head * D)"), "no biases"),
    Bug("attn-full-kv", "LlamaAttention", planted(planted(planted(
        LLAMA, "self.k_proj = nn.Linear(C, self.n_kv_head * D", "self.k_proj = nn.Linear(C, self.n_head * D"),
        "self.v_proj = nn.Linear(C, self.n_kv_head * D", "self.v_proj = nn.Linear(C, self.n_head * D"),
        "self.n_kv_head, self.head_dim).transpose", "self.n_head, self.head_dim).transpose"),
        "n_kv_head * head_dim outputs"),
    Bug("attn-not-causal", "LlamaAttention", planted(LLAMA, "is_causal=True", "is_causal=False"), "must be causal"),
    Bug("swiglu-silu-on-up", "SwiGLUMLP", planted(LLAMA, "F.silu(self.gate_proj(x)) * self.up_proj(x)",
                                                  "self.gate_proj(x) * F.silu(self.up_proj(x))"), "gate_proj's output"),
    Bug("swiglu-gelu", "SwiGLUMLP", planted(LLAMA, "F.silu(self.gate_proj(x))", "F.gelu(self.gate_proj(x))"),
        "not GELU"),
    Bug("swiglu-biases", "SwiGLUMLP", planted(LLAMA, "self.up_proj = nn.Linear(config.n_embd, config.intermediate_size"
                                              ", bias=False)", "self.up_proj = nn.Linear(config.n_embd, "
                                              "config.intermediate_size)"), "no biases"),
    Bug("block-post-norm", "LlamaBlock", planted(planted(
        LLAMA, "x = x + self.attn(self.attn_norm(x))", "x = self.attn_norm(x + self.attn(x))"),
        "return x + self.mlp(self.mlp_norm(x))", "return self.mlp_norm(x + self.mlp(x))"), "that is Post-LN"),
    Bug("block-parallel", "LlamaBlock", planted(
        LLAMA, "        x = x + self.attn(self.attn_norm(x))\n        return x + self.mlp(self.mlp_norm(x))",
        "        return x + self.attn(self.attn_norm(x)) + self.mlp(self.mlp_norm(x))"), "one after the other"),
    Bug("block-layernorm", "LlamaBlock", planted(LLAMA, "self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)",
                                                 "self.attn_norm = nn.LayerNorm(config.n_embd, config.norm_eps)"),
        "attn_norm.bias"),
    Bug("llama-pos-emb", "Llama", planted(LLAMA, "        self.blocks = nn.ModuleList(",
                                          "        self.pos_emb = nn.Embedding(config.seq_len, config.n_embd)\n"
                                          "        self.blocks = nn.ModuleList("), "no position table"),
    Bug("llama-no-final-norm", "Llama", planted(LLAMA, "return self.lm_head(self.norm_f(x))", "return self.lm_head(x)"),
        "the final norm is missing"),
    Bug("llama-untied", "Llama", planted(LLAMA, TIE + "\n", ""), "tie it"),
    Bug("llama-always-tied", "Llama", planted(LLAMA, TIE, "        self.lm_head.weight = self.tok_emb.weight"),
        "tie only when it is True"),
    Bug("llama-one-block", "Llama", planted(LLAMA, "nn.ModuleList(LlamaBlock(config) for _ in range(config.n_layer))",
                                            "nn.ModuleList([LlamaBlock(config)] * config.n_layer)"),
        "every block is the same module"),
]

ALTERNATIVES = [  # float32 inside RMSNorm, RoPE with complex numbers and a cached table, attention by hand
    planted(planted(planted(
        LLAMA, RMS, "x32 = x.float()\n        return self.weight * (x32 / torch.sqrt(x32.pow(2).mean(-1, "
        "keepdim=True) + self.eps)).to(x.dtype)"),
        '''    angles = torch.cat([angles, angles], -1)  # (T, D)
    rotated = torch.cat([-x[..., D // 2:], x[..., :D // 2]], -1)
    return x * angles.cos() + rotated * angles.sin()''',
        '''    z = torch.complex(x[..., :D // 2], x[..., D // 2:]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], -1)'''),
        "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
        "        scores = q @ k.transpose(-2, -1) / self.head_dim ** 0.5\n"
        "        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))\n"
        "        y = scores.softmax(-1) @ v"),
    planted(planted(LLAMA, "        self.o_proj = nn.Linear(self.n_head * D, C, bias=False)\n",
                    "        self.o_proj = nn.Linear(self.n_head * D, C, bias=False)\n"
                    "        self.register_buffer('positions', torch.arange(config.seq_len), persistent=False)\n"),
            "positions = torch.arange(T)", "positions = self.positions[:T]"),
]
