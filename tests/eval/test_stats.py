"""Statistics: rank correlations equal scipy's on data with ties, bootstrap intervals behave, bad input is refused."""

import math

import numpy as np
import pytest
import scipy.stats

from llmlab.eval.stats import (
    bootstrap_ci,
    correlation_ci,
    kendall_bootstrap_ci,
    kendall_tau_b,
    mean_stderr,
    pearson,
    rankdata,
    spearman,
)


def tied_pairs(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x on a few levels (many ties), y correlated with x plus noise, rounded to make ties there too."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, n).astype(float)
    y = np.round(x + rng.normal(0, 2, n))
    return x, y


@pytest.mark.parametrize("seed, n", [(0, 7), (1, 30), (2, 200), (3, 2)])
def test_correlations_equal_scipy(seed, n):
    x, y = tied_pairs(seed, n)
    if n == 2:
        x, y = np.array([1.0, 2.0]), np.array([3.0, 5.0])
    assert abs(spearman(x, y) - scipy.stats.spearmanr(x, y).statistic) < 1e-10
    assert abs(kendall_tau_b(x, y) - scipy.stats.kendalltau(x, y).statistic) < 1e-10  # tau-b is scipy's default
    assert abs(pearson(x, y) - scipy.stats.pearsonr(x, y).statistic) < 1e-10
    np.testing.assert_allclose(rankdata(x), scipy.stats.rankdata(x), rtol=0, atol=1e-12)


def test_worked_examples():
    assert rankdata([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert math.isclose(spearman([1, 2, 3, 4], [10, 30, 20, 40]), 0.8)
    assert math.isclose(kendall_tau_b([1, 2, 3, 4], [10, 30, 20, 40]), 4 / 6)
    mean, se = mean_stderr([1, 2, 3, 4])
    assert mean == 2.5 and math.isclose(se, scipy.stats.sem([1, 2, 3, 4]))


def test_constant_or_short_input_is_nan():
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau_b([1, 2, 3], [4, 4, 4]))
    assert math.isnan(pearson([1], [2]))
    assert math.isnan(mean_stderr([5.0])[1]) and all(math.isnan(v) for v in mean_stderr([]))


def test_bootstrap_interval_of_the_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 1.0, 400)
    low, high = bootstrap_ci(np.mean, values, n_boot=2000, seed=1)
    mean, se = mean_stderr(values)
    assert low < mean < high
    # the percentile interval of a mean is close to the normal one, mean +- 1.96 se
    assert abs((high - low) - 2 * 1.96 * se) < 0.2 * 2 * 1.96 * se
    assert bootstrap_ci(np.mean, values, seed=1) == bootstrap_ci(np.mean, values, seed=1)  # seeded
    ref = scipy.stats.bootstrap((values,), np.mean, n_resamples=2000, method="percentile", random_state=0)
    assert abs(low - ref.confidence_interval.low) < 0.03 and abs(high - ref.confidence_interval.high) < 0.03


def test_correlation_interval_covers_the_value_and_shrinks_with_n():
    small, large = tied_pairs(5, 30), tied_pairs(5, 300)
    for method in ("spearman", "kendall"):
        a = correlation_ci(*small, method=method, n_boot=300)
        b = correlation_ci(*large, method=method, n_boot=300)
        assert a["low"] <= a["value"] <= a["high"] and b["low"] <= b["value"] <= b["high"]
        assert b["high"] - b["low"] < a["high"] - a["low"] and b["n"] == 300


@pytest.mark.parametrize("x, y", [tied_pairs(6, 40), ([0, 0, 0, 0, 1], [0, 0, 1, 1, 1])])
def test_kendall_fast_bootstrap_equals_the_generic_one(x, y):
    fast = kendall_bootstrap_ci(x, y, n_boot=200, seed=3)
    slow = bootstrap_ci(kendall_tau_b, x, y, n_boot=200, seed=3)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_constant_resamples_are_dropped():
    # two distinct values out of five: some resamples are constant (nan), the rest give the interval
    low, high = bootstrap_ci(spearman, [0, 0, 0, 0, 1], [0, 0, 0, 1, 1], n_boot=200)
    assert 0 < low <= high <= 1
    assert all(math.isnan(v) for v in bootstrap_ci(spearman, [1, 1], [1, 1], n_boot=10))


def test_bad_input():
    with pytest.raises(ValueError, match="pair up"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="nan"):
        kendall_tau_b([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="method"):
        correlation_ci([1, 2], [1, 2], method="tau")
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_ci(spearman, [1, 2], [1])
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(np.mean, [1, 2], alpha=1.5)
    with pytest.raises(ValueError, match="one-dimensional"):
        mean_stderr([[1, 2]])
