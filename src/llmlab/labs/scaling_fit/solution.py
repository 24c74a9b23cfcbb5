"""Lab: scaling-fit, the reference solution: llmlab's own scaling-law code (llmlab.train.scaling) behind the
lab's names. `fit_law` is Chinchilla's approach 3 as their appendix D.2 describes it (a Huber loss on log
loss, L-BFGS from the best points of their grid of starts); `fit_parabola` is approach 2's per-budget fit.
"""

from llmlab.train.scaling import LawFit, fit_law, fit_parabola, grid_starts, lbfgs


def _law(E: float, A: float, B: float, alpha: float, beta: float) -> LawFit:
    return LawFit(E=E, A=A, B=B, alpha=alpha, beta=beta, objective=0.0)


def scaling_law(n, d, E: float, A: float, B: float, alpha: float, beta: float):
    return _law(E, A, B, alpha, beta).predict(n, d)


def fit_scaling_law(n, d, loss) -> tuple[float, float, float, float, float]:
    fit = fit_law(n, d, loss)
    return fit.E, fit.A, fit.B, fit.alpha, fit.beta


def compute_optimal(c, E: float, A: float, B: float, alpha: float, beta: float) -> tuple:
    return _law(E, A, B, alpha, beta).optimal(c)


def isoflop_minimum(n, loss) -> float:
    return fit_parabola(n, loss)["n_opt"]


LLMLAB_CODE = [LawFit, fit_law, grid_starts, lbfgs, fit_parabola]  # printed by `llmlab labs solution scaling-fit`
