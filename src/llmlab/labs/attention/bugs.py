"""Lab: attention, planted bugs. Each is a learner-style correct answer with one typical mistake planted by a
text replacement, and the words the checks must answer it with. ALTERNATIVES are other correct answers
(loops, another mask value, float64 inside) that the checks must accept.
"""

from llmlab.labs.registry import Bug, planted

ATTENTION = '''
import math
import torch


def attention(q, k, v, causal=True):
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
'''

CROSS = '''
import math
import torch


def cross_attention(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    return torch.softmax(scores, dim=-1) @ v
'''

MHA = '''
import math
import torch
import torch.nn as nn


class MultiHeadAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(n_embd, n_embd)
        self.k_proj = nn.Linear(n_embd, n_embd)
        self.v_proj = nn.Linear(n_embd, n_embd)
        self.o_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x, causal=True):
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, H, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, H, D).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)
        if causal:
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))
'''

BUGS = [
    Bug("no-scale", "attention", planted(ATTENTION, " / math.sqrt(q.shape[-1])", ""),
        "sqrt(head_dim) times too large"),
    Bug("divide-by-head-dim", "attention", planted(ATTENTION, "math.sqrt(q.shape[-1])", "q.shape[-1]"),
        "too small: divide by sqrt(head_dim), not by head_dim"),
    Bug("softmax-over-queries", "attention", planted(ATTENTION, "dim=-1", "dim=-2"), "softmax over the wrong axis"),
    Bug("mask-ignored", "attention", planted(ATTENTION, "    if causal:\n", "    if False:\n"),
        "equal when causal=False, different when causal=True: look at the mask"),
    Bug("mask-keeps-future", "attention", planted(ATTENTION, ".tril()", ".triu()"), "keeps the future"),
    Bug("mask-hides-diagonal", "attention", planted(ATTENTION, ".tril()", ".tril(-1)"), "a query must see itself"),
    Bug("mask-after-softmax", "attention", planted(
        ATTENTION, '        scores = scores.masked_fill(~mask, float("-inf"))\n',
        "        return (torch.softmax(scores, dim=-1) * mask) @ v\n"), "you mask after the softmax"),
    Bug("always-causal", "attention", planted(ATTENTION, "    if causal:\n", "    if True:\n"),
        "you apply the causal mask either way"),
    Bug("naive-softmax", "attention", planted(
        ATTENTION, "torch.softmax(scores, dim=-1)", "(scores.exp() / scores.exp().sum(-1, keepdim=True))"),
        "exp overflows"),
    Bug("detached", "attention", planted(ATTENTION, "@ v\n", "@ v.detach()\n"), "no gradient reaches v"),
    Bug("returns-weights", "attention", planted(ATTENTION, " @ v\n", "\n"), "the attention weights"),
    Bug("scale-in-place", "attention", planted(
        ATTENTION, "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])",
        "q /= math.sqrt(q.shape[-1])\n    scores = q @ k.transpose(-2, -1)"), "changed its input q in place"),
    Bug("hard-coded-length", "attention", planted(ATTENTION, "T = q.shape[-2]", "T = 6"), "(at attention.py:"),
    Bug("cross-causal", "cross_attention", planted(
        CROSS, "    return torch.softmax",
        "    scores = scores.masked_fill(~torch.ones(scores.shape[-2:], dtype=torch.bool).tril(), -1e9)\n"
        "    return torch.softmax"), "there is no causal mask here"),
    Bug("cross-no-scale", "cross_attention", planted(CROSS, " / math.sqrt(q.shape[-1])", ""),
        "sqrt(head_dim) times too large"),
    Bug("mha-merge-without-transpose", "MultiHeadAttention", planted(MHA, "y.transpose(1, 2).reshape", "y.reshape"),
        "merged in the wrong order"),
    Bug("mha-split-without-transpose", "MultiHeadAttention",
        planted(MHA, ").view(B, T, H, D).transpose(1, 2)", ").reshape(B, H, T, D)"), "your heads mix positions"),
    Bug("mha-scale-by-width", "MultiHeadAttention", planted(MHA, "math.sqrt(D)", "math.sqrt(C)"), "sqrt(n_embd)"),
    Bug("mha-one-head", "MultiHeadAttention", planted(MHA, "H, D = self.n_head, C // self.n_head", "H, D = 1, C"),
        "one head over all C channels"),
    Bug("mha-no-output-projection", "MultiHeadAttention", planted(MHA, "self.o_proj(y.transpose", "(y.transpose"),
        "o_proj is not applied"),
    Bug("mha-frozen-projection", "MultiHeadAttention", planted(
        MHA, "        self.q_proj = nn.Linear(n_embd, n_embd)\n",
        "        self.q_proj = nn.Linear(n_embd, n_embd)\n        self.q_proj.requires_grad_(False)\n"),
        "frozen"),
    Bug("mha-mask-ignored", "MultiHeadAttention", planted(MHA, "        if causal:\n", "        if False:\n"),
        "equal when causal=False, different when causal=True"),
]

ALTERNATIVES = [  # correct in other ways: the checks must pass them
    planted(ATTENTION, 'float("-inf")', "-1e9"),
    planted(planted(ATTENTION, "    T = q.shape[-2]\n",
                    "    T = q.shape[-2]\n    q, k, v = q.double(), k.double(), v.double()  # float64 inside\n"),
            "return torch.softmax(scores, dim=-1) @ v", "return (torch.softmax(scores, dim=-1) @ v).float()"),
    '''
import math
import torch


def attention(q, k, v, causal=True):
    B, H, T, D = q.shape
    out = torch.zeros_like(v)
    for i in range(T):  # one query at a time, keys 0..i only when causal
        last = i + 1 if causal else T
        scores = (k[:, :, :last] @ q[:, :, i, :, None])[..., 0] / math.sqrt(D)  # (B, H, last)
        out[:, :, i] = (torch.softmax(scores, dim=-1)[..., None] * v[:, :, :last]).sum(2)
    return out
''',
]
