"""Lite evaluation: which k items of a benchmark rank models the way all n items do?

Input is a score matrix (M models, N items): 0/1 correctness, or any per-item
score such as a log-likelihood margin. A model's benchmark score is its mean
over the items. For a subset of k items, how well do the models' subset means
rank them like the full means? We measure that with Spearman's rho and
Kendall's tau-b (`llmlab.eval.stats`) for four ways to choose the subset:

- random: k items uniformly; repeated `n_draws` times, reported as the mean
  over draws with a percentile interval over draws.
- stratified: k items split across labels (task family, difficulty bin) in
  proportion to their sizes, random within each; repeated like random.
- variance: the k items whose scores vary most across models. For 0/1 items
  that is those about half the models solve. A coin-flip item varies as much
  as a telling one, so variance alone can pick noise.
- discrimination: the k items whose scores correlate best, across models, with
  the full benchmark score (the "item-total correlation" of classical test
  theory, which is what item response theory's discrimination measures).

Overfitting: variance and discrimination look at the very models they are then
judged on, so their correlations are optimistic; discrimination, which looks
at the full ranking, most of all. With `fit_models`, items are chosen from
those models only and every correlation is measured on the other (held-out)
models: the honest number for "will this subset rank a new model?"

A subset in which every model scores the same ranks nothing: it counts as
correlation 0. "Time saved" is 1 - k/n, exact when items cost the same.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write
from llmlab.eval.stats import kendall_tau_b, spearman

RANDOM_METHODS = ("random", "stratified")


def select_random(scores: np.ndarray, k: int, labels: Sequence[str] | None, rng: np.random.Generator) -> np.ndarray:
    """k distinct item indices, uniformly at random."""
    return np.sort(rng.choice(scores.shape[1], size=k, replace=False))


def stratum_counts(labels: Sequence[str], k: int) -> dict[str, int]:
    """How many of k items each label gets: proportional, rounded by largest remainder (ties: label order).

    Labels with 6 "math", 3 "code", 1 "qa" and k=5: quotas 3.0, 1.5, 0.5 -> floors 3, 1, 0 and the one
    item left goes to the largest remainder, "code" (before "qa" by name) -> {"code": 2, "math": 3, "qa": 0}.
    """
    names, sizes = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    quotas = k * sizes / sizes.sum()
    counts = np.floor(quotas).astype(int)
    order = sorted(range(len(names)), key=lambda i: (-(quotas[i] - counts[i]), names[i]))
    for i in order[:k - counts.sum()]:
        counts[i] += 1
    return {str(name): int(c) for name, c in zip(names, counts, strict=True)}


def select_stratified(scores: np.ndarray, k: int, labels: Sequence[str] | None,
                      rng: np.random.Generator) -> np.ndarray:
    """k item indices spread over the labels in proportion (`stratum_counts`), random within each label."""
    if labels is None:
        raise ValueError("stratified selection needs labels, one per item")
    labels = np.asarray(labels, dtype=str)
    picks = [rng.choice(np.flatnonzero(labels == name), size=count, replace=False)
             for name, count in stratum_counts(labels, k).items()]
    return np.sort(np.concatenate(picks))


def select_variance(scores: np.ndarray, k: int, labels: Sequence[str] | None = None,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """The k items whose scores vary most across models (ties: the earlier item).

    Items scored [[1, 0, 1], [1, 1, 0], [1, 0, 0]] (3 models, 3 items): item 0 is solved by all
    (variance 0), items 1 and 2 by some -> k=2 picks [1, 2].
    """
    return np.sort(np.argsort(-scores.var(axis=0), kind="stable")[:k])


def select_discrimination(scores: np.ndarray, k: int, labels: Sequence[str] | None = None,
                          rng: np.random.Generator | None = None) -> np.ndarray:
    """The k items whose scores correlate best, across models, with the models' mean over all items.

    An item every model solves (or fails) has no correlation and comes last.
    Scores [[1, 0, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0]] give totals [2/3, 1, 1/3, 1/3] and item
    correlations 0.52, 0.30, 0.90 -> k=1 picks [2]; `select_variance` picks item 1, which splits
    the models as much as item 2 does but against their ranking.
    """
    total = scores.mean(axis=1)  # (M,)
    dx = scores - scores.mean(axis=0)  # (M, N)
    dt = (total - total.mean())[:, None]  # (M, 1)
    denom = np.sqrt((dx * dx).sum(axis=0) * (dt * dt).sum())  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, (dx * dt).sum(axis=0) / denom, -np.inf)
    return np.sort(np.argsort(-corr, kind="stable")[:k])


SELECTORS = {"random": select_random, "stratified": select_stratified, "variance": select_variance,
             "discrimination": select_discrimination}


def rank_agreement(full: np.ndarray, subset: np.ndarray) -> tuple[float, float]:
    """(Spearman, Kendall tau-b) between models' full and subset scores; a constant subset ranks nothing: (0, 0)."""
    if np.all(subset == subset[0]):
        return 0.0, 0.0
    return spearman(full, subset), kendall_tau_b(full, subset)


def check_scores(scores, labels: Sequence[str] | None = None) -> np.ndarray:
    """The score matrix as floats (M models, N items), after checking its shape and values."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 3 or scores.shape[1] < 1:
        raise ValueError(f"scores must be (models, items) with at least 3 models, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; score a missing answer as wrong (0) or drop the item")
    if labels is not None and len(labels) != scores.shape[1]:
        raise ValueError(f"labels must have one entry per item ({scores.shape[1]}), got {len(labels)}")
    return scores


def lite_eval(scores, sizes: Sequence[int], labels: Sequence[str] | None = None,
              methods: Sequence[str] | None = None, n_draws: int = 200, seed: int = 0,
              fit_models: Sequence[int] | None = None, alpha: float = 0.05) -> list[dict]:
    """For each method and subset size k: how well k items rank the models like all items do.

    One row per (method, k): spearman, kendall (the mean over draws for random methods) with
    *_low/*_high, the (alpha/2, 1 - alpha/2) percentiles over draws (None for the deterministic
    methods), draws, fraction (k/n) and time_saved (1 - k/n). `methods` defaults to all that
    apply (stratified only with labels). `fit_models` (row indices): choose items on those models
    and measure agreement on the others.
    """
    scores = check_scores(scores, labels)
    methods = list(methods or [m for m in SELECTORS if m != "stratified" or labels is not None])
    unknown = set(methods) - set(SELECTORS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; use {', '.join(SELECTORS)}")
    if not all(1 <= k <= scores.shape[1] for k in sizes):
        raise ValueError(f"subset sizes must be between 1 and the {scores.shape[1]} items, got {list(sizes)}")
    fit, held = _split_models(scores.shape[0], fit_models)
    full = scores[held].mean(axis=1)  # (M_held,)
    if np.all(full == full[0]):
        raise ValueError("every model has the same full score; there is no ranking to recover")
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for k in sizes:
            draws = n_draws if method in RANDOM_METHODS else 1
            pairs = [rank_agreement(full, scores[held][:, SELECTORS[method](scores[fit], k, labels, rng)].mean(1))
                     for _ in range(draws)]
            rows.append(_row(method, k, scores.shape[1], np.array(pairs), alpha))
    return rows


def _split_models(n_models: int, fit_models: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """(rows to choose items on, rows to measure on): all and all, or the given rows and the rest."""
    if fit_models is None:
        return np.arange(n_models), np.arange(n_models)
    fit = np.unique(np.asarray(fit_models, dtype=int))
    held = np.setdiff1d(np.arange(n_models), fit)
    if len(fit) < 2 or len(held) < 3 or fit.min() < 0 or fit.max() >= n_models:
        raise ValueError(f"fit_models must name at least 2 of the {n_models} model rows and leave at least 3 "
                         f"to measure on, got {list(fit_models)}")
    return fit, held


def _row(method: str, k: int, n_items: int, pairs: np.ndarray, alpha: float) -> dict:
    """One result row from the (draws, 2) Spearman and Kendall values of a method at size k."""
    row = {"method": method, "k": k, "fraction": k / n_items, "time_saved": 1 - k / n_items, "draws": len(pairs)}
    for j, name in enumerate(("spearman", "kendall")):
        values = pairs[:, j]
        low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)]) if len(values) > 1 else (None,) * 2
        row |= {name: float(values.mean()), f"{name}_low": _maybe(low), f"{name}_high": _maybe(high)}
    return row


def _maybe(value) -> float | None:
    return None if value is None else float(value)


def score_matrix(per_model: dict[str, dict[str, float]]) -> tuple[list[str], list[str], np.ndarray]:
    """(models, items, scores (M, N)) from {model: {item id: score}}; every model must have every item.

    {"m1": {"q1": 1, "q2": 0}, "m2": {"q2": 1, "q1": 1}} -> (["m1", "m2"], ["q1", "q2"], [[1, 0], [1, 1]]).
    """
    models = list(per_model)
    items = list(per_model[models[0]]) if models else []
    for m in models:
        missing = [i for i in items if i not in per_model[m]] or [i for i in per_model[m] if i not in items]
        if missing:
            raise UserError(f"model {m!r} and model {models[0]!r} differ on item {missing[0]!r}; score every "
                            f"model on the same items")
    return models, items, np.array([[float(per_model[m][i]) for i in items] for m in models])


def plot_lite(rows: list[dict], path: str | Path, title: str = "lite evaluation") -> None:
    """Subset size against Spearman and Kendall, one line per method, with the interval over draws shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, name in zip(axes, ("spearman", "kendall"), strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["k"])
            ks = [r["k"] for r in mine]
            line, = ax.plot(ks, [r[name] for r in mine], "o-", label=method, markersize=3)
            if mine[0][f"{name}_low"] is not None:
                ax.fill_between(ks, [r[f"{name}_low"] for r in mine], [r[f"{name}_high"] for r in mine],
                                color=line.get_color(), alpha=0.15)
        ax.set_xlabel(f"items in the subset (k of {round(rows[0]['k'] / rows[0]['fraction'])})")
        ax.set_title(f"{name} with the full ranking")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("rank correlation")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
