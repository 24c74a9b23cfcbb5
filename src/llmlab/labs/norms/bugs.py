"""Lab: norms, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

NORMS = '''
import torch
import torch.nn as nn


class LayerNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + self.eps) * self.weight
'''

ACTIVATIONS = '''
import math
import torch
import torch.nn as nn


def gelu(x):
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def silu(x):
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    def __init__(self, n_embd, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, hidden, bias=False)
        self.up_proj = nn.Linear(n_embd, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(silu(self.gate_proj(x)) * self.up_proj(x))


def pre_norm(x, norm, f):
    return x + f(norm(x))


def post_norm(x, norm, f):
    return norm(x + f(x))
'''

RMS_INIT = "self.weight = nn.Parameter(torch.ones(dim))\n\n    def forward(self, x):\n        return x /"
RMS_FORWARD = "return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + self.eps) * self.weight"

BUGS = [
    Bug("rmsnorm-subtracts-mean", "RMSNorm", planted(
        NORMS, RMS_FORWARD, "x = x - x.mean(-1, keepdim=True)\n        " + RMS_FORWARD), "RMSNorm subtracts the mean"),
    Bug("rmsnorm-eps-outside", "RMSNorm", planted(
        NORMS, "torch.sqrt((x ** 2).mean(-1, keepdim=True) + self.eps)",
        "(torch.sqrt((x ** 2).mean(-1, keepdim=True)) + self.eps)"), "eps belongs inside the square root"),
    Bug("rmsnorm-sum", "RMSNorm", planted(NORMS, "(x ** 2).mean(-1, keepdim=True)", "(x ** 2).sum(-1, keepdim=True)"),
        "mean of the squares, not their sum"),
    Bug("rmsnorm-no-weight", "RMSNorm", planted(NORMS, " + self.eps) * self.weight", " + self.eps)"),
        "the weight is not applied"),
    Bug("rmsnorm-weight-not-a-parameter", "RMSNorm", planted(NORMS, RMS_INIT, "self.weight = torch.ones(dim)\n"
                                                             "\n    def forward(self, x):\n        return x /"),
        "no parameter weight"),
    Bug("rmsnorm-hard-coded-eps", "RMSNorm", planted(NORMS, ".mean(-1, keepdim=True) + self.eps)",
                                                     ".mean(-1, keepdim=True) + 1e-6)"), "ignores its eps argument"),
    Bug("rmsnorm-with-bias", "RMSNorm", planted(
        NORMS, RMS_INIT, "self.bias = nn.Parameter(torch.zeros(dim))\n        " + RMS_INIT), "RMSNorm has no bias"),
    Bug("layernorm-unbiased-variance", "LayerNorm", planted(
        NORMS, "((x - mean) ** 2).mean(-1, keepdim=True)", "x.var(-1, keepdim=True)"), "use the biased variance"),
    Bug("layernorm-no-centring", "LayerNorm", planted(NORMS, "return (x - mean) / torch", "return x / torch"),
        "subtract the mean before dividing"),
    Bug("layernorm-no-bias", "LayerNorm", planted(NORMS, "* self.weight + self.bias", "* self.weight"),
        "the bias is not added"),
    Bug("layernorm-over-everything", "LayerNorm", planted(planted(
        NORMS, "mean = x.mean(-1, keepdim=True)", "mean = x.mean()"), "((x - mean) ** 2).mean(-1, keepdim=True)",
        "((x - mean) ** 2).mean()"), "normalise over the last dimension"),
    Bug("gelu-is-silu", "gelu", planted(ACTIVATIONS, "x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))", "x * x.sigmoid()"),
        "that is SiLU"),
    Bug("gelu-no-sqrt2", "gelu", planted(ACTIVATIONS, "torch.erf(x / math.sqrt(2))", "torch.erf(x)"),
        "divide x by sqrt(2)"),
    Bug("silu-no-x", "silu", planted(ACTIVATIONS, "return x * torch.sigmoid(x)", "return torch.sigmoid(x)"),
        "multiply by x"),
    Bug("swiglu-silu-on-up", "SwiGLU", planted(
        ACTIVATIONS, "silu(self.gate_proj(x)) * self.up_proj(x)", "self.gate_proj(x) * silu(self.up_proj(x))"),
        "silu goes on gate_proj's output"),
    Bug("swiglu-no-gate", "SwiGLU", planted(ACTIVATIONS, "silu(self.gate_proj(x)) * self.up_proj(x)",
                                            "silu(self.gate_proj(x))"), "the gate is missing"),
    Bug("swiglu-biases", "SwiGLU", planted(ACTIVATIONS, "nn.Linear(n_embd, hidden, bias=False)\n        self.up",
                                           "nn.Linear(n_embd, hidden)\n        self.up"), "bias=False"),
    Bug("pre-norm-is-post", "pre_norm", planted(ACTIVATIONS, "return x + f(norm(x))", "return norm(x + f(x))"),
        "that is Post-LN"),
    Bug("post-norm-no-residual", "post_norm", planted(ACTIVATIONS, "return norm(x + f(x))", "return norm(f(x))"),
        "the residual is missing"),
]

ALTERNATIVES = [  # other correct answers: rsqrt, torch's own var, float64 inside, the tanh GELU
    planted(planted(NORMS, "var = ((x - mean) ** 2).mean(-1, keepdim=True)", "var = x.var(-1, keepdim=True, "
                    "unbiased=False)"), RMS_FORWARD,
            "x64 = x.double()\n        return (x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + self.eps)).float()"
            " * self.weight"),
    planted(ACTIVATIONS, "x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))",
            "0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))"),
]
