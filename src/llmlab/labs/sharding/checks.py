"""Lab: sharding, the checks. Every collective and layer runs over the checks' own `Network`, which copies what
is sent and counts each device's bytes; results are held to torch (a sum, a concatenation, `F.linear` on the
whole weight, autograd for the gradients) and the byte counts to llmlab's ring formulas
(`llmlab.train.collectives.FORMULAS`). Typical mistakes (a chunk replaced instead of added, pieces out of
order, whole tensors round the ring, the bias added on every device) are computed and named when matched.
"""

import torch
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.train.collectives import FORMULAS

CHECKS = CheckList()


class Network:
    """The `send` the checks pass in: a copy to another device (gradients flow through), bytes counted."""

    def __init__(self, p: int):
        self.p, self.sent = p, [0] * p

    def __call__(self, src: int, dst: int, tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor):
            raise CheckFailed(f"send(src, dst, tensor) sends a tensor, not {type(tensor).__name__}")
        for name, device in (("src", src), ("dst", dst)):
            if not isinstance(device, int) or not 0 <= device < self.p:
                raise CheckFailed(f"send: {name}={device!r} is not a device number 0..{self.p - 1}")
        if src == dst:
            raise CheckFailed(f"send({src}, {dst}, ...): a device does not send to itself; it has its data already")
        self.sent[src] += tensor.numel() * tensor.element_size()
        return tensor.clone()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _outputs(out, p: int, shape: tuple[int, ...], what: str, hints: dict | None = None) -> list[torch.Tensor]:
    """p tensors of `shape`, one per device; `hints`: a wrong shape -> what it says about the mistake."""
    if not isinstance(out, list | tuple) or len(out) != p:
        got = f"{len(out)} items" if isinstance(out, list | tuple) else type(out).__name__
        raise CheckFailed(f"{what} should return a list of {p} tensors, one per device, got {got}")
    for r, t in enumerate(out):
        if isinstance(t, torch.Tensor) and tuple(t.shape) in (hints or {}) and tuple(t.shape) != shape:
            raise CheckFailed(f"{what}: device {r} holds shape {tuple(t.shape)}, expected {shape}: "
                              f"{hints[tuple(t.shape)]}")
    return [expect_tensor(t, shape, f"{what}, device {r}'s result,") for r, t in enumerate(out)]


def _expect(outs: list[torch.Tensor], expected: list[torch.Tensor], mistakes: dict, otherwise: str) -> None:
    """Each device's result against its expected one; `mistakes`: message -> per-device wrong answers."""
    if all(close(o, e) for o, e in zip(outs, expected, strict=True)):
        return
    for message, wrong in mistakes.items():
        try:
            wrong = wrong() if callable(wrong) else wrong
        except Exception:  # this mistake is impossible for these shapes
            continue
        if all(o.shape == w.shape and close(o, w) for o, w in zip(outs, wrong, strict=True)):
            raise CheckFailed(message)
    r = next(r for r, (o, e) in enumerate(zip(outs, expected, strict=True)) if not close(o, e))
    diagnose(outs[r], expected[r], {}, f"{otherwise}: device {r}'s result is wrong")


def _expect_bytes(net: Network, op: str, n: int, what: str, whole: int | None = None) -> None:
    """Every device sent exactly what the ring formula says for `op` on n bytes."""
    p, want = net.p, round(FORMULAS[op](n, net.p))
    if net.sent == [want] * p:
        return
    if not any(net.sent):
        raise CheckFailed(f"{what}: nothing went through send; device r may read only its own data, everything "
                          "from another device must arrive through send(src, dst, tensor)")
    if whole is not None and net.sent == [(p - 1) * whole] * p:
        raise CheckFailed(f"{what}: each device sent {(p - 1) * whole} bytes, p - 1 whole tensors; the ring sends "
                          f"one chunk of n / p per step: {want} bytes")
    raise CheckFailed(f"{what}: the devices sent {net.sent} bytes; the ring formula for {op} on {n} bytes over "
                      f"{p} devices is {want} each")


def _inputs(p: int, shape: tuple[int, ...], dtype=torch.float32) -> list[torch.Tensor]:
    return [torch.randn(shape, dtype=dtype) for _ in range(p)]


def _unchanged(xs: list[torch.Tensor], saved: list[torch.Tensor], what: str) -> None:
    if not all(torch.equal(a, b) for a, b in zip(xs, saved, strict=True)):
        raise CheckFailed(f"{what} changed its inputs in place: a device's own tensor must stay as it was "
                          "(x = x + y makes a new tensor, x += y does not)")


# ---- reduce_scatter --------------------------------------------------------------------------------------

def _reduce_scatter(ws: Workspace, xs: list[torch.Tensor], dim: int) -> tuple[list, Network, str]:
    p, net, saved = len(xs), Network(len(xs)), [x.clone() for x in xs]
    what = f"reduce_scatter of {p} tensors {tuple(xs[0].shape)} along dim {dim}"
    shape = list(xs[0].shape)
    shape[dim] //= p
    hints = {tuple(xs[0].shape): "every device has a tensor the size of the whole; a reduce-scatter leaves device "
                                 "r only chunk r of the sum (an all-reduce leaves the whole sum)"}
    outs = _outputs(call(ws.get("reduce_scatter"), xs, net, dim=dim), p, tuple(shape), what, hints)
    _unchanged(xs, saved, what)
    return outs, net, what


def _expect_scatter(outs: list, xs: list[torch.Tensor], dim: int, what: str) -> None:
    p, total = len(xs), sum(xs)
    mistakes = {
        "device r's chunk r got nothing from the others: at each of the p - 1 steps device r sends chunk "
        "(r - s - 1) % p to the right, which adds it to its own copy": [x.chunk(p, dim)[r] for r, x in enumerate(xs)],
        "you replaced each device's chunk by the one arriving instead of adding it: chunk = chunk + received":
            [xs[(r + 1) % p].chunk(p, dim)[r] for r in range(p)],
    }
    for j in range(1, p):
        mistakes[f"device r ended with chunk (r + {j}) % p of the sum: at step s device r sends chunk (r - s - 1) % p, "
                 "so that the last chunk it receives is its own"] = [total.chunk(p, dim)[(r + j) % p] for r in range(p)]
    _expect(outs, list(total.chunk(p, dim)), mistakes, f"{what}: not chunk r of the sum")


@CHECKS.add("reduce_scatter", "device r ends with chunk r of the sum; inputs unchanged; (p - 1) / p of n sent")
def reduce_scatter_values(ws: Workspace) -> None:
    for p in (2, 3, 4):
        xs = _inputs(p, (3 * p, 5))
        outs, net, what = _reduce_scatter(ws, xs, 0)
        _expect_scatter(outs, xs, 0, what)
        _expect_bytes(net, "reduce_scatter", _nbytes(xs[0]), what, whole=_nbytes(xs[0]))


@CHECKS.add("reduce_scatter", "every case: one device (nothing sent), eight, other dims, 3-D, float64, gradients")
def reduce_scatter_cases(ws: Workspace) -> None:
    for p, shape, dim, dtype in ((1, (4, 3), 0, torch.float32), (8, (16, 3), 0, torch.float32),
                                 (3, (2, 6), 1, torch.float32), (2, (3, 4, 2), -1, torch.float64),
                                 (4, (2, 8, 3), 1, torch.float32)):
        xs = _inputs(p, shape, dtype)
        outs, net, what = _reduce_scatter(ws, xs, dim)
        _expect_scatter(outs, xs, dim, what)
        _expect_bytes(net, "reduce_scatter", _nbytes(xs[0]), what, whole=_nbytes(xs[0]))
    xs = [x.requires_grad_() for x in _inputs(3, (6, 2))]
    outs, _, what = _reduce_scatter(ws, xs, 0)
    _gradients(outs, list(sum(xs).chunk(3, 0)), xs, what)


def _gradients(outs: list[torch.Tensor], expected: list[torch.Tensor], leaves: list[torch.Tensor], what: str) -> None:
    """Gradients through the devices' results equal autograd's through the formula (send passes them on)."""
    if not all(o.requires_grad for o in outs):
        raise CheckFailed(f"{what}: the results have no gradient: did you use .detach(), .item() or "
                          "torch.no_grad()? Training through the layers needs it")
    weights = [torch.randn_like(e) for e in expected]
    ours = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights, strict=True)), leaves,
                               allow_unused=True)
    ref = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights, strict=True)), leaves)
    if any(a is None or not close(a, b) for a, b in zip(ours, ref, strict=True)):
        raise CheckFailed(f"{what}: the gradients for the devices' inputs differ from autograd's through the formula")


# ---- all_gather ------------------------------------------------------------------------------------------

def _all_gather(ws: Workspace, xs: list[torch.Tensor], dim: int) -> None:
    p, net, saved = len(xs), Network(len(xs)), [x.clone() for x in xs]
    what = f"all_gather of {p} pieces {tuple(xs[0].shape)} along dim {dim}"
    whole = torch.cat(xs, dim)
    hints = {tuple(torch.cat(xs, 0).shape): "you concatenated along dim 0; use the dim you are given"} if dim else {}
    outs = _outputs(call(ws.get("all_gather"), xs, net, dim=dim), p, tuple(whole.shape), what, hints)
    _unchanged(xs, saved, what)
    arrival = [torch.cat([xs[(r - j) % p] for j in range(p)], dim) for r in range(p)]
    _expect(outs, [whole] * p, {
        "the pieces are in the order they arrived; put them in device order, device 0's piece first": arrival,
    }, f"{what}: not torch.cat(xs, dim)")
    _expect_bytes(net, "all_gather", _nbytes(whole), what)
    return outs


@CHECKS.add("all_gather", "every device ends with all the pieces in device order; (p - 1) / p of the whole sent")
def all_gather_values(ws: Workspace) -> None:
    for p in (2, 3, 4):
        _all_gather(ws, _inputs(p, (2, 5)), 0)


@CHECKS.add("all_gather", "every case: one device, eight, other dims, 3-D, float64, gradients")
def all_gather_cases(ws: Workspace) -> None:
    for p, shape, dim, dtype in ((1, (4, 3), 0, torch.float32), (8, (1, 3), 0, torch.float32),
                                 (3, (2, 2), 1, torch.float32), (2, (3, 4, 2), -1, torch.float64)):
        _all_gather(ws, _inputs(p, shape, dtype), dim)
    xs = [x.requires_grad_() for x in _inputs(3, (2, 2))]
    _gradients(_all_gather(ws, xs, 0), [torch.cat(xs)] * 3, xs, "all_gather")


# ---- all_reduce ------------------------------------------------------------------------------------------

def _all_reduce(ws: Workspace, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    p, net, saved = len(xs), Network(len(xs)), [x.clone() for x in xs]
    what = f"all_reduce of {p} tensors {tuple(xs[0].shape)}"
    total = sum(xs)
    shape = list(total.shape)
    shape[0] //= p
    hints = {tuple(shape): "device r holds one chunk: that is a reduce-scatter; all-gather the reduced chunks "
                           "afterwards"} if p > 1 else {}
    outs = _outputs(call(ws.get("all_reduce"), xs, net), p, tuple(total.shape), what, hints)
    _unchanged(xs, saved, what)
    _expect(outs, [total] * p, {
        "every device has the mean; an all-reduce here sums": [total / p] * p,
        "every device kept its own tensor: nothing was added": xs,
    }, f"{what}: not the sum")
    n, want = _nbytes(total), round(FORMULAS["all_reduce"](_nbytes(total), p))
    if net.sent != [want] * p and net.sent == [(p - 1) * n] * p:
        raise CheckFailed(f"{what}: each device sent (p - 1) whole tensors, {(p - 1) * n} bytes; a reduce-scatter "
                          f"then an all-gather of the reduced chunks sends 2 (p - 1) / p * n = {want}")
    _expect_bytes(net, "all_reduce", n, what)
    return outs


@CHECKS.add("all_reduce", "every device ends with the sum; 2 (p - 1) / p of n sent, the least possible")
def all_reduce_values(ws: Workspace) -> None:
    for p in (2, 3, 4):
        _all_reduce(ws, _inputs(p, (2 * p, 3)))


@CHECKS.add("all_reduce", "every case: one device, five, 3-D, float64, gradients")
def all_reduce_cases(ws: Workspace) -> None:
    for p, shape, dtype in ((1, (3, 2), torch.float32), (5, (10, 1), torch.float32), (2, (4, 3, 2), torch.float64)):
        _all_reduce(ws, _inputs(p, shape, dtype))
    xs = [x.requires_grad_() for x in _inputs(3, (3, 2))]
    _gradients(_all_reduce(ws, xs), [sum(xs)] * 3, xs, "all_reduce")


# ---- column_parallel and row_parallel --------------------------------------------------------------------

def _linear(N: int, n_in: int, n_out: int, bias: bool = True) -> tuple[torch.Tensor, ...]:
    x = torch.randn(N, n_in, requires_grad=True)
    weight = (torch.randn(n_out, n_in) / n_in ** 0.5).requires_grad_()
    return x, weight, torch.randn(n_out, requires_grad=True) if bias else None


def _leaves(*tensors) -> list[torch.Tensor]:
    return [t for t in tensors if t is not None]


def _same_gradients(outs: list[torch.Tensor], expected: torch.Tensor, leaves: list[torch.Tensor], what: str) -> None:
    if not outs[0].requires_grad:
        raise CheckFailed(f"{what}: the result has no gradient: training through the layer needs it (no .detach())")
    g = torch.randn_like(expected)
    ours = torch.autograd.grad((outs[0] * g).sum(), leaves, allow_unused=True, retain_graph=True)
    ref = torch.autograd.grad((expected * g).sum(), leaves, retain_graph=True)
    for name, a, b in zip(("x", "weight", "bias"), ours, ref, strict=False):
        if a is None or not close(a, b, atol=1e-4):
            raise CheckFailed(f"{what}: the gradient for {name} differs from the unsharded layer's")


def _column(ws: Workspace, p: int, N: int, n_in: int, n_out: int, bias: bool, gather: bool) -> None:
    x, weight, b = _linear(N, n_in, n_out, bias)
    net = Network(p)
    what = f"column_parallel over {p} devices, x {(N, n_in)}, weight {(n_out, n_in)}, gather={gather}"
    y = F.linear(x, weight, b)
    shape = (N, n_out) if gather else (N, n_out // p)
    hints = {(p * N, n_out // p): "you gathered along dim 0, the tokens; the slices are output features: gather "
                                  "along the last dim"} if gather else {
        (N, n_out): "with gather=False each device returns only its own slice of the output features"}
    outs = _outputs(call(ws.get("column_parallel"), x, weight, b, p, net, gather=gather), p, shape, what, hints)
    if gather:
        _expect(outs, [y] * p, {}, f"{what}: not x W^T + b")
        if p > 1 and not any(net.sent):
            raise CheckFailed(f"{what}: nothing was sent, so every device used the whole weight; device r holds "
                              "only weight.chunk(p, dim=0)[r]: compute that slice, then all-gather the slices")
        _expect_bytes(net, "all_gather", _nbytes(y), what)
        _same_gradients(outs, y, _leaves(x, weight, b), what)
    else:
        slices = list(y.chunk(p, dim=-1))
        _expect(outs, slices, {"device r must hold slice r of the output features, in order": slices[::-1]},
                f"{what}: not device r's slice of x W^T + b")
        if any(net.sent):
            raise CheckFailed(f"{what}: the devices sent {net.sent} bytes; with gather=False nothing is sent")


@CHECKS.add("column_parallel", "device r's slice of the output features, gathered into x W^T + b on every device")
def column_parallel_gathered(ws: Workspace) -> None:
    for p, N, n_in, n_out, bias in ((2, 5, 3, 4, True), (4, 3, 6, 8, True), (1, 2, 3, 5, True), (3, 4, 5, 9, False)):
        _column(ws, p, N, n_in, n_out, bias, gather=True)


@CHECKS.add("column_parallel", "gather=False: each device keeps its own slice, (N, out / p), and sends nothing")
def column_parallel_slices(ws: Workspace) -> None:
    for p, N, n_in, n_out, bias in ((2, 5, 3, 4, True), (4, 3, 6, 8, False)):
        _column(ws, p, N, n_in, n_out, bias, gather=False)


def _row(ws: Workspace, p: int, N: int, n_in: int, n_out: int, bias: bool) -> None:
    x, weight, b = _linear(N, n_in, n_out, bias)
    net = Network(p)
    what = f"row_parallel over {p} devices, x {(N, n_in)} split into {p} slices, weight {(n_out, n_in)}"
    y = F.linear(x, weight, b)
    outs = _outputs(call(ws.get("row_parallel"), list(x.chunk(p, dim=-1)), weight, b, net), p, (N, n_out), what,
                    {(N // p, n_out): "each device holds a chunk of the tokens: reduce the partial outputs with "
                                      "all_reduce, not reduce_scatter"} if p > 1 else {})
    partial = F.linear(x, weight)
    mistakes = {
        "the bias is added on every device before the sum, so y has p times the bias: add it once, after the "
        "all-reduce": [partial + p * b] * p if b is not None else [],
        "the bias is missing: add it once, after the all-reduce": [partial] * p,
        "every device has only its own partial output: sum them with all_reduce": [
            F.linear(xr, wr) + (b if b is not None else 0)
            for xr, wr in zip(x.chunk(p, -1), weight.chunk(p, 1), strict=True)],
    }
    _expect(outs, [y] * p, {m: w for m, w in mistakes.items() if len(w) == p}, f"{what}: not x W^T + b")
    _expect_bytes(net, "all_reduce", _nbytes(y), what)
    _same_gradients(outs, y, _leaves(x, weight, b), what)


@CHECKS.add("row_parallel", "partial outputs of each slice of the input features, all-reduced, the bias once")
def row_parallel_values(ws: Workspace) -> None:
    for p, N, n_in, n_out, bias in ((2, 4, 6, 3, True), (4, 8, 8, 5, True), (3, 3, 9, 2, True)):
        _row(ws, p, N, n_in, n_out, bias)


@CHECKS.add("row_parallel", "every case: one device, no bias, gradients to x, the weight and the bias")
def row_parallel_cases(ws: Workspace) -> None:
    for p, N, n_in, n_out, bias in ((1, 2, 3, 4, True), (2, 6, 4, 7, False), (8, 8, 16, 3, True)):
        _row(ws, p, N, n_in, n_out, bias)
