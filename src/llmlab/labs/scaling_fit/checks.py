"""Lab: scaling-fit, the checks. References are llmlab's own (`llmlab.train.scaling`: `LawFit.predict` and
`.optimal`, `fit_law`, `fit_parabola`, which its tests hold equal to scipy's optimum on the same objective and
to scipy's constrained minimum) and numpy written out here: the law, a brute-force search along 6 N D = C.
Fits are judged by what they predict, not by their constants: on exact losses any correct fit finds the planted
law, on noisy ones it must fit the runs about as well as llmlab's. Typical mistakes are computed and named.
"""

import numpy as np
import torch

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, diagnose
from llmlab.train.scaling import LawFit, fit_law, fit_parabola

CHECKS = CheckList()
NAMES = ("E", "A", "B", "alpha", "beta")
LAWS = [dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),  # Chinchilla's own fit
        dict(E=1.66, A=11.5, B=185.0, alpha=0.227, beta=0.385),  # llmlab's CPU sweep (docs/scaling.md)
        dict(E=0.5, A=2000.0, B=50.0, alpha=0.6, beta=0.2)]


def _law(p: dict) -> LawFit:
    return LawFit(**p, objective=0.0)


def _show(p: dict) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in p.items())


def _numbers(out, shape: tuple[int, ...], what: str) -> np.ndarray:
    """`out` as a float64 array of `shape` (a one-element array for a single number is fine)."""
    if out is None:
        raise CheckFailed(f"{what} returned None: did you forget `return`?")
    if isinstance(out, torch.Tensor):
        out = out.detach().double().cpu().numpy()
    try:
        a = np.asarray(out, dtype=float)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what} returned {type(out).__name__}, not numbers") from None
    if a.shape != shape and not (a.size == 1 == int(np.prod(shape))):
        raise CheckFailed(f"{what} returned shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise CheckFailed(f"{what} returned NaN or inf")
    return a.reshape(shape)


def _diagnose(out: np.ndarray, expected: np.ndarray, mistakes: dict, otherwise: str) -> None:
    """checking.diagnose on numpy arrays: a mistake is an array, or a function computing one."""
    def tensor(w) -> torch.Tensor:
        return torch.as_tensor(np.asarray(w, dtype=float))

    with np.errstate(all="ignore"):  # a mistake may overflow on these inputs: then it does not match
        diagnose(tensor(out), tensor(expected), {m: (lambda w=w: tensor(w() if callable(w) else w))
                                                 for m, w in mistakes.items()}, otherwise, rtol=1e-5, atol=1e-8)


# ---- scaling_law ------------------------------------------------------------------------------------------

def _law_mistakes(n, d, E, A, B, alpha, beta) -> dict:
    return {
        "E is missing: the irreducible loss E is added to the two terms": A / n**alpha + B / d**beta,
        "your terms grow with N and D: it is A / N^alpha, not A * N^alpha": E + A * n**alpha + B * d**beta,
        "you computed (A / N)^alpha, Kaplan's form with N_c = A; Chinchilla's term is A / N^alpha":
            lambda: E + (A / n) ** alpha + (B / d) ** beta,
        "alpha and beta are swapped: alpha is the exponent of N, beta that of D": E + A / n**beta + B / d**alpha,
        "N and D are swapped: A / N^alpha is the model-size term, B / D^beta the data term":
            E + A / d**alpha + B / n**beta,
    }


@CHECKS.add("scaling_law", "equals E + A / N^alpha + B / D^beta on arrays of runs, from 1e3 to 1e13")
def law_values(ws: Workspace) -> None:
    n, d = np.geomspace(1e3, 1e11, 7), np.geomspace(1e13, 1e5, 7)
    for p in LAWS:
        out = _numbers(call(ws.get("scaling_law"), n.copy(), d.copy(), **p), (7,), "scaling_law on 7 runs")
        _diagnose(out, _law(p).predict(n, d), _law_mistakes(n, d, **p),
                  f"differs from E + A / N^alpha + B / D^beta for {_show(p)}")


@CHECKS.add("scaling_law", "one run as plain numbers, a 2-D grid, integer sizes; the inputs are left alone")
def law_shapes(ws: Workspace) -> None:
    fn, p = ws.get("scaling_law"), LAWS[0]
    out = _numbers(call(fn, 1e9, 2e10, **p), (), "scaling_law(1e9, 2e10, ...)")
    _diagnose(out, _law(p).predict(1e9, 2e10), _law_mistakes(1e9, 2e10, **p), "wrong for one run (N=1e9, D=2e10)")
    n, d = np.meshgrid(np.geomspace(1e6, 1e9, 3), np.geomspace(1e8, 1e12, 2))  # (2, 3)
    saved = (n.copy(), d.copy())
    out = _numbers(call(fn, n, d, **p), (2, 3), "scaling_law on a (2, 3) grid")
    if not (np.array_equal(n, saved[0]) and np.array_equal(d, saved[1])):
        raise CheckFailed("scaling_law changed its input arrays in place (n **= ...): compute new arrays instead")
    if not np.allclose(out, _law(p).predict(n, d), rtol=1e-5):
        raise CheckFailed("wrong on a (2, 3) grid of runs: use numpy's elementwise operations, no loops over one axis")
    ints = np.array([10**4, 10**6, 10**8]), np.array([10**6, 10**8, 10**10])
    out = _numbers(call(fn, *ints, **p), (3,), "scaling_law on integer arrays")
    if not np.allclose(out, _law(p).predict(*(a.astype(float) for a in ints)), rtol=1e-5):
        raise CheckFailed("wrong for integer arrays of N and D: does an integer power or division truncate?")


# ---- fit_scaling_law --------------------------------------------------------------------------------------

def _grid(N, D, p: dict, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, ...]:
    n, d = (a.ravel() for a in np.meshgrid(N, D))
    order = np.random.default_rng(seed).permutation(len(n))  # the runs in no particular order
    n, d = n[order], d[order]
    return n, d, _law(p).predict(n, d) * np.exp(np.random.default_rng(seed + 1).normal(0, noise, len(n)))


def _fit(ws: Workspace, n, d, loss) -> tuple[float, ...]:
    out = call(ws.get("fit_scaling_law"), n.copy(), d.copy(), loss.copy())
    if out is None:
        raise CheckFailed("fit_scaling_law returned None: did you forget `return`?")
    if isinstance(out, dict):
        raise CheckFailed("fit_scaling_law returned a dict: return the tuple (E, A, B, alpha, beta)")
    values = tuple(float(v) for v in out)
    if len(values) != 5:
        raise CheckFailed(f"fit_scaling_law returned {len(values)} numbers: return the five (E, A, B, alpha, beta)")
    if not all(np.isfinite(values)):
        raise CheckFailed(f"fit_scaling_law returned {values}: NaN or inf (did the optimiser diverge?)")
    return values


def _misses(values, n, d, loss) -> float:
    """The largest relative error of the law `values` on the runs (inf if it cannot be evaluated)."""
    with np.errstate(all="ignore"):
        pred = _law(dict(zip(NAMES, values, strict=True))).predict(n, d)
    err = np.abs(pred / loss - 1)
    return float(err.max()) if np.isfinite(err).all() else float("inf")


def _same(a, b, rel: float = 0.02) -> bool:
    return bool(np.allclose(a, b, rtol=rel, atol=1e-3))


@CHECKS.add("fit_scaling_law", "finds the planted law from exact losses (5 x 5 and 3 x 3 grids of runs)")
def fit_exact(ws: Workspace) -> None:
    grids = [(LAWS[0], np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5)),
             (LAWS[2], np.geomspace(1e3, 1e5, 3), np.geomspace(1e5, 1e6, 3))]
    for p, N, D in grids:
        n, d, loss = _grid(N, D, p)
        values = _fit(ws, n, d, loss)
        far = np.array([N.max() * 30]), np.array([D.max() * 30])  # beyond the runs: the point of a law
        if _misses(values, n, d, loss) < 1e-3 and _misses(values, *far, _law(p).predict(*far)) < 1e-2:
            continue
        truth = np.array([p[k] for k in NAMES])
        where = f"on {len(n)} runs of the law {_show(p)}, you returned {tuple(round(v, 4) for v in values)}"
        if _same(values, [np.log(p["E"]), np.log(p["A"]), np.log(p["B"]), p["alpha"], p["beta"]]):
            raise CheckFailed(f"{where}: those are log E, log A, log B (the fitted e, a, b); return E = exp(e), "
                              "A = exp(a), B = exp(b)")
        if _same(values, [p["E"], p["B"], p["A"], p["beta"], p["alpha"]]):
            raise CheckFailed(f"{where}: your A and alpha are the data term's; A / N^alpha goes with N, "
                              "B / D^beta with D")
        if _same(sorted(values), sorted(truth)):
            raise CheckFailed(f"{where}: the right constants in the wrong order; return (E, A, B, alpha, beta)")
        if abs(values[0]) < 1e-6:
            raise CheckFailed(f"{where}: E is 0 and the fit misses the runs; the law needs its irreducible loss E, "
                              "E + A / N^alpha + B / D^beta")
        raise CheckFailed(f"{where}, which misses the exact losses by up to {100 * _misses(values, n, d, loss):.2g}%: "
                          "did the optimiser converge? Fit in logs, from several starting points")


@CHECKS.add("fit_scaling_law", "fits 20 runs with 1% noise about as well as llmlab's fit (Chinchilla's method)")
def fit_noisy(ws: Workspace) -> None:
    p = LAWS[1]
    n, d, loss = _grid(np.geomspace(1.6e4, 1.6e5, 5), np.geomspace(4e4, 3.5e6, 4), p, noise=0.01, seed=3)
    values = _fit(ws, n, d, loss)
    if min(values[:3]) <= 0:
        raise CheckFailed(f"E, A and B must be positive, got {values[:3]}: fit their logs e, a, b instead")

    def squared_log_error(v) -> float:
        with np.errstate(all="ignore"):
            return float(((np.log(_law(dict(zip(NAMES, v, strict=True))).predict(n, d)) - np.log(loss)) ** 2).sum())

    ref = fit_law(n, d, loss)
    ours, theirs = squared_log_error(values), squared_log_error([ref.E, ref.A, ref.B, ref.alpha, ref.beta])
    if not ours <= 1.5 * theirs:
        raise CheckFailed(f"on 20 noisy runs your law's squared log error is {ours:.3g}, llmlab's {theirs:.3g}: "
                          "did the optimiser converge? Try several starting points and keep the best")


# ---- compute_optimal --------------------------------------------------------------------------------------

def _optimal_mistakes(c, E, A, B, alpha, beta) -> dict:
    s = alpha + beta
    g = (alpha * A / (beta * B)) ** (1 / s)
    n = g * (c / 6) ** (beta / s)
    no_six = g * c ** (beta / s)
    swapped = g * (c / 6) ** (alpha / s)
    flipped = (beta * B / (alpha * A)) ** (1 / s) * (c / 6) ** (beta / s)
    return {
        "your N_opt * D_opt equals C: the budget is C = 6 N D FLOPs, so N_opt and D_opt use C / 6":
            np.concatenate([no_six, c / no_six]),
        "D_opt is (C / 6) / N_opt: your N_opt * D_opt equals C, not C / 6": np.concatenate([n, c / n]),
        "the exponent of C / 6 in N_opt is beta / (alpha + beta): yours is alpha / (alpha + beta)":
            np.concatenate([swapped, c / 6 / swapped]),
        "G is upside down: G = (alpha A / (beta B))^(1 / (alpha + beta))": np.concatenate([flipped, c / 6 / flipped]),
        "you returned (D_opt, N_opt): return N_opt first": np.concatenate([c / 6 / n, n]),
    }


def _optimal(ws: Workspace, c, p: dict, shape: tuple[int, ...]) -> np.ndarray:
    out = call(ws.get("compute_optimal"), c, **p)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed("compute_optimal should return two things: (N_opt, D_opt)")
    return np.concatenate([_numbers(v, shape, f"compute_optimal's {name}").ravel()
                           for v, name in zip(out, ("N_opt", "D_opt"), strict=True)])


@CHECKS.add("compute_optimal", "N_opt and D_opt of Chinchilla's equation 4, for arrays of budgets")
def optimal_values(ws: Workspace) -> None:
    c = np.array([1e12, 1e18, 5.76e23, 1e25])  # 5.76e23: Chinchilla's own budget
    for p in (LAWS[0], LAWS[2]):
        out = _optimal(ws, c.copy(), p, (4,))
        n, d = _law(p).optimal(c)
        _diagnose(out, np.concatenate([n, d]), _optimal_mistakes(c, **p),
                  f"differs from Chinchilla's N_opt, D_opt for {_show(p)}")


@CHECKS.add("compute_optimal", "one budget as a number: the minimum of L along 6 N D = C (a brute-force search)")
def optimal_search(ws: Workspace) -> None:
    for p in LAWS:
        for c in (1e11, 1e21):
            n_opt, d_opt = _optimal(ws, c, p, ())
            if not np.isclose(6 * n_opt * d_opt, c, rtol=1e-6):
                raise CheckFailed(f"for C = {c:g}, 6 * N_opt * D_opt = {6 * n_opt * d_opt:.4g}: they must spend "
                                  "the budget exactly, D_opt = (C / 6) / N_opt")
            grid = np.geomspace(1.0, c / 6, 200_001)  # every split of the budget, 1 parameter to 1 token
            losses = _law(p).predict(grid, c / 6 / grid)
            best = int(losses.argmin())
            if abs(np.log(n_opt / grid[best])) > 1e-3:
                raise CheckFailed(f"for C = {c:g} and {_show(p)}, your N_opt = {n_opt:.4g} gives loss "
                                  f"{_law(p).predict(n_opt, d_opt):.6f}; a search along 6 N D = C finds "
                                  f"N = {grid[best]:.4g} with {losses[best]:.6f}")


# ---- isoflop_minimum --------------------------------------------------------------------------------------

def _isoflop_mistakes(n, loss) -> dict:
    p0, p1, _ = np.polyfit(np.log(n), loss, 2)
    q0, q1, _ = np.polyfit(n, loss, 2)
    return {
        "you returned log N at the vertex: return N itself, exp(-p1 / (2 p0))": np.array([-p1 / (2 * p0)]),
        "fit the parabola to loss against log N, not against N": np.array([-q1 / (2 * q0)]),
        "that is the best run's N, not the parabola's vertex: the vertex lies between the runs":
            np.array([n[np.argmin(loss)]]),
        "np.polyfit returns the highest power first: loss = p0 (log N)^2 + p1 log N + p2, vertex at -p1 / (2 p0)":
            lambda: np.exp(np.array([-p1 / (2 * np.polyfit(np.log(n), loss, 2)[2])])),
        "the vertex is at log N = -p1 / (2 p0): check the sign": np.exp(np.array([p1 / (2 * p0)])),
    }


def _vertex(ws: Workspace, n, loss) -> np.ndarray:
    return _numbers(call(ws.get("isoflop_minimum"), n.copy(), loss.copy()), (1,), "isoflop_minimum")


@CHECKS.add("isoflop_minimum", "the vertex of a parabola in log N, returned as N")
def isoflop_parabola(ws: Workspace) -> None:
    n = np.geomspace(1e3, 1e6, 7)
    loss = 3.0 + 0.05 * (np.log(n) - np.log(3e4)) ** 2  # the minimum at N = 30k, between two runs
    _diagnose(_vertex(ws, n, loss), np.array([3e4]), _isoflop_mistakes(n, loss),
              "the vertex of 3 + 0.05 (log N - log 3e4)^2 is N = 3e4")


@CHECKS.add("isoflop_minimum", "equals llmlab's fit_parabola on isoFLOP curves of a law: 3 runs, 6 unsorted, N ~ 1e9")
def isoflop_law(ws: Workspace) -> None:
    law = _law(LAWS[0])
    for c, sizes in ((1e12, np.geomspace(3e4, 1e6, 3)), (1e21, np.geomspace(1e8, 1e10, 6)[[3, 0, 5, 1, 4, 2]])):
        loss = law.predict(sizes, c / 6 / sizes)
        _diagnose(_vertex(ws, sizes, loss), np.array([fit_parabola(sizes, loss)["n_opt"]]),
                  _isoflop_mistakes(sizes, loss), f"differs from llmlab's fit_parabola for C = {c:g}")
