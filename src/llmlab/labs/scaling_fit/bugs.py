"""Lab: scaling-fit, planted bugs: learner-style correct answers with one typical mistake each, and the words the
checks must answer them with. ALTERNATIVES are other correct answers (scipy's least squares, another algebra
for the optimum, a parabola by lstsq) the checks must accept."""

from llmlab.labs.registry import Bug, planted

SCALING = '''
import math

import numpy as np
import torch


def scaling_law(n, d, E, A, B, alpha, beta):
    return E + A / n**alpha + B / d**beta


def fit_scaling_law(n, d, loss):
    log_n, log_d, log_l = (torch.tensor(np.log(np.asarray(x, dtype=float))) for x in (n, d, loss))
    third = math.log(float(log_l.exp().mean()) / 3)  # each term starts near a third of the loss
    best, best_value = None, math.inf
    for alpha0 in (0.2, 0.6):
        for beta0 in (0.2, 0.6):
            start = [third + alpha0 * float(log_n.mean()), third + beta0 * float(log_d.mean()), third, alpha0, beta0]
            theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                                          line_search_fn="strong_wolfe")

            def objective():
                optimizer.zero_grad()
                a, b, e, alpha, beta = theta
                pred = torch.logsumexp(torch.stack([a - alpha * log_n, b - beta * log_d, e.expand_as(log_n)]), 0)
                value = ((pred - log_l) ** 2).mean()
                value.backward()
                return value

            optimizer.step(objective)
            value = float(objective().detach())
            if value < best_value:
                best, best_value = theta.detach().clone(), value
    a, b, e, alpha, beta = best.tolist()
    return math.exp(e), math.exp(a), math.exp(b), alpha, beta


def compute_optimal(c, E, A, B, alpha, beta):
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    n_opt = g * (np.asarray(c, dtype=float) / 6) ** (beta / (alpha + beta))
    return n_opt, np.asarray(c, dtype=float) / 6 / n_opt


def isoflop_minimum(n, loss):
    p0, p1, p2 = np.polyfit(np.log(n), loss, 2)
    return float(np.exp(-p1 / (2 * p0)))
'''

FIT_RETURN = "return math.exp(e), math.exp(a), math.exp(b), alpha, beta"
LAW = "E + A / n**alpha + B / d**beta"
C6 = "np.asarray(c, dtype=float) / 6"
VERTEX = "float(np.exp(-p1 / (2 * p0)))"

BUGS = [
    Bug("law-without-E", "scaling_law", planted(SCALING, "return E + A / n**alpha", "return A / n**alpha"),
        "E is missing"),
    Bug("law-growing-terms", "scaling_law", planted(SCALING, LAW, "E + A * n**alpha + B * d**beta"),
        "not A * N^alpha"),
    Bug("law-kaplan-form", "scaling_law", planted(SCALING, LAW, "E + (A / n)**alpha + (B / d)**beta"),
        "Kaplan's form"),
    Bug("law-exponents-swapped", "scaling_law", planted(SCALING, LAW, "E + A / n**beta + B / d**alpha"),
        "alpha and beta are swapped"),
    Bug("law-n-and-d-swapped", "scaling_law", planted(SCALING, LAW, "E + A / d**alpha + B / n**beta"),
        "N and D are swapped"),
    Bug("fit-returns-logs", "fit_scaling_law", planted(SCALING, FIT_RETURN, "return e, a, b, alpha, beta"),
        "those are log E, log A, log B"),
    Bug("fit-wrong-order", "fit_scaling_law", planted(SCALING, FIT_RETURN,
                                                      "return math.exp(a), math.exp(b), math.exp(e), alpha, beta"),
        "in the wrong order"),
    Bug("fit-terms-swapped", "fit_scaling_law", planted(SCALING, "a - alpha * log_n, b - beta * log_d",
                                                        "a - alpha * log_d, b - beta * log_n"),
        "your A and alpha are the data term's"),
    Bug("fit-without-E", "fit_scaling_law", planted(planted(
        SCALING, "b - beta * log_d, e.expand_as(log_n)]", "b - beta * log_d]"), FIT_RETURN,
        "return 0.0, math.exp(a), math.exp(b), alpha, beta"), "the law needs its irreducible loss E"),
    Bug("fit-not-converged", "fit_scaling_law", planted(SCALING, "max_iter=200", "max_iter=3"),
        "did the optimiser converge?"),
    Bug("optimal-without-6", "compute_optimal", planted(SCALING, C6, "np.asarray(c, dtype=float)"), "C = 6 N D"),
    Bug("optimal-exponent-swapped", "compute_optimal", planted(SCALING, "** (beta / (alpha + beta))",
                                                               "** (alpha / (alpha + beta))"),
        "the exponent of C / 6 in N_opt is beta / (alpha + beta)"),
    Bug("optimal-G-upside-down", "compute_optimal", planted(SCALING, "(alpha * A / (beta * B))",
                                                            "(beta * B / (alpha * A))"), "G is upside down"),
    Bug("optimal-returns-d-first", "compute_optimal", planted(SCALING, f"return n_opt, {C6} / n_opt",
                                                              f"return {C6} / n_opt, n_opt"),
        "you returned (D_opt, N_opt)"),
    Bug("isoflop-returns-log", "isoflop_minimum", planted(SCALING, VERTEX, "float(-p1 / (2 * p0))"),
        "you returned log N"),
    Bug("isoflop-parabola-in-n", "isoflop_minimum", planted(planted(
        SCALING, "np.polyfit(np.log(n), loss, 2)", "np.polyfit(n, loss, 2)"), VERTEX, "float(-p1 / (2 * p0))"),
        "not against N"),
    Bug("isoflop-best-run", "isoflop_minimum", planted(SCALING, VERTEX, "float(n[np.argmin(loss)])"),
        "the best run's N"),
    Bug("isoflop-coefficients-reversed", "isoflop_minimum", planted(SCALING, "-p1 / (2 * p0)))", "-p1 / (2 * p2)))"),
        "highest power first"),
]

LEAST_SQUARES = """def fit_scaling_law(n, d, loss):
    from scipy.optimize import least_squares

    log_n, log_d, log_l = (np.log(np.asarray(x, dtype=float)) for x in (n, d, loss))

    def residuals(theta):
        a, b, e, alpha, beta = theta
        return np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e) - log_l

    third = np.log(np.exp(log_l).mean() / 3)
    starts = [[third + al * log_n.mean(), third + be * log_d.mean(), third, al, be]
              for al in (0.2, 0.6) for be in (0.2, 0.6)]
    fits = [least_squares(residuals, s, xtol=1e-15, ftol=1e-15, gtol=1e-15) for s in starts]
    a, b, e, alpha, beta = min(fits, key=lambda r: r.cost).x
    return float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta)


"""
BALANCE = """    # at the optimum the two terms' slopes balance: alpha A / N^alpha = beta B / D^beta, D = C / (6 N)
    log_c6 = np.log(np.asarray(c, dtype=float) / 6)
    n_opt = np.exp((np.log(alpha * A / (beta * B)) + beta * log_c6) / (alpha + beta))
"""
LSTSQ = """    x = np.log(np.asarray(n, dtype=float))
    p0, p1, p2 = np.linalg.lstsq(np.stack([x**2, x, np.ones_like(x)], 1), np.asarray(loss), rcond=None)[0]
"""
FIT = SCALING[SCALING.index("def fit_scaling_law"):SCALING.index("def compute_optimal")]
OPTIMAL = SCALING[SCALING.index("    g = (alpha"):SCALING.index("    return n_opt")]

ALTERNATIVES = [  # scipy's least squares for LBFGS, N_opt from the balance of the terms, the parabola by lstsq
    planted(planted(planted(SCALING, FIT, LEAST_SQUARES), OPTIMAL, BALANCE),
            "    p0, p1, p2 = np.polyfit(np.log(n), loss, 2)\n", LSTSQ),
]
