"""The interfaces the issue fixes, checked through the CLI against implementations written independently of
llmlab's (torch's fused attention, an HF-style RMSNorm, a PEFT-style LoRA): each must pass its item's checks."""

import pytest

from llmlab.cli import main

INDEPENDENT = {
    ("attention", "attention"): '''
import torch.nn.functional as F


def attention(q, k, v, causal: bool = True):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
''',
    ("norms", "RMSNorm"): '''
import torch


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(x.dtype)
''',
    ("lora", "LoRALinear"): '''
import math

import torch


class LoRALinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        self.A = torch.nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(rank))
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.A.T @ self.B.T)

    def merge(self):
        merged = torch.nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        merged.weight.data = self.base.weight.data + self.scaling * self.B.data @ self.A.data
        if self.base.bias is not None:
            merged.bias.data = self.base.bias.data.clone()
        return merged
''',
}


@pytest.mark.parametrize("lab, item", list(INDEPENDENT), ids=[f"{lab}-{item}" for lab, item in INDEPENDENT])
def test_an_independent_implementation_passes_through_the_cli(lab, item, tmp_path, capsys):
    assert main(["labs", "start", lab, "--dir", str(tmp_path)]) == 0
    (tmp_path / f"{lab}.py").write_text(INDEPENDENT[(lab, item)])
    assert main(["labs", "check", lab, "--dir", str(tmp_path), "--only", item]) == 0, capsys.readouterr().out
    assert "✗" not in capsys.readouterr().out
