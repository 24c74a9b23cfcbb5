"""Lab: pytorch-basics, the checks. References are torch's own: torch.cdist, F.normalize, F.linear,
torch.softmax and autograd for the gradient. Typical mistakes (a missing keepdim, an untransposed weight,
a sum where a mean belongs) are computed and named when matched.
"""

import torch
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor

CHECKS = CheckList()


@CHECKS.add("pairwise_sq_distances", "(N, M) squared distances, equal to torch.cdist(x, y) ** 2, any N, M, D")
def distances(ws: Workspace) -> None:
    fn = ws.get("pairwise_sq_distances")
    for N, M, D in ((5, 3, 4), (1, 1, 1), (2, 7, 9)):
        x, y = torch.randn(N, D), torch.randn(M, D)
        out = call(fn, x, y)
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (M, N) and M != N:
            raise CheckFailed(f"returned (M, N) = {(M, N)}: rows should be x's, columns y's")
        out = expect_tensor(out, (N, M), f"for x {(N, D)} and y {(M, D)}, pairwise_sq_distances")
        diagnose(out, torch.cdist(x, y) ** 2, {
            "you return distances: square them (or skip the square root)": torch.cdist(x, y),
            "sum the squared differences over D, don't average them": torch.cdist(x, y) ** 2 / D,
        }, f"differs from torch.cdist(x, y) ** 2 for x {(N, D)} and y {(M, D)}", atol=1e-4)


@CHECKS.add("normalize_rows", "every row gets length 1 (F.normalize), for square and wide inputs")
def normalize(ws: Workspace) -> None:
    for shape in ((4, 4), (3, 6), (1, 5)):
        x = torch.randn(shape)
        out = call(ws.get("normalize_rows"), x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            hint = ""
            if isinstance(out, torch.Tensor) or shape[0] != shape[1]:
                hint = ": divide by norms of shape (N, 1) (keepdim=True), so each row meets its own length"
            expect_tensor(out, shape, f"normalize_rows for x of shape {shape}")
            raise CheckFailed(f"wrong shape{hint}")
        diagnose(out, F.normalize(x, dim=1), {
            "rows are divided by the wrong lengths: x.norm(dim=1) has shape (N,), which broadcasts along the "
            "columns; keep it (N, 1) with keepdim=True": lambda x=x: x / x.norm(dim=1),
            "you divided each column by its length: rows are dim=1": F.normalize(x, dim=0),
            "divide by the length (square root of the sum of squares), not by the sum of squares":
                x / (x ** 2).sum(1, keepdim=True),
        }, f"differs from torch.nn.functional.normalize(x, dim=1) for x of shape {shape}")


@CHECKS.add("linear", "x @ weight.T + bias, equal to F.linear, for batched inputs")
def linear_values(ws: Workspace) -> None:
    for x_shape, out_f in (((3, 4), 4), ((2, 5, 4), 6), ((4,), 2)):
        x, w, b = torch.randn(x_shape), torch.randn(out_f, x_shape[-1]), torch.randn(out_f)
        out = call(ws.get("linear"), x, w, b)
        out = expect_tensor(out, x_shape[:-1] + (out_f,), f"linear for x {x_shape}, weight {(out_f, x_shape[-1])}")
        diagnose(out, F.linear(x, w, b), {
            "use weight.T: weight is (out_features, in_features), so x meets its rows": lambda x=x, w=w, b=b: x @ w + b,
            "the bias is missing": x @ w.T,
        }, f"differs from torch.nn.functional.linear for x {x_shape}")


@CHECKS.add("softmax", "equals torch.softmax along any dim, and stays finite for huge inputs")
def softmax_values(ws: Workspace) -> None:
    fn = ws.get("softmax")
    x = torch.randn(3, 5, 4)
    for dim in (-1, 0, 1):
        out = expect_tensor(call(fn, x, dim=dim), x.shape, f"softmax(x, dim={dim})")
        mistakes = {f"softmax over dim={d} instead of dim={dim}": torch.softmax(x, d) for d in (-1, 0, 1) if d != dim}
        mistakes["divide by the sum along dim (keepdim=True), not by the sum of everything"] = x.exp() / x.exp().sum()
        diagnose(out, torch.softmax(x, dim), mistakes, f"differs from torch.softmax(x, dim={dim})")
    big = torch.randn(4, 6) * 1000
    out = call(fn, big, dim=-1)
    if isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
        raise CheckFailed("NaN for large inputs: exp(1000) overflows; subtract the max along dim first")
    if not close(expect_tensor(out, big.shape, "softmax of large inputs"), torch.softmax(big, -1)):
        raise CheckFailed("wrong for large inputs: subtract the max along dim (keepdim=True), not a global max")


@CHECKS.add("mse_grad", "the gradient by hand equals autograd's, for any N and D")
def mse(ws: Workspace) -> None:
    for N, D in ((8, 3), (1, 1), (5, 7)):
        w, x, y = torch.randn(D, requires_grad=True), torch.randn(N, D), torch.randn(N)
        (auto,) = torch.autograd.grad(((x @ w - y) ** 2).mean(), w)
        w = w.detach()
        out = expect_tensor(call(ws.get("mse_grad"), w, x, y), (D,), f"mse_grad for x {(N, D)}")
        r = x @ w - y
        mistakes = {
            "the factor 2 from the square is missing": x.T @ r / N,
            "that is the gradient of the sum: the mean divides by N": 2 * x.T @ r,
            "the residual has the wrong sign: it is x @ w - y": -2 / N * x.T @ r,
        }
        if N > 1:
            diagnose(out, auto, mistakes, f"differs from autograd's gradient for x {(N, D)}")
        elif not close(out, auto):
            raise CheckFailed(f"differs from autograd's gradient for N = {N}: is N hard-coded?")
