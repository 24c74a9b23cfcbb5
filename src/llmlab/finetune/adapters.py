"""Bottleneck adapters (Houlsby et al. 2019): a small trainable MLP after attention and after the MLP.

    y = f(x);  y + up(gelu(down(y)))        down: (C -> m), up: (m -> C), m << C

`apply_adapters` wraps the output projections (`o_proj`, `down_proj` by default),
so the adapter sees each sub-layer's output before it joins the residual
stream, as in the paper. `up` starts at zero, so a fresh adapter is the
identity. Everything else is frozen; the paper also trains the layer norms,
which `train_norms=True` turns on.
"""

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.finetune.lora import LINEAR_TYPES
from llmlab.models.swap import find_modules, freeze, replace_module
from llmlab.quantize import QuantizedLinear


class Adapter(nn.Module):
    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(F.gelu(self.down(y)))  # (B, T, C)


class AdaptedLinear(nn.Module):
    """A frozen layer followed by an adapter on its output."""

    def __init__(self, base: nn.Module, bottleneck: int):
        super().__init__()
        self.base = base
        self.adapter = Adapter(base.out_features, bottleneck)
        self.adapter.to(base.device if isinstance(base, QuantizedLinear) else base.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def apply_adapters(model: nn.Module, bottleneck: int = 16, targets: Iterable[str] = ("o_proj", "down_proj"),
                   train_norms: bool = False) -> nn.Module:
    """Freeze `model` and put an adapter after each targeted layer, in place. Returns the model."""
    if bottleneck < 1:
        raise UserError(f"bottleneck must be at least 1 for adapters (got {bottleneck})")
    targets = list(targets)
    freeze(model)
    names = find_modules(model, LINEAR_TYPES, targets)
    if not names:
        raise UserError(f"targets {' '.join(targets)}: no linear layer matches for adapters")
    for name in names:
        replace_module(model, name, AdaptedLinear(model.get_submodule(name), bottleneck))
    if train_norms:
        for name, p in model.named_parameters():
            if "norm" in name:
                p.requires_grad_(True)
    return model
