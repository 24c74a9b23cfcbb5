"""Lab: LoRA, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers the checks must accept."""

from llmlab.labs.registry import Bug, planted

LORA = '''
import math
import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)

    @torch.no_grad()
    def merge(self):
        merged = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        merged.weight.copy_(self.base.weight + self.scale * self.B @ self.A)
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model, rank, alpha, targets=("q_proj", "v_proj")):
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.endswith(tuple(targets)):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name), leaf, LoRALinear(module, rank, alpha))
    return model
'''

BUGS = [
    Bug("scaled-by-alpha", "LoRALinear", planted(LORA, "self.scale = alpha / rank", "self.scale = alpha"),
        "scaled by alpha instead of alpha / rank"),
    Bug("no-scale", "LoRALinear", planted(LORA, "self.scale = alpha / rank", "self.scale = 1.0"), "not scaled"),
    Bug("random-B", "LoRALinear", planted(LORA, "torch.zeros(base.out_features, rank)",
                                          "torch.randn(base.out_features, rank)"), "B must start at zeros"),
    Bug("zero-A", "LoRALinear", planted(LORA, "        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))\n",
                                        "        nn.init.zeros_(self.A)\n"), "A starts at zeros too"),
    Bug("base-trains", "LoRALinear", planted(LORA, "        self.base.requires_grad_(False)\n", ""), "still trains"),
    Bug("A-transposed", "LoRALinear", planted(planted(
        LORA, "torch.empty(rank, base.in_features)", "torch.empty(base.in_features, rank)"),
        "x @ self.A.T @ self.B.T", "x @ self.A @ self.B.T"), "A should be (rank, in_features)"),
    Bug("A-plain-tensor", "LoRALinear", planted(
        LORA, "self.A = nn.Parameter(torch.empty(rank, base.in_features))",
        "self.A = torch.empty(rank, base.in_features, requires_grad=True)"), "A is not a registered parameter"),
    Bug("no-base", "LoRALinear", planted(LORA, "return self.base(x) + self.scale", "return self.scale"),
        "base(x) is missing"),
    Bug("merge-without-scale", "LoRALinear", planted(LORA, "self.base.weight + self.scale * self.B @ self.A",
                                                     "self.base.weight + self.B @ self.A"), "forgot the scale"),
    Bug("add-lora-does-not-freeze", "add_lora", planted(LORA, "    model.requires_grad_(False)\n", ""),
        "freeze the model first"),
    Bug("add-lora-wraps-everything", "add_lora", planted(LORA, " and name.endswith(tuple(targets))", ""),
        "expected blocks.0.attn.q_proj"),
]

ALTERNATIVES = [  # F.linear instead of matmuls, the merge by delta
    planted(LORA, "return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)",
            "return self.base(x) + nn.functional.linear(nn.functional.linear(x, self.A), self.B) * self.scale"),
]
