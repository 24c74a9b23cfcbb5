"""Scaling laws: fit how loss falls with model size N and training tokens D, and where compute is best spent.

Two of Chinchilla's three approaches (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"):

- **Approach 3**, the parametric law L(N, D) = E + A / N^alpha + B / D^beta. Fitted as the paper's appendix D.2
  does: minimise the Huber loss (delta 1e-3) between the predicted and the measured *log* loss, with the
  prediction written as a log-sum-exp, log L = LSE(a - alpha log N, b - beta log D, e) where A = e^a, B = e^b,
  E = e^e (positive by construction, and smooth in every parameter), by L-BFGS from the best points of a grid
  of initialisations. Bootstrap intervals come from refitting on runs drawn with replacement (Besiroglu et al.
  2024, "Chinchilla Scaling: A replication attempt", showed how far a point estimate alone can mislead).
- **Approach 2**, IsoFLOP profiles: per compute budget C, a parabola of loss against log N; its vertex is the
  compute-optimal size N_opt(C), and a line through log N_opt against log C gives N_opt ~ k * C^a.

Compute is C = 6 N D (forward 2 N D, backward 4 N D FLOPs). N here is the **non-embedding** parameter count,
as Kaplan et al. 2020 (section 2.1) count it: an embedding lookup costs no FLOPs and its size follows the
vocabulary rather than the model's capacity, so counting it bends the laws at small sizes, where the table is
most of the model. A tied output head does cost 2 * n_embd * vocab FLOPs per token that 6ND leaves out;
`llmlab.models.gpt.flops_per_token` counts it, and the sweep's report shows both.

This file fits numbers; it trains nothing (the `scaling sweep` recipe does) and plots nothing (`scaling_plot`).
"""

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HUBER_DELTA = 1e-3  # Chinchilla's: residuals of log loss are ~1e-2, so this is nearly L1, robust to outliers
# Chinchilla's grid of initialisations (appendix D.2): every combination is scored, L-BFGS starts from the best
GRID = {"a": np.arange(0, 30, 5.0), "b": np.arange(0, 30, 5.0), "e": np.arange(-1, 1.5, 0.5),
        "alpha": np.arange(0, 2.5, 0.5), "beta": np.arange(0, 2.5, 0.5)}


def non_embedding_params(model: nn.Module) -> int:
    """Distinct parameters outside embedding tables (a tied output head is the embedding, so it is left out)."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in embeddings:
            total += p.numel()
        seen.add(id(p))
    return total


def train_flops(n: float, d: float) -> float:
    """C = 6 N D: two FLOPs per weight per token forward, four backward."""
    return 6.0 * n * d


@dataclass
class LawFit:
    """L(N, D) = E + A / N^alpha + B / D^beta, and the Huber objective it reached."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float

    def predict(self, n, d):
        """Loss at N parameters and D tokens (numbers or numpy arrays)."""
        # in logs: a degenerate fit (alpha ~ 30, A ~ 1e140) would overflow N^alpha
        with np.errstate(divide="ignore"):
            a, b = np.log(self.A), np.log(self.B)
        return self.E + np.exp(a - self.alpha * np.log(n)) + np.exp(b - self.beta * np.log(d))

    def optimal(self, c):
        """The (N, D) minimising L under 6 N D = C: N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6) / N_opt,
        with G = (alpha A / (beta B))^(1/(alpha+beta)) (Chinchilla, equation 4)."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        n = g * np.power(np.asarray(c, dtype=float) / 6, b / (a + b))
        return n, np.asarray(c, dtype=float) / 6 / n

    def to_dict(self) -> dict:
        return asdict(self)


def _log_pred(theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """log L-hat = LSE(a - alpha log N, b - beta log D, e) for theta = (a, b, e, alpha, beta) of shape (..., 5)."""
    a, b, e, alpha, beta = theta.unbind(-1)
    terms = torch.stack([a[..., None] - alpha[..., None] * log_n, b[..., None] - beta[..., None] * log_d,
                         e[..., None].expand(*e.shape, log_n.shape[-1])], dim=-1)  # (..., runs, 3)
    return torch.logsumexp(terms, dim=-1)  # (..., runs)


def _logs(n, d, loss) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(np.log(np.asarray(v, dtype=float)), dtype=torch.float64) for v in (n, d, loss))


def _objective(theta: torch.Tensor, log_n, log_d, log_l, delta: float, weight=None) -> torch.Tensor:
    """weight (K, runs): how many times each run counts in problem k (a bootstrap resample); None: once."""
    pred = _log_pred(theta, log_n, log_d)
    per_run = F.huber_loss(pred, log_l.expand_as(pred), delta=delta, reduction="none")
    return (per_run if weight is None else per_run * weight).sum(-1)


def huber_objective(theta: torch.Tensor, n, d, loss, delta: float = HUBER_DELTA) -> torch.Tensor:
    """Sum over runs of Huber_delta(log L-hat - log L); theta (5,) or a batch (K, 5) -> scalar or (K,)."""
    return _objective(theta, *_logs(n, d, loss), delta)


def lbfgs(f, x0: torch.Tensor, *, max_iter: int = 300, history: int = 10, tol_grad: float = 1e-10,
          tol_change: float = 1e-14) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise K independent problems at once by L-BFGS (Nocedal & Wright, algorithm 7.4), lock-step.

    f(x) maps (K, P) to (K,) with problem k's value depending only on row k, so the gradient of f(x).sum() is
    every problem's own gradient. Each problem keeps its own history, step length (backtracking to the Armijo
    condition) and convergence test; a finished problem stops moving. One batched step costs what one
    problem's costs, where torch.optim.LBFGS would run the K problems one after another (~100 small tensor
    operations per iteration each). Returns (x, f(x)).
    """
    def value_grad(x):
        x = x.detach().requires_grad_(True)
        v = f(x)
        (g,) = torch.autograd.grad(v.sum(), x)
        return v.detach(), g

    x = x0.detach().clone()
    v, g = value_grad(x)
    S, Y, R = [], [], []  # the last `history` steps, gradient changes and 1/(s.y) (0 drops a pair), each (K, ...)
    active = torch.isfinite(v)
    for it in range(max_iter):
        q, alphas = g.clone(), []
        for s, y, rho in zip(reversed(S), reversed(Y), reversed(R), strict=True):  # newest first
            alpha = rho * (s * q).sum(-1)  # (K,)
            q -= alpha[:, None] * y
            alphas.append(alpha)
        gamma = torch.ones_like(v)
        if S:  # scale by the newest curvature, where it is valid
            sy, yy = (S[-1] * Y[-1]).sum(-1), (Y[-1] * Y[-1]).sum(-1)
            gamma = torch.where(R[-1] > 0, sy / yy.clamp_min(1e-300), gamma)
        r = gamma[:, None] * q
        for s, y, rho, alpha in zip(S, Y, R, reversed(alphas), strict=True):  # oldest first
            r += s * (alpha - rho * (y * r).sum(-1))[:, None]
        p = -r
        slope = (p * g).sum(-1)
        bad = ~(slope < 0)  # not a descent direction (a stale history): fall back to steepest descent
        p[bad], slope[bad] = -g[bad], -(g[bad] ** 2).sum(-1)
        t = torch.ones_like(v) if it else (1 / g.norm(dim=-1).clamp_min(1e-12)).clamp(max=1.0)
        x_new, v_new = x.clone(), v.clone()
        todo = active.clone()
        for _ in range(40):  # halve each problem's step until it decreases enough (Armijo, c1 = 1e-4)
            trial = x + t[:, None] * p
            with torch.no_grad():
                v_trial = f(trial)
            ok = todo & torch.isfinite(v_trial) & (v_trial <= v + 1e-4 * t * slope)
            x_new[ok], v_new[ok] = trial[ok], v_trial[ok]
            todo &= ~ok
            if not todo.any():
                break
            t = torch.where(todo, t / 2, t)
        moved = active & ~todo  # a problem whose line search failed has converged as far as float64 allows
        _, g_new = value_grad(x_new)
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(-1)
        R.append(torch.where(moved & (sy > 1e-300), 1 / sy.clamp_min(1e-300), torch.zeros_like(sy)))
        S.append(s)
        Y.append(y)
        del S[:-history], Y[:-history], R[:-history]
        change = (v - v_new).abs()
        x, v, g = torch.where(active[:, None], x_new, x), torch.where(active, v_new, v), \
            torch.where(active[:, None], g_new, g)
        active &= moved & (g.abs().amax(-1) > tol_grad) & (change > tol_change * v.abs().clamp_min(1e-300))
        if not active.any():
            break
    return x, v


def grid_starts(n, d, loss, top_k: int = 8, delta: float = HUBER_DELTA) -> np.ndarray:
    """The `top_k` points of Chinchilla's grid with the lowest objective, (top_k, 5) as (a, b, e, alpha, beta).

    Scoring all 4,500 points is one batched evaluation; running L-BFGS from each would take minutes, and the
    starts far from the best basins end in the same few optima or worse ones.
    """
    grid = np.array(list(itertools.product(*GRID.values())))  # (4500, 5)
    with torch.no_grad():
        scores = huber_objective(torch.tensor(grid), n, d, loss, delta).numpy()
    return grid[np.argsort(scores, kind="stable")[:top_k]]


def fit_law(n, d, loss, *, delta: float = HUBER_DELTA, top_k: int = 8, starts: np.ndarray | None = None) -> LawFit:
    """Approach 3 on runs of (N params, D tokens, loss): L-BFGS from the best grid points, keep the lowest.

    fit_law(n, d, 2 + 400 / n**0.3 + 600 / d**0.3) recovers E=2, A=400, B=600, alpha=beta=0.3 (on enough
    runs spread over N and D). At least 5 runs are needed: the law has 5 constants.
    """
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    if not (len(n) == len(d) == len(loss)):
        raise ValueError(f"n, d and loss must be the same length, got {len(n)}, {len(d)}, {len(loss)}")
    if len(n) < 5:
        raise ValueError(f"fitting 5 constants needs at least 5 runs, got {len(n)}")
    if (n <= 0).any() or (d <= 0).any() or (loss <= 0).any() or not np.isfinite(loss).all():
        raise ValueError("every N, D and loss must be positive and finite")
    if starts is None:
        starts = grid_starts(n, d, loss, top_k, delta)
    logs = _logs(n, d, loss)
    theta, value = lbfgs(lambda th: _objective(th, *logs, delta), torch.tensor(starts, dtype=torch.float64))
    value = _finite(theta, value)
    if not torch.isfinite(value).any():
        raise ValueError("every start diverged: the runs do not determine the law (too few, or too noisy)")
    return _law(theta[int(value.argmin())], float(value.min()))


def _finite(theta: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The objective, inf where a start diverged: a constant past e^700 does not fit in a float64."""
    ok = torch.isfinite(theta).all(-1) & (theta[:, :3] < 700).all(-1)
    return torch.where(ok, value, torch.full_like(value, math.inf))


def _law(theta: torch.Tensor, objective: float) -> LawFit:
    a, b, e, alpha, beta = theta.tolist()
    return LawFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, objective=objective)


def _theta(fit: LawFit) -> np.ndarray:
    """(a, b, e, alpha, beta) of a fit; a constant that underflowed to 0 maps to e^-700."""
    return np.array([*(math.log(max(v, 1e-304)) for v in (fit.A, fit.B, fit.E)), fit.alpha, fit.beta])


def bootstrap_law(n, d, loss, fit: LawFit, samples: int = 200, seed: int = 0, level: float = 0.9,
                  delta: float = HUBER_DELTA) -> dict:
    """Refit on `samples` resamples of the runs (drawn with replacement); per constant the central `level`
    interval. A resample is the same objective with each run weighted by how often it was drawn, so all of
    them are solved in one batched L-BFGS, each from the full-data optimum and the data's best 3 grid points.

    Returns {"level", "samples", "diverged" (resamples whose every start diverged, left out), "fits":
    [LawFit...], "E": (lo, hi), "A": ..., "B", "alpha", "beta"}.
    """
    n, d, loss = (np.asarray(v, dtype=float) for v in (n, d, loss))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(n), len(n)), minlength=len(n)) for _ in range(samples)])
    counts = counts[(counts > 0).sum(1) >= 5]  # fewer distinct runs than constants: the fit is not determined
    starts = np.vstack([_theta(fit)[None], grid_starts(n, d, loss, 3, delta)])  # (S, 5)
    S, K = len(starts), len(counts)
    weight = torch.tensor(np.repeat(counts, S, axis=0), dtype=torch.float64)  # (K*S, runs)
    logs = _logs(n, d, loss)
    theta, value = lbfgs(lambda th: _objective(th, *logs, delta, weight),
                         torch.tensor(np.tile(starts, (K, 1)), dtype=torch.float64))
    value = _finite(theta, value).view(K, S)
    best = value.argmin(1)  # per resample, its best start
    fits = [_law(theta[k * S + int(best[k])], float(value[k, best[k]])) for k in range(K)
            if torch.isfinite(value[k, best[k]])]
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    out = {"level": level, "samples": len(fits), "diverged": K - len(fits), "fits": fits}
    for name in ("E", "A", "B", "alpha", "beta"):
        values = np.array([getattr(f, name) for f in fits])
        out[name] = tuple(float(v) for v in np.percentile(values, q)) if len(values) else (math.nan, math.nan)
    return out


@dataclass
class IsoFLOPFit:
    """Approach 2: per budget, the parabola loss = p0 (log N)^2 + p1 log N + p2 and its vertex; then the
    power law N_opt = k * C^a through the vertices (None where fewer than two budgets had a minimum)."""

    budgets: list[dict]  # per budget: c, n, loss, coef (p0, p1, p2) or None, n_opt, loss_opt, inside
    a: float | None
    k: float | None

    def n_opt(self, c):
        return None if self.a is None else self.k * np.power(np.asarray(c, dtype=float), self.a)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_parabola(n, loss) -> dict:
    """Loss against log N as a parabola; its vertex if it opens upwards, else no minimum.

    inside: the vertex lies within the sizes trained (outside, it is an extrapolation).
    """
    log_n, loss = np.log(np.asarray(n, dtype=float)), np.asarray(loss, dtype=float)
    if len(np.unique(log_n)) < 3:
        raise ValueError(f"a parabola needs at least 3 distinct sizes, got {len(np.unique(log_n))}")
    coef = np.polyfit(log_n, loss, 2)  # highest power first
    if coef[0] <= 0:
        return {"coef": coef.tolist(), "n_opt": None, "loss_opt": None, "inside": False}
    x = -coef[1] / (2 * coef[0])
    return {"coef": coef.tolist(), "n_opt": float(np.exp(x)), "loss_opt": float(np.polyval(coef, x)),
            "inside": bool(log_n.min() <= x <= log_n.max())}


def fit_isoflop(runs: list[dict]) -> IsoFLOPFit:
    """runs: dicts with "c" (the planned budget, shared by the runs of one isoFLOP curve), "n" and "loss".

    Budgets with fewer than 3 sizes are skipped. The power law uses the vertices that lie inside the sizes
    trained; if fewer than two do, it uses every vertex (and the report says which were extrapolated).
    """
    budgets = []
    for c in sorted({r["c"] for r in runs}):
        group = sorted((r for r in runs if r["c"] == c), key=lambda r: r["n"])
        if len({r["n"] for r in group}) < 3:
            continue
        ns, losses = [r["n"] for r in group], [r["loss"] for r in group]
        budgets.append({"c": c, "n": ns, "loss": losses, **fit_parabola(ns, losses)})
    usable = [b for b in budgets if b["n_opt"] is not None and b["inside"]]
    if len(usable) < 2:
        usable = [b for b in budgets if b["n_opt"] is not None]
    if len(usable) < 2:
        return IsoFLOPFit(budgets, None, None)
    slope, intercept = np.polyfit(np.log([b["c"] for b in usable]), np.log([b["n_opt"] for b in usable]), 1)
    return IsoFLOPFit(budgets, float(slope), float(np.exp(intercept)))
