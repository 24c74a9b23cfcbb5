"""Ratings from pairwise votes: Elo, Bradley-Terry by maximum likelihood, and bootstrap intervals.

A match is `(model_a, model_b, score_a)`: 1 when a won, 0 when b won, 0.5 for a tie. Which verdicts become
matches (a "both bad" vote, say) is the caller's decision; `llmlab.eval.arena.store.matches` makes it.

- **Elo** (Elo 1978) walks the votes in order, moving both ratings by `k x (score - expected)`. It depends on
  the order and on `k`; it is what a live leaderboard shows while votes arrive.
- **Bradley-Terry** (1952) models `P(i beats j) = p_i / (p_i + p_j)` and fits every `p` at once by maximum
  likelihood with the MM iteration of Hunter (2004), "MM algorithms for generalized Bradley-Terry models".
  It ignores the order of votes, so it ranks the leaderboard (as Chatbot Arena does since 2023). A tie
  counts half a win for each side. Both report points on the Elo scale: `rating = initial + scale x
  log10(p)`, with the strengths' geometric mean at `initial`, so a 400-point gap means 10:1 odds.
- **Bootstrap**: refit on votes resampled with replacement (seeded) and take percentiles.

Not here: collecting votes (`eval/arena`), ties modelled as their own outcome (Rao-Kupper, Davidson).
"""

import math
from collections.abc import Callable, Sequence

import numpy as np

Match = tuple[str, str, float]


def _check(matches: Sequence[Match]) -> None:
    for n, (a, b, s) in enumerate(matches):
        if a == b:
            raise ValueError(f"matches[{n}]: {a!r} plays itself; a match needs two different models")
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"matches[{n}]: score_a must be 1 (a won), 0 (b won) or 0.5 (tie), got {s}")


def models_of(matches: Sequence[Match]) -> list[str]:
    """Every model that played, sorted: [("x", "y", 1), ("y", "w", 0.5)] -> ["w", "x", "y"]."""
    return sorted({m for a, b, _ in matches for m in (a, b)})


def expected_score(rating_a: float, rating_b: float, scale: float = 400.0) -> float:
    """Elo's expected score of a against b: 1 / (1 + 10^((rating_b - rating_a) / scale)).

    expected_score(1200, 1000) -> 0.7597 (a 200-point favourite wins three games in four).
    """
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / scale))


def elo(matches: Sequence[Match], k: float = 32.0, initial: float = 1000.0, scale: float = 400.0
        ) -> dict[str, float]:
    """Elo ratings after playing `matches` in order; every model starts at `initial`.

    [("x", "y", 1)] with k=32 -> {"x": 1016, "y": 984}: both expected 0.5, x scored 1.
    """
    _check(matches)
    ratings = dict.fromkeys(models_of(matches), initial)
    for a, b, s in matches:
        delta = k * (s - expected_score(ratings[a], ratings[b], scale))
        ratings[a] += delta
        ratings[b] -= delta
    return ratings


def win_matrix(matches: Sequence[Match], models: Sequence[str]) -> np.ndarray:
    """(M, M) wins: w[i, j] is how often models[i] beat models[j], a tie adding 0.5 to both sides.

    [("x", "y", 1), ("x", "y", 0.5)] over ["x", "y"] -> [[0, 1.5], [0.5, 0]].
    """
    index = {m: i for i, m in enumerate(models)}
    w = np.zeros((len(models), len(models)))
    for a, b, s in matches:
        w[index[a], index[b]] += s
        w[index[b], index[a]] += 1.0 - s
    return w


def _strongly_connected(w: np.ndarray) -> bool:
    """Whether every model beat, through some chain of wins, every other (Hunter's condition for a finite MLE)."""

    def reaches_all(edges: np.ndarray) -> bool:
        seen, todo = {0}, [0]
        while todo:
            i = todo.pop()
            for j in np.flatnonzero(edges[i]):
                if int(j) not in seen:
                    seen.add(int(j))
                    todo.append(int(j))
        return len(seen) == len(edges)

    beat = w > 0
    return reaches_all(beat) and reaches_all(beat.T)


def bradley_terry(matches: Sequence[Match], prior: float = 0.0, initial: float = 1000.0, scale: float = 400.0,
                  max_iter: int = 100_000, tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry maximum-likelihood ratings on the Elo scale (see the module docstring).

    The log-likelihood is sum_ij w_ij log(p_i / (p_i + p_j)) over the win matrix. Hunter's MM step
    `p_i <- W_i / sum_j n_ij / (p_i + p_j)` (W_i: i's wins, n_ij = w_ij + w_ji: games of i against j) never
    lowers it and converges to the maximum when one exists: when every model has beaten, through a chain of
    wins, every other. An unbeaten model has no finite rating; `prior` > 0 adds that many tied virtual games
    between every pair of models, which pulls ratings towards each other and always makes the fit finite.
    [("x", "y", 1), ("y", "x", 0.5)]: x won 1.5 of 2 games -> p_x / p_y = 3 -> x is 400 log10(3) = 191
    points above y: {"x": 1095.4, "y": 904.6}.
    """
    _check(matches)
    if prior < 0:
        raise ValueError(f"prior must be at least 0, got {prior}")
    models = models_of(matches)
    if len(models) < 2:
        return dict.fromkeys(models, initial)
    w = win_matrix(matches, models) + prior / 2 * (1 - np.eye(len(models)))  # (M, M)
    if not _strongly_connected(w):
        raise ValueError("these matches have no finite Bradley-Terry fit (some model never lost, or never won, "
                         "against the rest); pass prior > 0")
    wins, games = w.sum(1), w + w.T  # (M,), (M, M)
    p = np.ones(len(models))
    for _ in range(max_iter):
        new = wins / (games / (p[:, None] + p[None, :])).sum(1)
        new /= np.exp(np.log(new).mean())  # geometric mean 1: the likelihood only sees ratios
        done = np.abs(np.log(new / p)).max() < tol
        p = new
        if done:
            break
    return {m: initial + scale * math.log10(v) for m, v in zip(models, p, strict=True)}


def bootstrap(matches: Sequence[Match], fit: Callable[[list[Match]], dict[str, float]], rounds: int = 200,
              seed: int = 0, confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals: refit on `rounds` resamples of the matches (with replacement, in resampled order).

    The same seed gives the same intervals. A model missing from a resample has no value in that round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {m: [] for m in models_of(matches)}
    for _ in range(rounds):
        picked = rng.integers(0, len(matches), len(matches))
        for m, r in fit([matches[i] for i in picked]).items():
            samples[m].append(r)
    tail = (1 - confidence) / 2 * 100
    return {m: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for m, v in samples.items() if v}


def leaderboard(matches: Sequence[Match], k: float = 32.0, prior: float = 1.0, rounds: int = 200, seed: int = 0,
                confidence: float = 0.95) -> list[dict]:
    """One row per model, best Bradley-Terry rating first: both ratings with intervals, and the vote counts.

    `prior` keeps the fit finite on few votes (one tied virtual game per pair by default; see `bradley_terry`).
    Elo's interval comes from resamples in shuffled order, so it shows how much the order matters too; the
    in-order Elo may sit near its edge when the last votes were unusual.
    """
    if not matches:
        return []
    bt = bradley_terry(matches, prior)
    bt_ci = bootstrap(matches, lambda m: bradley_terry(m, prior), rounds, seed, confidence)
    el = elo(matches, k)
    el_ci = bootstrap(matches, lambda m: elo(m, k), rounds, seed, confidence)
    rows = []
    for model in models_of(matches):
        scores = [s for a, b, s in matches if a == model] + [1 - s for a, b, s in matches if b == model]
        rows.append({"model": model, "bt": bt[model], "bt_low": bt_ci[model][0], "bt_high": bt_ci[model][1],
                     "elo": el[model], "elo_low": el_ci[model][0], "elo_high": el_ci[model][1],
                     "votes": len(scores), "wins": scores.count(1.0), "losses": scores.count(0.0),
                     "ties": scores.count(0.5)})
    rows.sort(key=lambda r: -r["bt"])
    return [{"rank": i + 1, **r} for i, r in enumerate(rows)]
