"""Lab: LoRA. Fill in the bodies below, then run `llmlab labs check lora` (or the notebook).

A linear layer computes y = x W^T + b with W of shape (out_features, in_features). LoRA freezes W and learns
a low-rank change of it, W + (alpha / rank) * B A, with A (rank, in_features) and B (out_features, rank).
"""

import math  # noqa: F401

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear `base` plus a trainable low-rank update.

    Parameters: A of shape (rank, in_features), random (e.g. nn.init.kaiming_uniform_(A, a=math.sqrt(5)), as
    nn.Linear and PEFT do); B of shape (out_features, rank), zeros, so a fresh adapter changes nothing.
    Keep the layer as self.base and freeze its parameters.
    forward(x): base(x) + (alpha / rank) * x @ A.T @ B.T, for x of shape (..., in_features).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        raise NotImplementedError("TODO: keep base (frozen), the scale alpha / rank, and parameters A and B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: the frozen layer's output plus the scaled low-rank path")

    def merge(self) -> nn.Linear:
        """A plain nn.Linear with weight W + (alpha / rank) * B @ A (and base's bias): the same outputs as this
        layer, at no extra cost. Best build a new one: a base changed in place would make this LoRALinear add
        its update twice afterwards."""
        raise NotImplementedError("TODO: build an nn.Linear and fill in the merged weight and the bias")


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> nn.Module:
    """Freeze every parameter of `model`, then replace each nn.Linear whose name ends with one of `targets`
    (e.g. "blocks.0.attn.q_proj") by a LoRALinear around it, in place. Returns the model.

    Hint: model.named_modules() gives (name, module) pairs; setattr(parent, leaf_name, new) replaces one.
    """
    raise NotImplementedError("TODO: freeze, find the targeted linear layers, swap each for a LoRALinear")
