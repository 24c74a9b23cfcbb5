"""Lab: scaling-fit. Fill in the bodies below, then run `llmlab labs check scaling-fit` (or the notebook).

Chinchilla's parametric law (Hoffmann et al. 2022): a model of N parameters trained on D tokens reaches a loss

    L(N, D) = E + A / N^alpha + B / D^beta

E is the loss no model can beat (the text's own entropy), A / N^alpha what a finite model costs, B / D^beta what
finite data costs. Training costs C = 6 N D FLOPs: 2 per weight per token forward, 4 backward.
Numbers n, d, c and losses may be Python floats or numpy arrays.
"""

import math  # noqa: F401

import numpy as np  # noqa: F401
import torch  # noqa: F401


def scaling_law(n, d, E: float, A: float, B: float, alpha: float, beta: float):
    """L(N, D) = E + A / N^alpha + B / D^beta, for numbers or numpy arrays n, d of one shape (-> that shape).

    Example: scaling_law(1e4, 1e6, E=1.0, A=100.0, B=1000.0, alpha=0.5, beta=0.5) = 1 + 100/100 + 1000/1000 = 3.0
    """
    raise NotImplementedError("TODO: one line")


def fit_scaling_law(n, d, loss) -> tuple[float, float, float, float, float]:
    """The constants (E, A, B, alpha, beta) of `scaling_law` that best fit runs: n, d, loss are 1-D arrays with
    one entry per run (at least 5 runs: the law has 5 constants). Returns five floats in that order, so
    scaling_law(n, d, *fit) predicts the runs' losses.

    A way that works (Chinchilla's appendix D.2, with squared error in place of their Huber loss): fit in logs.
    Write A = e^a, B = e^b, E = e^e (positive whatever the optimiser does) and minimise the mean over runs of

        (log L_hat - log L)^2,    log L_hat = logsumexp(a - alpha log N, b - beta log D, e)

    over theta = (a, b, e, alpha, beta): torch.optim.LBFGS on a float64 tensor (line_search_fn="strong_wolfe",
    a few hundred iterations), from a few starting points (alpha, beta in {0.2, 0.6}; a, b, e so that each term
    starts near a third of the mean loss), keeping the best. Any method that fits as well passes.
    """
    raise NotImplementedError("TODO: an objective in log space, an optimiser, several starts, the best fit")


def compute_optimal(c, E: float, A: float, B: float, alpha: float, beta: float) -> tuple:
    """The model size N_opt and tokens D_opt minimising L(N, D) for a compute budget of C = 6 N D FLOPs.

    Substituting D = C / (6 N) and setting dL/dN = 0 gives (Chinchilla, equation 4)

        N_opt = G (C / 6)^(beta / (alpha + beta)),   D_opt = (C / 6) / N_opt,
        G = (alpha A / (beta B))^(1 / (alpha + beta))

    c: a number or a numpy array of budgets. Returns (N_opt, D_opt), each of c's shape. (E does not matter.)
    """
    raise NotImplementedError("TODO: G, then N_opt, then D_opt from the budget")


def isoflop_minimum(n, loss) -> float:
    """Chinchilla's approach 2 for one budget: runs of the same compute C at several sizes n (at least 3) and
    their losses. Fit a parabola to loss against log N (np.polyfit(np.log(n), loss, 2) gives its coefficients,
    highest power first) and return the N at its vertex: N itself, a float, not log N.
    Assume the parabola opens upwards (a too-small or too-large N both cost loss at a fixed budget)."""
    raise NotImplementedError("TODO: a parabola in log N, its vertex -p1 / (2 p0), back from log N to N")
