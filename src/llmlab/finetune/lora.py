"""LoRA (Hu et al. 2021): a frozen linear layer plus a trainable low-rank update.

    y = W x + b + (alpha / r) * B (A dropout(x))     A: (r, in), B: (out, r)

`apply_lora` swaps each targeted `nn.Linear` for a `LoRALinear` that holds the
original layer as `.base`, freezes every other parameter, and leaves the rest
of the model untouched. A starts Kaiming-uniform and B at zero, as in PEFT, so
a fresh adapter changes nothing. `merge_lora` folds B A into W (no extra cost
at inference) and `unmerge_lora` takes it out again; both are idempotent.
`unwrap_lora` returns plain `nn.Linear`s so the model saves as a normal checkpoint.
QLoRA (Dettmers et al. 2023) is the same adapter on a base stored as NF4 (`apply_qlora`).

This file knows llmlab's module names only; PEFT's file layout and HF's names
live in `peft_format.py`.
"""

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models.swap import find_modules, freeze, replace_module
from llmlab.quantize import QuantizedLinear, quantize_model_nf4

DEFAULT_TARGETS = ("q_proj", "v_proj")  # the paper's choice: queries and values
LINEAR_TYPES = (nn.Linear, QuantizedLinear)  # what LoRA and adapters can wrap


class LoRALinear(nn.Module):
    """A linear layer (`nn.Linear` or a `QuantizedLinear`) with a low-rank trainable update on top."""

    def __init__(self, base: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise UserError(f"rank must be at least 1 for LoRA (got {rank})")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        quantized = isinstance(base, QuantizedLinear)  # compact bytes, computing in its original dtype
        device = base.device if quantized else base.weight.device
        dtype = base.compute_dtype if quantized else base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # nn.Linear's own init, as PEFT does
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update the adapter adds to W: (alpha / r) * B @ A, shape (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (B, T, out)
        if self.merged:
            return y
        h = F.linear(self.dropout(x), self.lora_A)  # (B, T, r)
        return y + F.linear(h, self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._require_plain_base("merge")
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def _require_plain_base(self, what: str) -> None:
        if not isinstance(self.base, nn.Linear):
            raise UserError(f"cannot {what} LoRA into a quantised {type(self.base).__name__} in place; "
                            "use unwrap_lora(model) to get a dequantised merged model")

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               targets: Iterable[str] = DEFAULT_TARGETS) -> nn.Module:
    """Freeze `model` and wrap each targeted linear layer in a `LoRALinear`, in place. Returns the model."""
    targets = list(targets)
    freeze(model)
    # the head is left alone: it is tied to the embedding in most small models
    names = find_modules(model, LINEAR_TYPES, targets, skip=("lm_head",))
    if not names:
        linear = sorted({n.rsplit(".", 1)[-1] for n in find_modules(model, LINEAR_TYPES)})
        raise UserError(f"targets {' '.join(targets)}: no linear layer matches; this model has {', '.join(linear)}")
    for name in names:
        replace_module(model, name, LoRALinear(model.get_submodule(name), rank, alpha, dropout))
    return model


def apply_qlora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                targets: Iterable[str] = DEFAULT_TARGETS) -> dict[str, int]:
    """QLoRA: store every block linear layer as NF4, then LoRA on the targets. Returns the bytes report."""
    report = quantize_model_nf4(model)
    apply_lora(model, rank, alpha, dropout, targets)
    return report


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model` as its base inside the block: each LoRALinear swapped for the layer it wraps, then back.

    DPO's reference model for a LoRA policy, with no second copy in memory (PEFT's `disable_adapter`).
    """
    mods = lora_modules(model)
    if any(m.merged for m in mods.values()):
        raise UserError("lora_disabled: a merged adapter is inside the base weights; unmerge_lora first")
    for name, m in mods.items():
        replace_module(model, name, m.base)
    try:
        yield model
    finally:
        for name, m in mods.items():
            replace_module(model, name, m)


def merge_lora(model: nn.Module) -> nn.Module:
    for m in lora_modules(model).values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_modules(model).values():
        m.unmerge()
    return model


@torch.no_grad()
def unwrap_lora(model: nn.Module) -> nn.Module:
    """Replace each LoRALinear by a plain nn.Linear holding W + delta (dequantised if the base was NF4)."""
    for name, m in lora_modules(model).items():
        m.unmerge()  # merged or not, start from the base weight alone
        weight = m.base.dequantize() if isinstance(m.base, QuantizedLinear) else m.base.weight
        bias = m.base.bias
        linear = nn.Linear(m.in_features, m.out_features, bias=bias is not None,
                           device=weight.device, dtype=m.lora_A.dtype)
        linear.weight.copy_(weight.to(linear.weight.dtype) + m.delta_weight())
        if bias is not None:
            linear.bias.copy_(bias)
        replace_module(model, name, linear)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights only: {"blocks.0.attn.q_proj.lora_A": (r, in), "...lora_B": (out, r)}."""
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach().contiguous()
        out[f"{name}.lora_B"] = m.lora_B.detach().contiguous()
    return out


@torch.no_grad()
def set_lora_weights(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "adapter") -> None:
    mods = lora_modules(model)
    for key, value in sd.items():
        name, _, which = key.rpartition(".")
        if name not in mods or which not in ("lora_A", "lora_B"):
            raise UserError(f"{source}: weight {key!r} matches no LoRA layer of this model")
        param = getattr(mods[name], which)
        if param.shape != value.shape:
            raise UserError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(param.shape)}")
        param.copy_(value)
