"""Lab: modules. Fill in the bodies below, then run `llmlab labs check modules` (or the notebook).

An nn.Module holds parameters (registered by assigning nn.Parameter or sub-modules to self) and computes
forward(). Everything else, .parameters(), .state_dict(), .to(), comes from registration.
"""

import math  # noqa: F401

import torch
import torch.nn as nn


class Linear(nn.Module):
    """nn.Linear from scratch: y = x @ weight.T + bias, for x (..., in_features) -> (..., out_features).

    weight: a parameter (out_features, in_features); bias: (out_features,), or None with bias=False.
    Initialise both uniformly in [-1/sqrt(in_features), 1/sqrt(in_features)], as torch does.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        raise NotImplementedError("TODO: register weight (and bias) as nn.Parameter, initialised as above")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: x @ weight.T (+ bias)")


class MLP(nn.Module):
    """GPT-2's MLP on (B, T, n_embd): down_proj(gelu(up_proj(x))), with GELU's tanh approximation.

    Keep the names: up_proj (n_embd -> hidden) and down_proj (hidden -> n_embd), both with biases; your
    Linear or nn.Linear.
    """

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        raise NotImplementedError("TODO: create up_proj and down_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("TODO: up, GELU (torch.nn.functional.gelu(h, approximate='tanh')), down")


def count_parameters(model: nn.Module) -> int:
    """How many numbers `model` learns. A tensor shared by two modules (tied weights) counts once."""
    raise NotImplementedError("TODO: sum p.numel() over model.parameters(), each distinct tensor once")


def save_weights(model: nn.Module, path: str) -> None:
    """Write the model's weights (its state_dict) to the file `path`."""
    raise NotImplementedError("TODO: torch.save(model.state_dict(), path), or safetensors' save_file")


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Fill `model` in place with the weights in `path` and return it; a file that does not fit the model
    (missing, extra or differently shaped tensors) must raise an error."""
    raise NotImplementedError("TODO: read the file, model.load_state_dict(...) (strict)")
