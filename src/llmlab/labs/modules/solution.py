"""Lab: modules, the reference solution: llmlab's own pieces where it has them.

The MLP is llmlab's `GeluMLP` (GPT-2's); counting parameters is `llmlab.models.gpt.count_parameters`;
saving goes through `llmlab.common.checkpoint.model_tensors` (each shared tensor once, on the CPU) into a
safetensors file, as every llmlab checkpoint does. `Linear` is written out: llmlab uses torch's nn.Linear.
"""

import math

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llmlab.common.checkpoint import model_tensors
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import count_parameters
from llmlab.models.layers import GeluMLP

__all__ = ["Linear", "MLP", "count_parameters", "save_weights", "load_weights"]


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.weight.T  # (..., in) @ (in, out) -> (..., out)
        return y + self.bias if self.bias is not None else y


class MLP(GeluMLP):
    def __init__(self, n_embd: int, hidden: int):
        super().__init__(ModelConfig(n_embd=n_embd, n_head=1, intermediate_size=hidden, bias=True))


def save_weights(model: nn.Module, path: str) -> None:
    save_file(model_tensors(model), str(path))


def load_weights(model: nn.Module, path: str) -> nn.Module:
    model.load_state_dict(load_file(str(path)))  # strict: a missing, extra or reshaped tensor raises
    return model


LLMLAB_CODE = [GeluMLP, count_parameters, model_tensors]  # printed by `llmlab labs solution modules`
