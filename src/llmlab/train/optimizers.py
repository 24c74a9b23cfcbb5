"""Optimizers written out, one `step()` each: SGD (momentum, Nesterov), Adam, AdamW, Lion, Adafactor, Muon.

Every class is a `torch.optim.Optimizer`, so the loop, gradient clipping and checkpoints treat them alike.
Their state holds tensors only (even the step count), because `llmlab.common.checkpoint` stores optimizer
state as safetensors and resumes it exactly. The update rules, in the papers' notation:

    SGD        b = mu b + g;  p -= lr (g + mu b if Nesterov else b)            (Sutskever et al. 2013)
    Adam       m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr m^ / (sqrt(v^) + eps)   (Kingma & Ba 2015)
    AdamW      Adam, with the decay taken out of g: p *= 1 - lr wd                  (Loshchilov & Hutter 2019)
    Lion       p -= lr (sign(b1 m + (1-b1) g) + wd p);  m = b2 m + (1-b2) g        (Chen et al. 2023)
    Adafactor  v of a matrix kept as a row and a column mean; updates clipped to RMS d (Shazeer & Stern 2018)
    Muon       momentum, then the nearest orthogonal matrix by Newton-Schulz          (Jordan et al. 2024)

SGD, Adam and AdamW equal `torch.optim`'s step for step, and Adafactor equals `transformers`' (the tests
check). `build_optimizer(name, model, ...)` makes any of them for a llmlab `Transformer` with the usual
no-decay groups; `OPTIMIZERS` names them for `llmlab pretrain --optimizer` and `llmlab compare optimizers`.
This file does not schedule the learning rate (`optim.lr_at`) or clip gradients (the loop does).
"""

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.train.optim import make_adamw, param_groups

# Keller Jordan's quintic: a, b, c chosen so that p(x) = a x + b x^3 + c x^5 pulls every singular value in
# (0, 1] quickly into a band around 1 (about 0.7 to 1.2) instead of converging slowly to exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


class HyperparameterError(UserError, ValueError):
    """A hyperparameter out of range: a ValueError as torch's are, and one line on the command line."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise HyperparameterError(message)


def _check_betas(betas: tuple[float, float]) -> None:
    _check(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), f"betas must be two numbers in [0, 1), got {betas}")


def _base_checks(lr: float | None, weight_decay: float) -> None:
    _check(lr is None or lr >= 0.0, f"lr must be at least 0, got {lr}")
    _check(weight_decay >= 0.0, f"weight_decay must be at least 0, got {weight_decay}")


class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        _base_checks(lr, weight_decay)
        _check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
        _check(not nesterov or momentum > 0, "nesterov needs a momentum above 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                if mu:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()  # the first step's buffer is the gradient itself
                    else:
                        state["momentum_buffer"].mul_(mu).add_(g)
                    buf = state["momentum_buffer"]
                    g = g.add(buf, alpha=mu) if group["nesterov"] else buf  # Nesterov: look one step ahead
                p.add_(g, alpha=-group["lr"])
        return loss


def adam_update(p: torch.Tensor, grad: torch.Tensor, state: dict, lr: float, betas: tuple[float, float],
                eps: float, weight_decay: float, decoupled: bool) -> None:
    """One Adam(W) step on one tensor, in torch's order of operations (so the numbers agree to the bit)."""
    beta1, beta2 = betas
    if not state:
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(p)  # m: the running mean of g
        state["exp_avg_sq"] = torch.zeros_like(p)  # v: the running mean of g^2
    state["step"] += 1
    if weight_decay:
        if decoupled:
            p.mul_(1 - lr * weight_decay)  # AdamW: shrink the weights, apart from the adaptive step
        else:
            grad = grad.add(p, alpha=weight_decay)  # Adam's L2: the decay goes through v and gets rescaled
    m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"].item()
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    # bias correction: m and v start at 0, so early means are too small by (1 - beta^t)
    step_size = lr / (1 - beta1 ** t)
    denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(eps)
    p.addcdiv_(m, denom, value=-step_size)


class Adam(torch.optim.Optimizer):
    """Adam with L2 weight decay added to the gradient (`decoupled=False`), or AdamW's decoupled decay."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _base_checks(lr, weight_decay)
        _check_betas(betas)
        _check(eps >= 0.0, f"eps must be at least 0, got {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    adam_update(p, p.grad, self.state[p], group["lr"], group["betas"], group["eps"],
                                group["weight_decay"], self.decoupled)
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd each step, whatever the gradient's scale."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class Lion(torch.optim.Optimizer):
    """Lion: the sign of an interpolated momentum, so every coordinate moves by exactly lr.

    Found by program search (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"). Its updates
    are larger than Adam's (each is +-1 per coordinate), so its lr is usually 3-10x smaller than AdamW's.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        _base_checks(lr, weight_decay)
        _check_betas(betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)
                p.add_(torch.sign(m.lerp(p.grad, 1 - beta1)), alpha=-lr)  # the step uses b1 ...
                m.lerp_(p.grad, 1 - beta2)  # ... the momentum it keeps uses b2
        return loss


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.norm(2) / x.numel() ** 0.5


class Adafactor(torch.optim.Optimizer):
    """Adafactor (Shazeer & Stern 2018), as `transformers.optimization.Adafactor` computes it.

    For a matrix (R, C) the second moment is two vectors, its row means (R,) and column means (C,); their
    outer product over the overall mean rebuilds v (the best rank-1 fit in I-divergence), so the optimizer
    state costs R + C numbers instead of R * C. Other choices from the paper:
    - beta2 grows with the step, beta2_t = 1 - t^decay_rate, so early steps are not stuck with v = 0;
    - each update is divided by max(1, RMS(update) / clip_threshold): no bias correction needed;
    - `relative_step`: lr = min(1e-2, 1/sqrt(t)) (with `warmup_init`, min(1e-6 t, 1/sqrt(t))) and no lr given;
    - `scale_parameter`: the step is relative to the parameter's own RMS (at least eps[1]);
    - `beta1=None` keeps no first moment at all (the memory saving); a number adds one.
    """

    def __init__(self, params, lr: float | None = None, eps: tuple[float, float] = (1e-30, 1e-3),
                 clip_threshold: float = 1.0, decay_rate: float = -0.8, beta1: float | None = None,
                 weight_decay: float = 0.0, scale_parameter: bool = True, relative_step: bool = True,
                 warmup_init: bool = False):
        _base_checks(lr, weight_decay)
        _check(lr is None or not relative_step, "relative_step computes its own lr: give lr=None or "
                                                "relative_step=False")
        _check(lr is not None or relative_step, "Adafactor needs an lr unless relative_step=True")
        _check(not warmup_init or relative_step, "warmup_init needs relative_step=True")
        _check(beta1 is None or 0.0 <= beta1 < 1.0, f"beta1 must be None or in [0, 1), got {beta1}")
        _check(-1.0 <= decay_rate < 0.0, f"decay_rate must be in [-1, 0), got {decay_rate}")
        _check(clip_threshold > 0.0, f"clip_threshold must be above 0, got {clip_threshold}")
        super().__init__(params, dict(lr=lr, eps=tuple(eps), clip_threshold=clip_threshold, decay_rate=decay_rate,
                                      beta1=beta1, weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init))

    @staticmethod
    def _lr(group: dict, t: float, p: torch.Tensor) -> float | torch.Tensor:
        lr = group["lr"]
        if group["relative_step"]:
            lr = min(1e-6 * t if group["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
        if group["scale_parameter"]:
            lr = lr * _rms(p).clamp(min=group["eps"][1])  # a float32 tensor, rounded as transformers' is
        return lr

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            eps1 = group["eps"][0]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state, factored = p.grad, self.state[p], p.dim() >= 2
                if not state:
                    state["step"] = torch.tensor(0.0)
                    if group["beta1"] is not None:
                        state["exp_avg"] = torch.zeros_like(p)
                    if factored:
                        state["exp_avg_sq_row"] = g.new_zeros(g.shape[:-1])  # (..., R)
                        state["exp_avg_sq_col"] = g.new_zeros(g.shape[:-2] + g.shape[-1:])  # (..., C)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                lr = self._lr(group, t, p)
                beta2t = 1.0 - t ** group["decay_rate"]
                sq = g * g + eps1
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(sq.mean(dim=-1), alpha=1 - beta2t)
                    col.mul_(beta2t).add_(sq.mean(dim=-2), alpha=1 - beta2t)
                    # 1/sqrt(v) ~ 1/sqrt(row_r / mean(row)) * 1/sqrt(col_c): (..., R, 1) * (..., 1, C)
                    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                    update = r_factor * col.unsqueeze(-2).rsqrt() * g
                else:
                    state["exp_avg_sq"].mul_(beta2t).add_(sq, alpha=1 - beta2t)
                    update = state["exp_avg_sq"].rsqrt() * g
                update.div_((_rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                if group["beta1"] is not None:
                    update = state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
                if group["weight_decay"]:
                    p.add_(p, alpha=-group["weight_decay"] * lr)
                p.add_(-update)
        return loss


def newton_schulz(G: torch.Tensor, steps: int = 5, eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately U V^T for G = U S V^T: G with every singular value pushed towards 1.

    X <- a X + b (X X^T) X + c (X X^T)^2 X applies p(s) = a s + b s^3 + c s^5 to each singular value s. After
    scaling G to unit Frobenius norm every s is in (0, 1]; five steps of Keller Jordan's coefficients land them
    in roughly [0.7, 1.2] (not exactly 1: a fast rough orthogonalisation is what Muon needs). The iteration
    runs on the wide orientation, so X X^T is the smaller Gram matrix. It runs in `dtype`: by default bf16 on
    GPUs, as in Muon, and float32 on CPUs.
    G may also be a stack (..., R, C) of same-shaped matrices, each orthogonalised on its own: one batched
    matmul for all of them instead of one small matmul each.
    """
    if G.dim() < 2:
        raise ValueError(f"newton_schulz orthogonalises matrices; got a tensor of shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype or (torch.bfloat16 if G.is_cuda else torch.float32))
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT  # (..., C, R): rows <= columns
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + eps)  # each matrix to unit Frobenius norm
    for _ in range(steps):
        A = X @ X.mT  # (..., rows, rows)
        X = a * X + (b * A + c * A @ A) @ X
    return (X.mT if tall else X).to(G.dtype)


MUON_SCALES = {
    # Liu et al. 2025 ("Muon is Scalable for LLM Training"): 0.2 sqrt(max(R, C)) gives the update the RMS
    # AdamW's has, so one lr and one schedule serve the Muon and the AdamW groups alike
    "match_adamw": lambda rows, cols: 0.2 * math.sqrt(max(rows, cols)),
    # Keller Jordan's: sqrt(max(1, R / C)); then Muon wants its own, larger lr (about 0.02)
    "spectral": lambda rows, cols: math.sqrt(max(1.0, rows / cols)),
}


# the dtype Newton-Schulz runs in; "auto": bf16 on GPUs, float32 on CPUs (see newton_schulz)
NS_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16}


class Muon(torch.optim.Optimizer):
    """Muon: SGD-momentum whose update for each hidden matrix is orthogonalised by Newton-Schulz.

    Groups with `"muon": True` hold 2-D hidden weights and take the Muon step; the others (embeddings, norms,
    biases, the output head) take AdamW's, as in Keller Jordan's MuonWithAuxAdam. Build the groups for a
    llmlab Transformer with `muon_param_groups`. https://kellerjordan.github.io/posts/muon/
    """

    def __init__(self, params, lr: float = 3e-3, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 scale: str = "match_adamw", ns_dtype: str = "auto"):
        _base_checks(lr, weight_decay)
        _check_betas(betas)
        _check(0.0 <= momentum < 1.0, f"momentum must be in [0, 1), got {momentum}")
        _check(ns_steps >= 1, f"ns_steps must be at least 1, got {ns_steps}")
        _check(scale in MUON_SCALES, f"scale must be one of {', '.join(MUON_SCALES)}, got {scale!r}")
        _check(ns_dtype in NS_DTYPES, f"ns_dtype must be one of {', '.join(NS_DTYPES)}, got {ns_dtype!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay, betas=tuple(betas), eps=eps, scale=scale,
                                      ns_dtype=ns_dtype, muon=True))
        for group in self.param_groups:
            bad = [tuple(p.shape) for p in group["params"] if group["muon"] and p.dim() != 2]
            _check(not bad, f"Muon orthogonalises matrices only; a muon group holds shapes {bad[:3]}: put them in "
                            "a group with 'muon': False (AdamW)")

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = torch.enable_grad()(closure)() if closure is not None else None
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            by_shape: dict[tuple, list] = {}  # same-shaped updates are orthogonalised together, in one stack
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not group["muon"]:
                    adam_update(p, p.grad, state, lr, group["betas"], group["eps"], wd, decoupled=True)
                    continue
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append((p, update))
            for pairs in by_shape.values():
                params, updates = zip(*pairs, strict=True)
                orthogonal = newton_schulz(torch.stack(updates), group["ns_steps"],  # (n, R, C)
                                           dtype=NS_DTYPES[group.get("ns_dtype", "auto")])
                for p, update in zip(params, orthogonal, strict=True):
                    p.mul_(1 - lr * wd)
                    p.add_(update, alpha=-lr * MUON_SCALES[group["scale"]](*p.shape))
        return loss


def muon_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Three groups: the blocks' 2-D weights (Muon, decayed); other matrices, e.g. an untied head (AdamW,
    decayed); embeddings, norms and biases (AdamW, not decayed). A tied head is the embedding: AdamW."""
    hidden = {id(p) for block in model.blocks for p in block.parameters() if p.dim() == 2}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    groups = {"muon": [], "decay": [], "no_decay": []}
    seen = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        kind = "muon" if id(p) in hidden - embeddings else "decay" if p.dim() >= 2 and id(p) not in embeddings \
            else "no_decay"
        groups[kind].append(p)
    return [{"params": groups["muon"], "muon": True, "weight_decay": weight_decay},
            {"params": groups["decay"], "muon": False, "weight_decay": weight_decay},
            {"params": groups["no_decay"], "muon": False, "weight_decay": 0.0}]


# name -> (model, lr, weight_decay, device_type) -> optimizer. Adam and SGD take no decay here: theirs is L2,
# which Adam rescales away and SGD at its large lr turns into a heavy shrink; the others decay decoupled.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    # torch's AdamW, bit-identical to `AdamW` above on the CPU (tested), with a fused kernel on GPUs
    "adamw": lambda model, lr, wd, device_type: make_adamw(model, lr, wd, device_type=device_type),
    "adam": lambda model, lr, wd, device_type: Adam(param_groups(model, 0.0), lr=lr, betas=(0.9, 0.95)),
    "sgd": lambda model, lr, wd, device_type: SGD(param_groups(model, 0.0), lr=lr, momentum=0.9, nesterov=True),
    "lion": lambda model, lr, wd, device_type: Lion(param_groups(model, wd), lr=lr, betas=(0.9, 0.99)),
    # an external schedule sets the lr: no relative step, no parameter scale; no first moment (the memory saving)
    "adafactor": lambda model, lr, wd, device_type: Adafactor(param_groups(model, wd), lr=lr, relative_step=False,
                                                              scale_parameter=False),
    "muon": lambda model, lr, wd, device_type: Muon(muon_param_groups(model, wd), lr=lr),
}


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.1,
                    device_type: str = "cpu") -> torch.optim.Optimizer:
    """The optimizer `name` (a key of OPTIMIZERS) over `model`'s parameters, in its usual groups."""
    if name not in OPTIMIZERS:
        raise UserError(f"optimizer: unknown {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, lr, weight_decay, device_type)
