"""Module surgery: find submodules by name, freeze them, and replace them in place.

Every method that changes a trained model (LoRA, adapters, quantised layers,
a classification head) does it by swapping modules of the one `Transformer`,
never by building a second model tree. This file holds the three moves they
share; which modules to swap, and what with, is each method's business.
"""

import re
from collections.abc import Iterable

import torch.nn as nn


def freeze(model: nn.Module) -> nn.Module:
    """Stop every parameter of `model` from training; returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def parent_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding `name` and the attribute it sits under: "blocks.0.attn.q_proj" -> (attn, "q_proj")."""
    parent_name, _, leaf = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), leaf


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` where the submodule `name` was; returns the old one."""
    parent, leaf = parent_of(model, name)
    old = getattr(parent, leaf)
    setattr(parent, leaf, new)
    return old


def match_targets(name: str, targets: Iterable[str]) -> bool:
    """Does module `name` match a target? A target is a leaf name ("q_proj"), a dotted suffix
    ("attn.o_proj") or a regex over the full name ("blocks\\.[0-3]\\.attn\\.q_proj").

    name="blocks.2.attn.q_proj": "q_proj" -> True, "attn.q_proj" -> True, r"blocks\\.[01]\\..*" -> False.
    """
    for t in targets:
        if name == t or name.endswith("." + t):
            return True
        try:
            if re.fullmatch(t, name):
                return True
        except re.error:
            continue
    return False


def find_modules(model: nn.Module, types: tuple[type, ...], targets: Iterable[str] | None = None,
                 skip: Iterable[str] = ()) -> list[str]:
    """Names of the submodules of one of `types` that match `targets` (all when None), minus names ending in `skip`."""
    targets = None if targets is None else list(targets)
    skip = tuple(skip)
    return [n for n, m in model.named_modules() if isinstance(m, types) and n
            and (targets is None or match_targets(n, targets)) and not (skip and n.endswith(skip))]
