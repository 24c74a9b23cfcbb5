"""Lab: pytorch-basics. Fill in the bodies below, then run `llmlab labs check pytorch-basics` (or the notebook).

No Python loops over elements: each answer is one or two lines of tensor operations (broadcasting, matmul,
reductions with keepdim).
"""

import torch


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance between every row of x (N, D) and every row of y (M, D) -> (N, M).

    out[i, j] = sum over d of (x[i, d] - y[j, d])**2. Broadcasting (N, 1, D) against (1, M, D) does it.
    """
    raise NotImplementedError("TODO: insert axes with None (or unsqueeze) so the shapes broadcast")


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row of x (N, D) divided by its Euclidean length, so every row has length 1 -> (N, D)."""
    raise NotImplementedError("TODO: the length of each row, kept as (N, 1) so it divides row-wise")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What nn.Linear computes: x (..., in) times weight (out, in) transposed, plus bias (out,) -> (..., out)."""
    raise NotImplementedError("TODO: mind which side of weight meets x")


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x) / sum(exp(x)) along `dim`, without torch.softmax, stable for large inputs (subtract the max)."""
    raise NotImplementedError("TODO: subtract the max along dim (keepdim=True), exp, divide by the sum")


def mse_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """By hand, no autograd: the gradient with respect to w (D,) of the loss mean((x @ w - y)**2), for x (N, D)
    and y (N,) -> (D,). (The check compares it with what autograd gets.)"""
    raise NotImplementedError("TODO: d/dw of the mean of squared errors: (2 / N) * x.T @ (x @ w - y)")
