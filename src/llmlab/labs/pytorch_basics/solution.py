"""Lab: pytorch-basics, the reference solution: plain torch (llmlab has no copy of these one-liners).

Each answer is what torch itself offers as a function (the checks compare with torch.cdist, F.normalize,
F.linear, torch.softmax and autograd), written out so the tensor operations show.
"""

import torch


def pairwise_sq_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # (N, 1, D) - (1, M, D) -> (N, M, D) -> (N, M)


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)  # (N, D) / (N, 1)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return x @ weight.T + bias  # (..., in) @ (in, out) + (out,)


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    e = (x - x.amax(dim, keepdim=True)).exp()  # the largest entry becomes exp(0) = 1: nothing overflows
    return e / e.sum(dim, keepdim=True)


def mse_grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 2 / len(y) * x.T @ (x @ w - y)  # (D, N) @ (N,) -> (D,)
