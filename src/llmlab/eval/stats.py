"""Statistics for evaluation results, from scratch: means, bootstrap intervals and rank correlations.

- `mean_stderr`: the mean and its standard error (sample std / sqrt(n)).
- `bootstrap_ci`: a percentile bootstrap interval (Efron 1979) of any statistic
  of paired samples, resampling items with replacement; seeded, so reruns agree.
- `rankdata`: ranks with ties given their average rank.
- `spearman`: Pearson correlation of the ranks (Spearman 1904); equals
  `scipy.stats.spearmanr`.
- `kendall_tau_b`: Kendall's tau-b (Kendall 1945), which corrects for ties in
  either variable; equals `scipy.stats.kendalltau` (its default variant).
- `correlation_ci`: either correlation with a percentile-bootstrap interval over
  items (pairs resampled together). We bootstrap rather than use Fisher's z,
  because z's variance for rank correlations is itself an approximation that
  is poor for small n and heavy ties, while the bootstrap needs no formula.

The correlations are written for clarity: Kendall's tau-b compares all pairs,
O(n^2) time and memory, fine for a few thousand items; its bootstrap
(`kendall_bootstrap_ci`) reuses one pair matrix for every resample. Nothing
here is an evaluation metric of a model; these summarise metrics.
"""

from collections.abc import Callable, Sequence

import numpy as np


def _array(values: Sequence[float], name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    return x


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); the error is nan with fewer than two values.

    [1, 2, 3, 4] -> (2.5, 0.6455): sample std 1.291 (n - 1 in the denominator) / sqrt(4).
    """
    x = _array(values)
    if len(x) == 0:
        return float("nan"), float("nan")
    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(se)


def bootstrap_ci(statistic: Callable[..., float], *samples: Sequence[float], n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (1 - alpha) of `statistic(*samples)`.

    Each of `n_boot` rounds draws n item indices with replacement and applies the
    statistic to every sample at those indices (pairs stay pairs). Rounds where
    the statistic is nan (e.g. a correlation of a resample with no variation) are
    dropped; the interval is nan when all are.
    bootstrap_ci(np.mean, [1, 2, 3, 4]) -> about (1.5, 3.5).
    """
    _check_bootstrap(n_boot, alpha)
    arrays = [_array(s, "samples") for s in samples]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"samples must have equal lengths, got {[len(a) for a in arrays]}")
    if n == 0:
        return float("nan"), float("nan")
    return _percentiles([statistic(*(a[idx] for a in arrays)) for idx in _resamples(n, n_boot, seed)], alpha)


def _check_bootstrap(n_boot: int, alpha: float) -> None:
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) item indices drawn with replacement: one bootstrap resample per row."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _percentiles(stats, alpha: float) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentiles of the statistics that are not nan (nan, nan when none are)."""
    stats = np.asarray(stats, dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties sharing the mean of the ranks they span.

    [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]; [3, 1, 2] -> [3, 1, 2].
    """
    x = _array(values)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # runs of equal values: start index of each run, in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    run_ranks = (starts + 1 + ends) / 2  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; nan when either variable is constant or there are fewer than two pairs.

    [1, 2, 3], [2, 4, 7] -> 0.9934.
    """
    x, y = _paired(x, y)
    if len(x) < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denom) if denom > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the (tie-averaged) ranks.

    [1, 2, 3, 4], [10, 30, 20, 40] -> ranks [1, 2, 3, 4] and [1, 3, 2, 4] -> 0.8.
    """
    x, y = _paired(x, y)
    return pearson(rankdata(x), rankdata(y))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y).

    A pair (i, j) is concordant when x and y order it the same way, discordant
    when they disagree; pairs tied in either count in neither.
    [1, 2, 3, 4], [10, 30, 20, 40]: 5 concordant, 1 discordant of 6 pairs -> 4/6 = 0.6667.
    Nan when either variable is constant.
    """
    x, y = _paired(x, y)
    sx = np.sign(x[:, None] - x[None, :])  # (n, n): +1, 0 or -1 per ordered pair
    sy = np.sign(y[:, None] - y[None, :])
    # every unordered pair appears twice in the full matrices, which cancels in the ratio
    untied_x, untied_y = np.count_nonzero(sx), np.count_nonzero(sy)
    if untied_x == 0 or untied_y == 0:
        return float("nan")
    return float((sx * sy).sum() / np.sqrt(float(untied_x) * float(untied_y)))


def kendall_bootstrap_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                         seed: int = 0) -> tuple[float, float]:
    """`bootstrap_ci(kendall_tau_b, x, y)` with the same resamples, as matrix products instead of n_boot sign matrices.

    A resample is a weighting: item i drawn w_i times. Its pairs (a, b) with a < b
    sum s_ij over original items as (w^T S w) / 2, where S holds sign(x_i - x_j) *
    sign(y_i - y_j) (copies of one item tie, adding 0). So each round costs a
    matrix-vector product, and the integer counts make the numbers the same.
    """
    _check_bootstrap(n_boot, alpha)
    x, y = _paired(x, y)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    sx = np.sign(x[:, None] - x[None, :])  # (n, n)
    sy = np.sign(y[:, None] - y[None, :])
    w = np.stack([np.bincount(idx, minlength=n) for idx in _resamples(n, n_boot, seed)]).astype(np.float64)
    concordance = ((w @ (sx * sy)) * w).sum(axis=1)  # (n_boot,)
    untied = ((w @ np.abs(sx)) * w).sum(axis=1) * ((w @ np.abs(sy)) * w).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(untied > 0, concordance / np.sqrt(untied), np.nan)
    return _percentiles(tau, alpha)


def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _array(x, "x"), _array(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must pair up, got lengths {len(x)} and {len(y)}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("x and y must not contain nan; drop the items that have none")
    return x, y


CORRELATIONS = {"spearman": spearman, "kendall": kendall_tau_b, "pearson": pearson}


def correlation_ci(x: Sequence[float], y: Sequence[float], method: str = "spearman", n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """{"value", "low", "high", "n"}: a correlation and its percentile-bootstrap interval over items.

    `method` is "spearman", "kendall" (tau-b) or "pearson".
    """
    if method not in CORRELATIONS:
        raise ValueError(f"method must be one of {', '.join(CORRELATIONS)}, got {method!r}")
    fn = CORRELATIONS[method]
    if method == "kendall":
        low, high = kendall_bootstrap_ci(x, y, n_boot=n_boot, alpha=alpha, seed=seed)
    else:
        low, high = bootstrap_ci(fn, x, y, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"value": fn(x, y), "low": low, "high": high, "n": len(x)}
