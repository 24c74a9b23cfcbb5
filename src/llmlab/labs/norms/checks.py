"""Lab: norms, the checks. References are torch's: `F.layer_norm`, `F.rms_norm`, `F.gelu`, `F.silu`, and the
SwiGLU formula on the learner's own weights. Typical mistakes are computed and named when matched.
"""

import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor

CHECKS = CheckList()
SHAPES = [(1, 1, 8), (3, 5, 7), (2, 16), (4, 1)]  # batch 1, one position, odd widths, dim 1


def _norm(ws: Workspace, name: str, dim: int, **kwargs) -> nn.Module:
    module = call(ws.get(name), dim, **kwargs)
    if not isinstance(module, nn.Module):
        raise CheckFailed(f"{name} must subclass torch.nn.Module")
    return module


def _random_affine(m: nn.Module) -> None:
    """Give the norm's weight (and bias) random values, so forgetting to apply them shows."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))


def _rms_ref(x, m, eps):
    return F.rms_norm(x, (x.shape[-1],), m.weight, eps)


def _ln_ref(x, m, eps):
    return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, eps)


def _norm_mistakes(x, m, eps: float, kind: str) -> dict[str, torch.Tensor]:
    w = m.weight
    b = m.bias if kind == "LayerNorm" else 0.0
    mean = x.mean(-1, keepdim=True)
    ms = x.pow(2).mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    common = {
        "the weight is not applied: multiply by self.weight at the end": (
            (x - mean) / torch.sqrt(var + eps) + b if kind == "LayerNorm" else x / torch.sqrt(ms + eps)),
        "eps belongs inside the square root: sqrt(... + eps), not sqrt(...) + eps": (
            (x - mean) / (var.sqrt() + eps) * w + b if kind == "LayerNorm" else x / (ms.sqrt() + eps) * w),
        "normalise over the last dimension (each vector's features), not over all of x": (
            (x - x.mean()) / torch.sqrt(((x - x.mean()) ** 2).mean() + eps) * w + b if kind == "LayerNorm"
            else x / torch.sqrt(x.pow(2).mean() + eps) * w),
    }
    if kind == "RMSNorm":
        common.update({
            "RMSNorm subtracts the mean: that is LayerNorm's centring; divide x itself by its root mean square":
                (x - mean) / torch.sqrt(var + eps) * w,
            "RMSNorm divides by sqrt(mean(x**2)), not by the standard deviation": (
                x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w, x / (x.std(-1, keepdim=True) + eps) * w),
            "use the mean of the squares, not their sum": x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
        })
    else:
        common.update({
            "use the biased variance, mean((x - mean)**2), as torch and the paper do; x.var() is unbiased "
            "(pass unbiased=False)": (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
            "subtract the mean before dividing: without it this is RMSNorm": x / torch.sqrt(var + eps) * w + b,
            "the bias is not added: + self.bias at the end": (x - mean) / torch.sqrt(var + eps) * w,
        })
    return common


def _parameters(ws: Workspace, name: str, expected: dict[str, float]) -> None:
    default = inspect.signature(ws.get(name).__init__).parameters.get("eps")
    want_eps = 1e-6 if name == "RMSNorm" else 1e-5
    if default is None or default.default != want_eps:
        raise CheckFailed(f"{name}.__init__ should take eps with the default {want_eps:g}")
    m = _norm(ws, name, 6)
    params = dict(m.named_parameters())
    extra = sorted(set(params) - set(expected))
    if extra:
        hint = ": RMSNorm has no bias" if name == "RMSNorm" and "bias" in extra else ""
        raise CheckFailed(f"{name} has parameters it does not need: {', '.join(extra)}{hint}")
    for p_name, value in expected.items():
        if p_name not in params:
            raise CheckFailed(f"no parameter {p_name}: register it with self.{p_name} = nn.Parameter(...)")
        p = params[p_name]
        if tuple(p.shape) != (6,) or not torch.equal(p.detach(), torch.full((6,), value)):
            raise CheckFailed(f"{p_name} should start as {6} {'ones' if value else 'zeros'}, found "
                              f"shape {tuple(p.shape)} with values {p.detach().flatten()[:3].tolist()}...")
        if not p.requires_grad:
            raise CheckFailed(f"{p_name} is frozen (requires_grad=False): it must train")


def _values(ws: Workspace, name: str, ref, kind: str) -> None:
    for scale, words in ((1.0, ""), (1e-4, " for tiny inputs, where eps matters"), (1e4, " for huge inputs")):
        m = _norm(ws, name, 16)
        _random_affine(m)
        x = torch.randn(2, 5, 16) * scale + (0.5 * scale if kind == "LayerNorm" else 0.0)
        eps = getattr(m, "eps", 1e-6 if kind == "RMSNorm" else 1e-5)
        out = expect_tensor(call(m, x), x.shape, f"{name}(x)")
        with torch.no_grad():
            diagnose(out, ref(x, m, eps), _norm_mistakes(x, m, eps, kind),
                     f"differs from torch's {'F.rms_norm' if kind == 'RMSNorm' else 'F.layer_norm'}{words}",
                     atol=1e-4)


def _shapes_eps_and_gradients(ws: Workspace, name: str, ref) -> None:
    for shape in SHAPES:
        m = _norm(ws, name, shape[-1])
        _random_affine(m)
        x = torch.randn(shape).requires_grad_()
        out = expect_tensor(call(m, x), shape, f"for x of shape {shape}, {name}")
        expected = ref(x, m, getattr(m, "eps", 1e-5))
        if not close(out, expected, atol=1e-4):
            raise CheckFailed(f"wrong for x of shape {shape}: are sizes hard-coded, or the wrong axis used?")
        g = torch.randn(shape)
        ours = torch.autograd.grad((out * g).sum(), [x, m.weight], allow_unused=True)
        theirs = torch.autograd.grad((expected * g).sum(), [x, m.weight])
        for what, a, b in zip(("x", "weight"), ours, theirs, strict=True):
            if a is None:
                raise CheckFailed(f"no gradient reaches {what}: is it used through .detach() or .data?")
            if not close(a, b, atol=1e-4):
                raise CheckFailed(f"outputs match torch's for shape {shape}, but the gradient for {what} does not")
    m = _norm(ws, name, 8, eps=0.5)
    x = torch.randn(3, 8) * 1e-3
    if not close(call(m, x), ref(x, m, 0.5), atol=1e-5):
        raise CheckFailed(f"{name}(dim, eps=0.5) ignores its eps argument: store it and use self.eps")


@CHECKS.add("LayerNorm", "weight (ones) and bias (zeros) are registered, trainable parameters")
def layernorm_parameters(ws: Workspace) -> None:
    _parameters(ws, "LayerNorm", {"weight": 1.0, "bias": 0.0})


@CHECKS.add("LayerNorm", "equals torch's F.layer_norm (ordinary, tiny and huge inputs)")
def layernorm_values(ws: Workspace) -> None:
    _values(ws, "LayerNorm", _ln_ref, "LayerNorm")


@CHECKS.add("LayerNorm", "every shape, the eps argument, gradients")
def layernorm_shapes(ws: Workspace) -> None:
    _shapes_eps_and_gradients(ws, "LayerNorm", _ln_ref)


@CHECKS.add("RMSNorm", "weight is a registered, trainable parameter of ones (and there is no bias)")
def rmsnorm_parameters(ws: Workspace) -> None:
    _parameters(ws, "RMSNorm", {"weight": 1.0})


@CHECKS.add("RMSNorm", "equals torch's F.rms_norm (ordinary, tiny and huge inputs)")
def rmsnorm_values(ws: Workspace) -> None:
    _values(ws, "RMSNorm", _rms_ref, "RMSNorm")


@CHECKS.add("RMSNorm", "every shape, the eps argument, gradients")
def rmsnorm_shapes(ws: Workspace) -> None:
    _shapes_eps_and_gradients(ws, "RMSNorm", _rms_ref)


def _activation(ws: Workspace, name: str, references: tuple[torch.Tensor, ...], x: torch.Tensor,
                mistakes: dict[str, torch.Tensor], otherwise: str) -> None:
    out = expect_tensor(call(ws.get(name), x.clone()), x.shape, f"{name}(x)")
    if any(close(out, r, atol=1e-5) for r in references):
        return
    diagnose(out, references[0], mistakes, otherwise)


@CHECKS.add("gelu", "equals torch's GELU (exact or tanh approximation), gradients too")
def gelu_values(ws: Workspace) -> None:
    x = torch.linspace(-6, 6, 101)
    refs = (F.gelu(x), F.gelu(x, approximate="tanh"))
    _activation(ws, "gelu", refs, x, {
        "that is ReLU: GELU weights x by Phi(x), the chance a standard normal is below x": F.relu(x),
        "that is SiLU, x * sigmoid(x): GELU is x * Phi(x), Phi the normal CDF": F.silu(x),
        "close, but x * sigmoid(1.702 x) is a rough fit; use erf (or the tanh formula)": x * torch.sigmoid(1.702 * x),
        "you return Phi(x) alone: multiply by x": 0.5 * (1 + torch.erf(x / math.sqrt(2))),
        "inside erf, divide x by sqrt(2)": 0.5 * x * (1 + torch.erf(x)),
    }, "differs from torch.nn.functional.gelu")
    x = torch.randn(50, requires_grad=True)
    out = call(ws.get("gelu"), x)
    if not out.requires_grad:
        raise CheckFailed("gelu's output has no gradient: did you use .detach(), .item() or numpy?")


@CHECKS.add("silu", "equals torch's F.silu")
def silu_values(ws: Workspace) -> None:
    x = torch.linspace(-8, 8, 101)
    _activation(ws, "silu", (F.silu(x),), x, {
        "you return sigmoid(x) alone: multiply by x": torch.sigmoid(x),
        "that is GELU: SiLU is x * sigmoid(x)": F.gelu(x),
        "that is ReLU: SiLU is x * sigmoid(x)": F.relu(x),
    }, "differs from torch.nn.functional.silu")


@CHECKS.add("SwiGLU", "gate_proj, up_proj (C -> hidden) and down_proj (hidden -> C), no biases; values and gradients")
def swiglu(ws: Workspace) -> None:
    m = call(ws.get("SwiGLU"), 12, 20)
    for name, shape in (("gate_proj", (20, 12)), ("up_proj", (20, 12)), ("down_proj", (12, 20))):
        layer = getattr(m, name, None)
        if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != shape or layer.bias is not None:
            raise CheckFailed(f"self.{name} should be nn.Linear({shape[1]}, {shape[0]}, bias=False)")
    if sum(p.numel() for p in m.parameters()) != 3 * 12 * 20:
        raise CheckFailed("SwiGLU has more parameters than its three projections")
    x = torch.randn(2, 3, 12)
    out = expect_tensor(call(m, x), x.shape, "SwiGLU(x)")
    with torch.no_grad():
        gate, up, down = m.gate_proj(x), m.up_proj(x), m.down_proj
        diagnose(out, down(F.silu(gate) * up), {
            "silu goes on gate_proj's output, not up_proj's": down(gate * F.silu(up)),
            "the gate is missing: multiply silu(gate_proj(x)) by up_proj(x)": (down(F.silu(gate)), down(F.silu(up))),
            "SwiGLU uses SiLU on the gate, not GELU": down(F.gelu(gate) * up),
            "SwiGLU uses SiLU on the gate, not a sigmoid alone": down(torch.sigmoid(gate) * up),
        }, "differs from down_proj(silu(gate_proj(x)) * up_proj(x))")
    out.sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    if missing:
        raise CheckFailed(f"no gradient reaches {', '.join(missing)}: is it used in forward?")


def _residual(ws: Workspace, name: str, expected, mistake, message: str) -> None:
    x = torch.randn(2, 4, 8)
    norm, f = nn.LayerNorm(8), nn.Linear(8, 8)
    out = expect_tensor(call(ws.get(name), x, norm, f), x.shape, f"{name}(x, norm, f)")
    with torch.no_grad():
        diagnose(out, expected(x, norm, f), {message: mistake(x, norm, f),
                                             "the residual is missing: add x back": (f(norm(x)), norm(f(x)))},
                 f"differs from {'x + f(norm(x))' if name == 'pre_norm' else 'norm(x + f(x))'}")


@CHECKS.add("pre_norm", "x + f(norm(x)): the residual stream itself is never normalised")
def pre_norm_values(ws: Workspace) -> None:
    _residual(ws, "pre_norm", lambda x, n, f: x + f(n(x)), lambda x, n, f: n(x + f(x)),
              "that is Post-LN, norm(x + f(x)); Pre-LN normalises only the branch's input: x + f(norm(x))")


@CHECKS.add("post_norm", "norm(x + f(x)): normalise after adding the branch")
def post_norm_values(ws: Workspace) -> None:
    _residual(ws, "post_norm", lambda x, n, f: n(x + f(x)), lambda x, n, f: x + f(n(x)),
              "that is Pre-LN, x + f(norm(x)); Post-LN normalises the sum: norm(x + f(x))")
