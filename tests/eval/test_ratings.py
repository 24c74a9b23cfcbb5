"""Ratings: Elo golden values, Bradley-Terry against scipy's and scikit-learn's fits, seeded bootstrap intervals."""

import math

import numpy as np
import pytest

from llmlab.eval.ratings import bootstrap, bradley_terry, elo, expected_score, leaderboard, models_of, win_matrix

LN10_400 = math.log(10) / 400  # Elo points -> natural log-odds


def synthetic(true: dict[str, float], n: int, seed: int = 0, tie_rate: float = 0.1) -> list[tuple]:
    """Matches between random pairs; a wins with Bradley-Terry probability, a tenth of games are ties."""
    rng = np.random.default_rng(seed)
    names = list(true)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(names), 2, replace=False)
        u = rng.random()
        p = expected_score(true[names[a]], true[names[b]])
        out.append((names[a], names[b], 0.5 if u < tie_rate else float(u < tie_rate + (1 - tie_rate) * p)))
    return out


def neg_log_likelihood(r: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """-sum_ij w_ij log sigmoid(c (r_i - r_j)) over Elo-scale ratings r, and its gradient."""
    d = LN10_400 * (r[:, None] - r[None, :])  # (M, M)
    nll = float((w * np.logaddexp(0, -d)).sum())
    g = w * (1 / (1 + np.exp(d)))  # d/d(d_ij) of -log sigmoid, times -1
    grad = -LN10_400 * (g.sum(1) - g.sum(0))
    return nll, grad


def test_expected_score_and_elo_golden_sequence():
    assert expected_score(1200, 1000) == pytest.approx(0.759747, abs=1e-6)
    assert expected_score(1000, 1000) == 0.5
    seq = [("x", "y", 1.0), ("y", "z", 0.5), ("z", "x", 1.0), ("x", "y", 0.0)]
    # 1: equal ratings expect 0.5 each: x += 32 * (1 - 0.5)
    assert elo(seq[:1]) == {"x": 1016.0, "y": 984.0}
    # 2: y (984) expects 1 / (1 + 10^(16/400)) = 0.476991 against z (1000); a tie gains 32 * 0.023009 = 0.7363
    assert elo(seq[:2]) == pytest.approx({"x": 1016.0, "y": 984.736307, "z": 999.263693})
    # 3: z (999.2637) expects 0.475945 against x (1016) and wins: +16.7698
    # 4: y (984.7363) expects 0.479124 against x (999.2299) and wins: +16.6671
    assert elo(seq) == pytest.approx({"x": 982.562794, "y": 1001.403373, "z": 1016.033833})
    assert sum(elo(seq).values()) == pytest.approx(3000.0)  # every point one side wins the other loses
    assert elo(seq, k=16, initial=1500)["x"] == pytest.approx(1500 + (elo(seq, k=16)["x"] - 1000))
    assert elo([]) == {}


def test_bradley_terry_golden_two_players():
    # x won 1.5 of 2 games: p_x / p_y = 3, i.e. 400 log10(3) = 190.85 points apart around 1000
    assert bradley_terry([("x", "y", 1.0), ("y", "x", 0.5)]) == pytest.approx({"x": 1095.424251, "y": 904.575749})
    assert win_matrix([("x", "y", 1.0), ("x", "y", 0.5)], ["x", "y"]).tolist() == [[0, 1.5], [0.5, 0]]
    assert bradley_terry([("x", "y", 0.5)]) == {"x": 1000.0, "y": 1000.0}
    assert bradley_terry([]) == {}


def test_bradley_terry_recovers_known_strengths_and_matches_scipy():
    from scipy.optimize import minimize

    true = {"a": 1250.0, "b": 1100.0, "c": 1000.0, "d": 900.0, "e": 750.0}
    matches = synthetic(true, 4000, tie_rate=0.0)  # ties would pull the fitted ratings together
    fit = bradley_terry(matches)
    assert sorted(fit, key=fit.get, reverse=True) == list(true)  # the ordering comes back
    assert np.mean(list(fit.values())) == pytest.approx(1000.0)  # geometric mean of strengths at 1000
    for m in true:
        assert fit[m] == pytest.approx(true[m], abs=40)  # about 3 standard errors at 4000 votes

    names = models_of(matches)
    w = win_matrix(matches, names)
    r = np.array([fit[m] for m in names])
    assert np.abs(neg_log_likelihood(r, w)[1]).max() < 1e-8  # the MLE: the gradient vanishes
    ref = minimize(lambda v: neg_log_likelihood(v, w), np.full(len(names), 1000.0), jac=True, method="BFGS",
                   options={"gtol": 1e-10})
    ref_r = ref.x - ref.x.mean() + 1000  # the likelihood sees only differences
    np.testing.assert_allclose(r, ref_r, atol=1e-3)


def test_bradley_terry_matches_sklearn_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model")
    true = {"a": 1150.0, "b": 1000.0, "c": 950.0, "d": 800.0}
    matches = synthetic(true, 2000, seed=1)
    names = models_of(matches)
    # Chatbot Arena's fit: x = e_a - e_b per vote, y = a won, a tie as half a win and half a loss (weights);
    # votes with the same pair and outcome add up into one weighted row
    rows: dict[tuple[int, int, int], float] = {}
    for a, b, s in matches:
        i, j, s = (names.index(a), names.index(b), s) if a < b else (names.index(b), names.index(a), 1 - s)
        for outcome, share in ((1, s), (0, 1 - s)):
            rows[i, j, outcome] = rows.get((i, j, outcome), 0.0) + share
    keys = [k for k, v in rows.items() if v > 0]
    x = np.zeros((len(keys), len(names)))
    for row, (i, j, _) in enumerate(keys):
        x[row, i], x[row, j] = LN10_400, -LN10_400  # coefficients come out in Elo points
    y, weight = np.array([k[2] for k in keys]), np.array([rows[k] for k in keys])
    lr = sklearn.LogisticRegression(fit_intercept=False, C=1e12, tol=1e-12, max_iter=10_000)
    lr.fit(x, y, sample_weight=weight)
    ref = lr.coef_[0] - lr.coef_[0].mean() + 1000
    fit = bradley_terry(matches)
    np.testing.assert_allclose([fit[m] for m in names], ref, atol=0.05)


def test_prior_keeps_an_unbeaten_model_finite_and_is_a_penalised_mle():
    matches = [("x", "y", 1.0)] * 5 + [("y", "z", 1.0)] * 3 + [("z", "y", 0.5)]
    with pytest.raises(ValueError, match="prior > 0"):
        bradley_terry(matches)  # x never lost: its likelihood rises forever
    fit = bradley_terry(matches, prior=1.0)
    assert fit["x"] > fit["y"] > fit["z"] and all(math.isfinite(v) for v in fit.values())
    names = models_of(matches)
    w = win_matrix(matches, names) + 0.5 * (1 - np.eye(3))  # one tied virtual game per pair
    assert np.abs(neg_log_likelihood(np.array([fit[m] for m in names]), w)[1]).max() < 1e-8
    with pytest.raises(ValueError, match="prior must be at least 0"):
        bradley_terry(matches, prior=-1)


def test_bad_matches_are_refused():
    with pytest.raises(ValueError, match=r"matches\[1\].*plays itself"):
        elo([("x", "y", 1.0), ("x", "x", 1.0)])
    with pytest.raises(ValueError, match=r"matches\[0\].*score_a"):
        bradley_terry([("x", "y", 2.0)])
    with pytest.raises(ValueError, match="rounds"):
        bootstrap([("x", "y", 1.0)], elo, rounds=0)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap([("x", "y", 1.0)], elo, confidence=1.0)


def test_bootstrap_intervals_hold_the_estimate_and_are_seeded():
    matches = synthetic({"a": 1100.0, "b": 1000.0, "c": 900.0}, 600, seed=2)
    fit = lambda m: bradley_terry(m, prior=1.0)
    point = fit(matches)
    ci = bootstrap(matches, fit, rounds=100, seed=7)
    for m, (low, high) in ci.items():
        assert low < point[m] < high
        assert high - low < 150  # 600 votes pin a rating to tens of points
    assert bootstrap(matches, fit, rounds=100, seed=7) == ci  # same seed, same intervals
    assert bootstrap(matches, fit, rounds=100, seed=8) != ci
    narrow = bootstrap(matches, fit, rounds=100, seed=7, confidence=0.5)
    assert all(ci[m][0] <= narrow[m][0] <= narrow[m][1] <= ci[m][1] for m in ci)


def test_leaderboard_rows():
    matches = [("x", "y", 1.0), ("y", "x", 0.0), ("x", "z", 0.5), ("z", "y", 1.0), ("y", "z", 0.5)]
    rows = leaderboard(matches, rounds=20, seed=0)
    assert [r["model"] for r in rows] == ["x", "z", "y"] and [r["rank"] for r in rows] == [1, 2, 3]
    x = rows[0]
    assert (x["votes"], x["wins"], x["losses"], x["ties"]) == (3, 2, 0, 1)
    assert x["bt"] == pytest.approx(bradley_terry(matches, prior=1.0)["x"])
    assert x["elo"] == pytest.approx(elo(matches)["x"])
    assert all(r["bt_low"] <= r["bt_high"] and r["elo_low"] <= r["elo_high"] for r in rows)
    assert sum(r["wins"] for r in rows) == sum(r["losses"] for r in rows)
    assert leaderboard([]) == []
