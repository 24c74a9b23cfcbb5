"""Lab: micrograd, the checks. The reference is torch.autograd on the same expressions in float64: values,
then the gradient every input gets, one operation at a time and then for graphs where a value is used more
than once (where `=` instead of `+=`, or a backward pass out of order, shows).
"""

import math
import random

import torch

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, describe_error

CHECKS = CheckList()

# name -> (expression on two inputs, what its backward must do); works on Values and torch tensors alike
OPS = {
    "a + b": (lambda a, b: a + b, "both inputs get out.grad"),
    "a * b": (lambda a, b: a * b, "a gets out.grad * b.data and b gets out.grad * a.data"),
    "a ** 3": (lambda a, b: a ** 3, "x ** k passes k * x ** (k - 1) * out.grad"),
    "b ** -1.5": (lambda a, b: b ** -1.5, "x ** k passes k * x ** (k - 1) * out.grad, also for negative k"),
    "a.tanh()": (lambda a, b: a.tanh(), "tanh passes (1 - t ** 2) * out.grad, with t = tanh(x), the output"),
    "a.exp()": (lambda a, b: a.exp(), "exp passes exp(x) * out.grad"),
    "a.relu()": (lambda a, b: a.relu(), "relu passes out.grad where x > 0 and 0 elsewhere"),
    "2 + a * 3": (lambda a, b: 2 + a * 3, "plain numbers must work on both sides (wrap them in a Value), and "
                  "backward must run the nodes in reverse topological order"),
    "a - b / 4": (lambda a, b: a - b / 4, "subtraction and division are built from + and * and **; backward must "
                  "run the nodes in reverse topological order"),
}
UPSTREAM = 1.7  # a result used further on: its out.grad is not 1


def _numbers(rng: random.Random, n: int = 0) -> tuple[float, float]:
    """a of alternating sign (relu's two sides), b > 0 (for b ** -1.5)."""
    return rng.uniform(0.1, 2) * (-1) ** n, rng.uniform(0.5, 2)


def _torch_grads(expr, a: float, b: float) -> tuple[float, float, float]:
    ta, tb = torch.tensor(a, dtype=torch.float64, requires_grad=True), torch.tensor(b, dtype=torch.float64,
                                                                                    requires_grad=True)
    out = expr(ta, tb)
    if not out.requires_grad:  # an expression that does not use its inputs
        return out.item(), 0.0, 0.0
    ga, gb = torch.autograd.grad(out, (ta, tb), allow_unused=True)
    return out.item(), float(ga) if ga is not None else 0.0, float(gb) if gb is not None else 0.0


def _run(ws: Workspace, expr, a: float, b: float, name: str = "", hint: str = ""):
    V = ws.get("Value")
    va, vb = call(V, a), call(V, b)
    try:
        out = expr(va, vb)
    except (AttributeError, TypeError) as e:  # an operation that is missing or does not take numbers
        raise CheckFailed(f"{name} raised {describe_error(e, ws.path)}; {hint}") from None
    if not hasattr(out, "data") or not hasattr(out, "backward"):
        raise CheckFailed(f"an operation returned {type(out).__name__}, not a Value")
    return va, vb, out


def _close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


@CHECKS.add("Value", "forward: every operation computes the right number")
def forward(ws: Workspace) -> None:
    rng = random.Random(0)
    for name, (expr, hint) in OPS.items():
        for n in range(3):
            a, b = _numbers(rng, n)
            _, _, out = _run(ws, expr, a, b, name, hint)
            want = _torch_grads(expr, a, b)[0]
            if not _close(float(out.data), want):
                raise CheckFailed(f"{name} with a={a:.3f}, b={b:.3f} gives {float(out.data):.6g}, expected {want:.6g}")


@CHECKS.add("Value", "backward: each operation passes the right gradient to its inputs (against torch.autograd)")
def backward_per_op(ws: Workspace) -> None:
    rng = random.Random(1)
    for scale in (1.0, UPSTREAM):  # every op alone first; then times 1.7, as inside a larger expression
        for (name, (expr, hint)), n in ((op, n) for op in OPS.items() for n in range(2)):
            a, b = _numbers(rng, n)
            va, vb, out = _run(ws, lambda x, y, e=expr, s=scale: e(x, y) * s if s != 1.0 else e(x, y), a, b, name,
                               hint)
            call(out.backward)
            _, ga, gb = _torch_grads(expr, a, b)
            ga, gb = ga * scale, gb * scale
            if not (_close(float(va.grad), ga) and _close(float(vb.grad), gb)):
                where = f" (times {scale}: inside a larger expression out.grad is not 1, multiply by it)" \
                    if scale != 1.0 else ""
                raise CheckFailed(f"{name}{where} with a={a:.3f}, b={b:.3f}: gradients (a {float(va.grad):.6g}, b "
                                  f"{float(vb.grad):.6g}), expected (a {ga:.6g}, b {gb:.6g}); {hint}")


SHARED = {
    "a * a": lambda a, b: a * a,
    "a + a": lambda a, b: a + a,
    "(a * b + a) * a": lambda a, b: (a * b + a) * a,
    "e = a * b; (e + e.tanh()) * e": lambda a, b: (lambda e: (e + e.tanh()) * e)(a * b),
}


@CHECKS.add("Value", "a value used more than once adds up its gradients; backward runs in topological order")
def backward_shared(ws: Workspace) -> None:
    rng = random.Random(2)
    for name, expr in SHARED.items():
        a, b = _numbers(rng)
        va, vb, out = _run(ws, expr, a, b, name, "")
        call(out.backward)
        _, ga, gb = _torch_grads(expr, a, b)
        if not (_close(float(va.grad), ga) and _close(float(vb.grad), gb)):
            hint = ("a gradient must be added (+=), not assigned: a value used twice gets both contributions"
                    if name in ("a * a", "a + a") else
                    "run each node's backward only after every node that uses it: reverse topological order")
            raise CheckFailed(f"{name}: gradients (a {float(va.grad):.6g}, b {float(vb.grad):.6g}), expected "
                              f"(a {ga:.6g}, b {gb:.6g}); {hint}")


@CHECKS.add("Value", "a small neuron, tanh(w1 x1 + w2 x2 + b), has torch's gradients")
def neuron(ws: Workspace) -> None:
    V = ws.get("Value")
    rng = random.Random(3)
    nums = [rng.uniform(-1, 1) for _ in range(5)]
    x1, x2, w1, w2, bias = (call(V, n) for n in nums)
    out = (x1 * w1 + x2 * w2 + bias).tanh()
    call(out.backward)
    t = [torch.tensor(n, dtype=torch.float64, requires_grad=True) for n in nums]
    ref = (t[0] * t[2] + t[1] * t[3] + t[4]).tanh()
    grads = torch.autograd.grad(ref, t)
    for name, v, g in zip(("x1", "x2", "w1", "w2", "b"), (x1, x2, w1, w2, bias), grads, strict=True):
        if not _close(float(v.grad), float(g)):
            raise CheckFailed(f"the neuron's gradient for {name} is {float(v.grad):.6g}, torch says {float(g):.6g}")
