"""Lab: optimizers, the checks. Each optimizer runs a few steps on parameters of several shapes with fixed
random gradients, against torch.optim.SGD and torch.optim.Adam, and against llmlab's Lion, newton_schulz and
Muon (llmlab.train.optimizers). Typical mistakes (an averaged SGD buffer, no bias correction, Lion's betas
swapped, Muon without its orthogonalisation or its shape scale) are computed by hand and named when matched.
"""

import math

import torch

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.train import optimizers as llmlab

CHECKS = CheckList()


def _grads(shapes, steps: int, scale: float = 1.0, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) * scale for s in shapes] for _ in range(steps)]


def _start(shapes) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(s) for s in shapes]


def _run(make, shapes, grads, lr_after: dict | None = None) -> torch.Tensor:
    """Parameters of `shapes` after one `make(params)` step per entry of `grads` (a parameter past the end of
    a step's gradients gets none); `lr_after` {step: factor} multiplies every group's lr after that step."""
    params = [torch.nn.Parameter(p) for p in _start(shapes)]
    opt = make(params)
    for t, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads, strict=False):
            p.grad = g.clone()
        opt.step()
        for group in opt.param_groups:
            group["lr"] *= (lr_after or {}).get(t, 1.0)
    out = torch.cat([p.detach().flatten() for p in params])
    if not torch.isfinite(out).all():
        raise CheckFailed("NaN or inf after a step: a division by zero? (bias correction at t = 0, c / |c| "
                          "for a zero entry, or an unnormalised Newton-Schulz)")
    return out


def _by_hand(shapes, grads, update) -> torch.Tensor:
    """`_run` with the rule written out: p = update(p, g, state, t) for every parameter at t = 1, 2, ..."""
    params, states = _start(shapes), [{} for _ in shapes]
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            params[i] = update(params[i], g, states[i], t)
    return torch.cat([p.flatten() for p in params])


def _mine(ws, name, **kwargs):
    return lambda params: call(ws.get(name), params, **kwargs)


# ---- SGD -------------------------------------------------------------------------------------------------

def _sgd(lr, mu=0.0, nesterov=False, wd=0.0, average=False, decoupled=False):
    """SGD with one knob per typical mistake: an averaged buffer (`average`: started at "zeros" or at "g"),
    decoupled instead of L2 decay."""
    def update(p, g, s, t):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        if mu:
            if "b" not in s:
                s["b"] = (1 - mu) * g if average == "zeros" else g
            else:
                s["b"] = mu * s["b"] + ((1 - mu) * g if average else g)
            g = g + mu * s["b"] if nesterov else s["b"]
        return p - lr * g
    return update


@CHECKS.add("SGD", "plain SGD and momentum (b = mu b + g) equal torch.optim.SGD")
def sgd_momentum(ws: Workspace) -> None:
    shapes = [(4, 3), (5,)]
    grads = _grads(shapes, 5)
    for kw in (dict(lr=0.1), dict(lr=0.1, momentum=0.9)):
        mu = kw.get("momentum", 0.0)
        expected = _run(lambda p, kw=kw: torch.optim.SGD(p, **kw), shapes, grads)
        diagnose(_run(_mine(ws, "SGD", **kw), shapes, grads), expected, {
            "the parameters moved up the gradient: p = p - lr * g": _by_hand(shapes, grads, _sgd(-0.1, mu)),
            "momentum=0.9 changed nothing: keep a buffer b = mu * b + g per parameter, in self.state[p]":
                _by_hand(shapes, grads, _sgd(0.1)),
            "your buffer is an average, b = mu * b + (1 - mu) * g: torch's SGD adds the whole gradient, "
            "b = mu * b + g": (_by_hand(shapes, grads, _sgd(0.1, mu, average="zeros")),
                               _by_hand(shapes, grads, _sgd(0.1, mu, average="g"))),
            "you take Nesterov's step with nesterov=False: step by b": _by_hand(shapes, grads, _sgd(0.1, mu, True)),
        }, f"differs from torch.optim.SGD({', '.join(f'{k}={v}' for k, v in kw.items())})")


@CHECKS.add("SGD", "nesterov=True, weight decay (L2), param groups, a parameter without a gradient")
def sgd_nesterov_decay(ws: Workspace) -> None:
    shapes = [(3, 3), (2,), (4,)]
    grads = _grads(shapes[:2], 5)  # the third parameter never gets a gradient
    for kw in (dict(lr=0.05, momentum=0.9, nesterov=True), dict(lr=0.05, momentum=0.5, weight_decay=0.1)):
        lr, mu, nesterov, wd = kw["lr"], kw["momentum"], kw.get("nesterov", False), kw.get("weight_decay", 0.0)

        def groups(make, kw=kw):
            return lambda p: make([{"params": [p[0], p[2]], **kw}, {"params": [p[1]], **kw, "lr": 0.02}])

        out = _run(groups(lambda g: call(ws.get("SGD"), g)), shapes, grads)
        expected = _run(groups(lambda g: torch.optim.SGD(g)), shapes, grads)
        if not close(out[-4:], expected[-4:]):
            raise CheckFailed("a parameter without a gradient changed: skip p when p.grad is None")
        hand = {"shapes": [shapes[0]], "grads": [g[:1] for g in grads]}  # the first group's matrix
        diagnose(out[:9], expected[:9], {
            "nesterov=True changed nothing: step by g + mu * b": _by_hand(**hand, update=_sgd(lr, mu, False, wd)),
            "weight_decay changed nothing: add weight_decay * p to the gradient (L2, as torch.optim.SGD)":
                _by_hand(**hand, update=_sgd(lr, mu, nesterov)),
            "your decay is decoupled (AdamW's p *= 1 - lr * wd): SGD's is L2, weight_decay * p added to g, so "
            "the momentum carries it": _by_hand(**hand, update=_sgd(lr, mu, nesterov, wd, decoupled=True)),
        }, f"differs from torch.optim.SGD({', '.join(f'{k}={v}' for k, v in kw.items())})")
        if not close(out, expected):
            raise CheckFailed("the second param group is wrong: read lr, momentum and the rest from each group")


# ---- Adam ------------------------------------------------------------------------------------------------

def _adam(lr, betas=(0.9, 0.999), eps=1e-8, correct="mv", eps_at="after", average="mv"):
    """Adam with one knob per typical mistake: which moments are bias-corrected (`correct`) and averaged
    (`average`, else summed), where eps goes."""
    b1, b2 = betas

    def update(p, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1 if "m" in average else 1.0) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2 if "v" in average else 1.0) * g * g
        c1, c2 = 1 - b1 ** t if "m" in correct else 1.0, 1 - b2 ** t if "v" in correct else 1.0
        denom = {"after": (s["v"] / c2).sqrt() + eps, "inside": (s["v"] / c2 + eps).sqrt(),
                 "before": (s["v"].sqrt() + eps) / math.sqrt(c2)}[eps_at]
        return p - lr * (s["m"] / c1) / denom
    return update


@CHECKS.add("Adam", "five steps equal torch.optim.Adam (moments, bias correction)")
def adam_steps(ws: Workspace) -> None:
    shapes = [(4, 3), (5,)]
    grads = _grads(shapes, 5)
    diagnose(_run(_mine(ws, "Adam", lr=1e-2), shapes, grads), _run(lambda p: torch.optim.Adam(p, lr=1e-2), shapes,
                                                                    grads), {
        "no bias correction: divide m by 1 - beta1^t and v by 1 - beta2^t": _by_hand(shapes, grads,
                                                                                      _adam(1e-2, correct="")),
        "no bias correction of m: divide it by 1 - beta1^t": _by_hand(shapes, grads, _adam(1e-2, correct="v")),
        "no bias correction of v: divide it by 1 - beta2^t": _by_hand(shapes, grads, _adam(1e-2, correct="m")),
        "m and v are sums, not averages: m = beta1 * m + (1 - beta1) * g, v likewise with g^2":
            tuple(_by_hand(shapes, grads, _adam(1e-2, average=a)) for a in ("", "m", "v")),
        "betas swapped: beta1 (0.9) is for m, beta2 (0.999) for v":
            _run(lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.999, 0.9)), shapes, grads),
    }, "differs from torch.optim.Adam")


@CHECKS.add("Adam", "tiny (1e-6) and huge (1e4) gradients, 0-d parameters, a changed lr, a missing gradient")
def adam_edges(ws: Workspace) -> None:
    shapes = [(), (1,), (3, 2)]
    for scale in (1e-6, 1e4):
        grads = _grads(shapes, 4, scale)
        diagnose(_run(_mine(ws, "Adam", lr=1e-2), shapes, grads),
                 _run(lambda p: torch.optim.Adam(p, lr=1e-2), shapes, grads), {
            "eps belongs outside the square root, sqrt(v_hat) + eps: inside it, tiny gradients get tiny steps":
                _by_hand(shapes, grads, _adam(1e-2, eps_at="inside")),
            "eps is added before the bias correction of v: add it to sqrt(v_hat), as torch does":
                _by_hand(shapes, grads, _adam(1e-2, eps_at="before")),
        }, f"wrong for gradients of about {scale:g}")
    shapes, grads = [(3, 2), (4,)], _grads([(3, 2)], 4)  # the second parameter never gets a gradient
    out = _run(_mine(ws, "Adam", lr=1e-2), shapes, grads, {1: 0.5})
    expected = _run(lambda p: torch.optim.Adam(p, lr=1e-2), shapes, grads, {1: 0.5})
    if not close(out[-4:], expected[-4:]):
        raise CheckFailed("a parameter without a gradient changed: skip p when p.grad is None")
    diagnose(out, expected, {"your step ignores changes of group['lr']: read the lr from each group inside "
                             "step(), a schedule sets it every step":
                             _run(lambda p: torch.optim.Adam(p, lr=1e-2), shapes, grads)},
             "wrong once the lr changes between steps")


# ---- Lion ------------------------------------------------------------------------------------------------

def _lion(lr, betas=(0.9, 0.99), wd=0.0, order="step first", signed=True, decay="decoupled"):
    """Lion with one knob per typical mistake: the momentum updated before the step, no sign, the decay."""
    b1, b2 = betas

    def update(p, g, s, t):
        m = s.get("m", torch.zeros_like(g))
        if order == "momentum first":
            m = b2 * m + (1 - b2) * g
        c = b1 * m + (1 - b1) * g
        p = {"decoupled": p * (1 - lr * wd), "without lr": p * (1 - wd), "inside": p}[decay]
        step = c + wd * p if decay == "inside" else c
        p = p - lr * (step.sign() if signed else step)
        s["m"] = m if order == "momentum first" else b2 * m + (1 - b2) * g
        return p
    return update


@CHECKS.add("Lion", "five steps equal the published rule (llmlab's Lion), with weight decay")
def lion_steps(ws: Workspace) -> None:
    shapes, lr, wd = [(4, 3), (5,)], 1e-2, 0.5
    m = 1 - 0.99 ** 10  # the momentum after ten gradients of 1; then g / m from -10 to -7, so that the sign
    crafted = [[torch.ones(s) for s in shapes]] * 10 + [  # of the step depends on using m before its update
        [torch.linspace(-10, -7, math.prod(s)).view(s) * m for s in shapes]]
    for grads in (_grads(shapes, 5), crafted):
        _lion_against_llmlab(ws, shapes, grads, lr, wd)


def _lion_against_llmlab(ws, shapes, grads, lr, wd):
    diagnose(_run(_mine(ws, "Lion", lr=lr, weight_decay=wd), shapes, grads),
             _run(lambda p: llmlab.Lion(p, lr=lr, weight_decay=wd), shapes, grads), {
        "betas swapped: the step interpolates with beta1 (0.9), the momentum kept uses beta2 (0.99)":
            _run(lambda p: llmlab.Lion(p, lr=lr, betas=(0.99, 0.9), weight_decay=wd), shapes, grads),
        "you update the momentum before the step: the step uses the old m (interpolated with g by beta1), "
        "then m moves with beta2": _by_hand(shapes, grads, _lion(lr, wd=wd, order="momentum first")),
        "no sign: Lion steps by lr * sign(beta1 * m + (1 - beta1) * g)": _by_hand(shapes, grads, _lion(
            lr, wd=wd, signed=False)),
        "the decay is not multiplied by lr: p *= 1 - lr * weight_decay": _by_hand(shapes, grads, _lion(
            lr, wd=wd, decay="without lr")),
        "the decay is inside the sign: decoupled, p *= 1 - lr * weight_decay, outside it": _by_hand(
            shapes, grads, _lion(lr, wd=wd, decay="inside")),
        "no weight decay: p *= 1 - lr * weight_decay each step": _by_hand(shapes, grads, _lion(lr)),
    }, "differs from Lion's rule, p -= lr * sign(beta1 m + (1 - beta1) g); m = beta2 m + (1 - beta2) g")


@CHECKS.add("Lion", "every entry moves by exactly lr (0 for a zero gradient); groups, a missing gradient")
def lion_edges(ws: Workspace) -> None:
    shapes = [(3, 3), (6,), (2,)]
    grads = _grads(shapes[:2], 3, 1e-8)
    grads[0][1][:3] = 0.0  # m = 0 and g = 0: sign(0) = 0, no move

    def groups(make):
        return lambda p: make([{"params": [p[0], p[2]], "lr": 1e-2}, {"params": [p[1]], "lr": 3e-3}])

    out = _run(groups(lambda g: call(ws.get("Lion"), g)), shapes, grads)
    expected = _run(groups(llmlab.Lion), shapes, grads)
    if not close(out[-2:], expected[-2:]):
        raise CheckFailed("a parameter without a gradient changed: skip p when p.grad is None")
    if not close(out, expected):
        raise CheckFailed("for tiny gradients (1e-8) with two param groups, your steps are not exactly lr per "
                          "entry: use the sign, and each group's own lr")


# ---- newton_schulz ---------------------------------------------------------------------------------------

def _ns(G, steps=5, coefficients=llmlab.NS_COEFFICIENTS, normalise=True, right=False):
    """Newton-Schulz with one knob per typical mistake: no normalisation, the polynomial on the right."""
    a, b, c = coefficients
    X = G / (G.norm() + 1e-7) if normalise else G
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (X @ (b * A + c * A @ A) if right else (b * A + c * A @ A) @ X)
    return X


def _orthogonalised(ws, G, steps=5):
    saved = G.clone()
    out = call(ws.get("newton_schulz"), G, steps=steps)
    if isinstance(out, torch.Tensor) and out.shape == G.shape and not torch.isfinite(out).all():
        S = torch.randn(6, 6)
        S = S + S.T  # symmetric: X A = A X, so only the normalisation matters
        if close(call(ws.get("newton_schulz"), S), llmlab.newton_schulz(S), atol=1e-4):
            raise CheckFailed("NaN or inf, though right for a symmetric G: multiply from the left, X = a X + "
                              "(b A + c A A) X with A = X X^T")
        raise CheckFailed("NaN or inf: scale G to unit Frobenius norm first (G / (G.norm() + 1e-7)); with "
                          "singular values above 1 the quintic runs away")
    if not torch.equal(G, saved):
        raise CheckFailed("newton_schulz changed G in place: compute a new X (X = G / norm, not G /= norm)")
    return expect_tensor(out, tuple(G.shape), f"newton_schulz of a {tuple(G.shape)} matrix")


@CHECKS.add("newton_schulz", "equals llmlab's newton_schulz for square, wide and tall matrices, and any steps")
def ns_values(ws: Workspace) -> None:
    for shape, steps in (((8, 8), 5), ((6, 10), 5), ((12, 5), 5), ((7, 7), 3)):
        G = torch.randn(shape) * 3
        out = _orthogonalised(ws, G, steps)
        a, b, c = llmlab.NS_COEFFICIENTS
        diagnose(out, llmlab.newton_schulz(G, steps), {
            "not normalised: scale G to unit Frobenius norm first": _ns(G, steps, normalise=False),
            "the coefficients are in the wrong order: a X + (b A + c A A) X with (a, b, c) = NS_COEFFICIENTS":
                (_ns(G, steps, (c, b, a)), _ns(G, steps, (a, c, b))),
            "multiply from the left: X = a X + (b A + c A A) X with A = X X^T":
                lambda G=G, steps=steps: _ns(G, steps, right=True),
            f"the steps argument is ignored: steps={steps} asked for": _ns(G, 5 if steps != 5 else 3),
        }, f"differs from llmlab's newton_schulz for a {shape} matrix with steps={steps}", atol=1e-4)


@CHECKS.add("newton_schulz", "every singular value near 1; a row, a column and float64 matrices")
def ns_orthogonal(ws: Workspace) -> None:
    G = torch.randn(32, 16)
    s = torch.linalg.svdvals(_orthogonalised(ws, G))
    if not (s.min() > 0.6 and s.max() < 1.3):
        raise CheckFailed(f"singular values from {s.min():.3f} to {s.max():.3f}; five steps should put every "
                          "one of a random matrix's in about [0.7, 1.2]")
    for G in (torch.randn(1, 7), torch.randn(7, 1), torch.randn(5, 9, dtype=torch.float64)):
        out = _orthogonalised(ws, G)
        if out.dtype != G.dtype:
            raise CheckFailed(f"returned {out.dtype} for a {G.dtype} matrix: return G's dtype")
        if not close(out, llmlab.newton_schulz(G), atol=1e-4):
            raise CheckFailed(f"wrong for a {tuple(G.shape)} matrix")


# ---- Muon ------------------------------------------------------------------------------------------------

def _muon(lr=0.02, mu=0.95, nesterov=True, wd=0.0, orthogonalise=True, scale="spectral", order="momentum first",
          decay="decoupled"):
    """Muon with one knob per typical mistake: no Newton-Schulz, another shape scale, orthogonalising the
    gradient before the momentum, the decay through the gradient or without lr."""
    scales = {"spectral": lambda R, C: max(1, R / C) ** 0.5, "none": lambda R, C: 1.0,
              "no max": lambda R, C: (R / C) ** 0.5, "inverted": lambda R, C: max(1, C / R) ** 0.5}

    def update(p, g, s, t):
        if decay == "l2":
            g = g + wd * p
        if order == "orthogonalise first":
            g = llmlab.newton_schulz(g)
        s["b"] = mu * s.get("b", torch.zeros_like(g)) + g
        u = g + mu * s["b"] if nesterov else s["b"]
        if orthogonalise and order == "momentum first":
            u = llmlab.newton_schulz(u)
        p = p * {"decoupled": 1 - lr * wd, "without lr": 1 - wd, "l2": 1.0}[decay]
        return p - lr * scales[scale](*p.shape) * u
    return update


def _muon_mistakes(shapes, grads, **kw) -> dict:
    return {
        "your update is momentum only: orthogonalise it with newton_schulz": _by_hand(
            shapes, grads, _muon(**kw, orthogonalise=False)),
        "no shape scale: multiply the step by sqrt(max(1, rows / cols))": _by_hand(shapes, grads, _muon(
            **kw, scale="none")),
        "the scale is sqrt(max(1, rows / cols)): 1 for a wide matrix, not sqrt(rows / cols)": _by_hand(
            shapes, grads, _muon(**kw, scale="no max")),
        "the scale is sqrt(max(1, rows / cols)), rows over columns": _by_hand(shapes, grads, _muon(
            **kw, scale="inverted")),
        "you orthogonalise the gradient, then take momentum: take momentum first, then orthogonalise the update":
            _by_hand(shapes, grads, _muon(**kw, order="orthogonalise first")),
        f"nesterov={kw['nesterov']} is ignored: the update is {'g + momentum * b' if kw['nesterov'] else 'b'}":
            _by_hand(shapes, grads, _muon(**{**kw, "nesterov": not kw["nesterov"]})),
        "the decay goes through the gradient: decouple it, p *= 1 - lr * weight_decay": _by_hand(
            shapes, grads, _muon(**kw, decay="l2")) if kw["wd"] else None,
        "the decay is not multiplied by lr: p *= 1 - lr * weight_decay": _by_hand(
            shapes, grads, _muon(**kw, decay="without lr")) if kw["wd"] else None,
    }


def _muon_check(ws, shapes, steps, **kw) -> None:
    grads = _grads(shapes, steps)
    args = dict(lr=kw["lr"], nesterov=kw["nesterov"], weight_decay=kw["wd"])
    mistakes = {k: v for k, v in _muon_mistakes(shapes, grads, mu=0.95, **kw).items() if v is not None}
    G = torch.randn(6, 4)
    hint = "" if close(call(ws.get("newton_schulz"), G), llmlab.newton_schulz(G), atol=1e-4) else \
        " (your newton_schulz does not pass its checks yet: fix it first)"
    diagnose(_run(_mine(ws, "Muon", **args), shapes, grads),
             _run(lambda p: llmlab.Muon(p, scale="spectral", **args), shapes, grads), mistakes,
             f"differs from llmlab's Muon with {args}{hint}", atol=1e-5)


@CHECKS.add("Muon", "four steps on square, tall and wide matrices equal llmlab's Muon (Nesterov)")
def muon_steps(ws: Workspace) -> None:
    _muon_check(ws, [(8, 8), (12, 4), (4, 12)], 4, lr=0.02, nesterov=True, wd=0.0)


@CHECKS.add("Muon", "nesterov=False and decoupled weight decay")
def muon_options(ws: Workspace) -> None:
    _muon_check(ws, [(6, 6), (10, 3)], 4, lr=0.05, nesterov=False, wd=0.0)
    _muon_check(ws, [(6, 6), (10, 3)], 3, lr=0.05, nesterov=True, wd=0.5)

