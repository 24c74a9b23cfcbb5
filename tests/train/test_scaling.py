"""Scaling-law fits: planted constants come back, the optimum equals scipy's on the same objective, the
bootstrap covers the truth, isoFLOP vertices follow the law's frontier, and bad input is refused."""

import numpy as np
import pytest
import torch

from llmlab.models import Transformer, get_preset
from llmlab.models.gpt import count_parameters
from llmlab.train.scaling import (
    LawFit,
    bootstrap_law,
    fit_isoflop,
    fit_law,
    fit_parabola,
    grid_starts,
    huber_objective,
    lbfgs,
    non_embedding_params,
    train_flops,
)

TRUE = dict(E=1.8, A=300.0, B=900.0, alpha=0.35, beta=0.32)


def _grid(noise: float = 0.0, seed: int = 0):
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(5e4, 1e6, 5), np.geomspace(3e5, 1e7, 4)))  # 20 runs
    loss = LawFit(**TRUE, objective=0.0).predict(n, d)
    return n, d, loss * np.exp(np.random.default_rng(seed).normal(0, noise, len(loss)))


def _numpy_objective(theta, n, d, loss, delta=1e-3):
    """Chinchilla's objective written again, independently: Huber of LSE(a - alpha log N, b - beta log D, e)
    minus log L."""
    a, b, e, alpha, beta = theta
    r = np.logaddexp(np.logaddexp(a - alpha * np.log(n), b - beta * np.log(d)), e) - np.log(loss)
    return np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()


def test_objective_equals_its_definition():
    n, d, loss = _grid(noise=0.01)
    theta = np.random.default_rng(1).normal([5, 6, 0.5, 0.3, 0.3], 0.5, (7, 5))
    ours = huber_objective(torch.tensor(theta), n, d, loss).numpy()
    np.testing.assert_allclose(ours, [_numpy_objective(t, n, d, loss) for t in theta], rtol=1e-12)


def test_recovers_planted_constants():
    fit = fit_law(*_grid())
    for name, value in TRUE.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-5), name


def test_optimum_equals_scipy_on_the_same_objective():
    from scipy.optimize import minimize

    n, d, loss = _grid(noise=0.003)
    fit = fit_law(n, d, loss)
    best = min((minimize(_numpy_objective, x0, args=(n, d, loss), method="L-BFGS-B",
                         options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
                for x0 in grid_starts(n, d, loss, 4)), key=lambda r: r.fun)
    assert fit.objective <= best.fun * (1 + 1e-6)
    a, b, e, alpha, beta = best.x
    np.testing.assert_allclose([fit.E, fit.A, fit.B, fit.alpha, fit.beta],
                               [np.exp(e), np.exp(a), np.exp(b), alpha, beta], rtol=2e-3)


def test_batched_lbfgs_solves_each_problem():
    """Rosenbrock from four starts at once, each shifted to its own minimum (k, k^2)."""
    shift = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)

    def rosenbrock(x):
        u, v = x[:, 0], x[:, 1]
        return (shift - u) ** 2 + 100 * (v - u**2) ** 2

    x, value = lbfgs(rosenbrock, torch.tensor([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0], [-1.0, 3.0]],
                                              dtype=torch.float64), max_iter=200)
    torch.testing.assert_close(x, torch.stack([shift, shift**2], 1), atol=1e-6, rtol=0)
    assert (value < 1e-12).all()


def test_bootstrap_intervals_cover_the_truth():
    n, d, loss = _grid(noise=0.003)
    fit = fit_law(n, d, loss)
    boot = bootstrap_law(n, d, loss, fit, samples=20, seed=0)
    assert boot["samples"] == 20 and len(boot["fits"]) == 20
    for name in ("alpha", "beta", "E"):
        lo, hi = boot[name]
        assert lo < TRUE[name] < hi, name
        assert lo < hi


def test_frontier_is_the_constrained_minimum():
    from scipy.optimize import minimize_scalar

    law = LawFit(**TRUE, objective=0.0)
    for c in (1e15, 1e18):
        n_opt, d_opt = law.optimal(c)
        assert train_flops(n_opt, d_opt) == pytest.approx(c)
        best = minimize_scalar(lambda x, c=c: law.predict(np.exp(x), c / 6 / np.exp(x)), bounds=(0, 40),
                               method="bounded", options={"xatol": 1e-10})
        assert float(n_opt) == pytest.approx(np.exp(best.x), rel=1e-4)


def test_isoflop_vertices_follow_the_law():
    law = LawFit(**TRUE, objective=0.0)
    runs = []
    for c in (1e14, 1e15, 1e16):
        centre = float(law.optimal(c)[0])
        for n in centre * np.geomspace(1 / 4, 4, 7):
            runs.append({"c": c, "n": n, "loss": float(law.predict(n, c / (6 * n)))})
    iso = fit_isoflop(runs)
    assert len(iso.budgets) == 3 and all(b["inside"] for b in iso.budgets)
    for b in iso.budgets:
        assert b["n_opt"] == pytest.approx(float(law.optimal(b["c"])[0]), rel=0.05)
    assert iso.a == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.02)


def test_parabola_vertex_and_concave_curves():
    n = np.geomspace(1e4, 1e6, 5)
    out = fit_parabola(n, (np.log(n) - np.log(1e5)) ** 2 + 3.0)
    assert out["n_opt"] == pytest.approx(1e5) and out["loss_opt"] == pytest.approx(3.0) and out["inside"]
    assert fit_parabola(n, -np.log(n) ** 2)["n_opt"] is None  # opens downwards: no minimum
    with pytest.raises(ValueError, match="3 distinct sizes"):
        fit_parabola([1e4, 1e4, 1e5], [3, 2, 1])


def test_non_embedding_parameters():
    llama = Transformer(get_preset("llama-tiny", vocab_size=300, seq_len=32))  # tied head: one table
    assert non_embedding_params(llama) == count_parameters(llama) - 300 * 128
    gpt2 = Transformer(get_preset("gpt2-tiny", vocab_size=300, seq_len=32))  # learned positions are a table too
    assert non_embedding_params(gpt2) == count_parameters(gpt2) - 300 * 128 - 32 * 128


def test_bad_input():
    n, d, loss = _grid()
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_law(n[:4], d[:4], loss[:4])
    with pytest.raises(ValueError, match="same length"):
        fit_law(n, d[:-1], loss)
    with pytest.raises(ValueError, match="positive and finite"):
        fit_law(n, d, np.where(np.arange(len(loss)) == 3, np.nan, loss))
