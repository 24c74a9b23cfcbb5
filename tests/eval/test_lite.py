"""Lite evaluation on synthetic score matrices whose answer is known.

Models get evenly spaced abilities; an "informative" item is solved with the
item-response probability sigmoid(3 (ability - difficulty)), a "constant" item
by every model or by none (a saturated or impossible question), which ranks nothing.
"""

import numpy as np
import pytest

from llmlab.common.errors import UserError
from llmlab.eval.lite import (
    lite_eval,
    plot_lite,
    rank_agreement,
    score_matrix,
    select_discrimination,
    select_stratified,
    select_variance,
    stratum_counts,
)
from llmlab.eval.stats import kendall_tau_b, spearman


def synthetic(n_models: int, n_informative: int, n_constant: int, seed: int = 0) -> np.ndarray:
    """(n_models, n_informative + n_constant) 0/1 scores: informative items first."""
    rng = np.random.default_rng(seed)
    ability = np.linspace(-2, 2, n_models)[:, None]  # (M, 1)
    difficulty = rng.uniform(-2, 2, n_informative)[None, :]  # (1, N_inf)
    p = 1 / (1 + np.exp(-3 * (ability - difficulty)))
    informative = (rng.random(p.shape) < p).astype(float)
    constant = np.repeat(rng.integers(0, 2, (1, n_constant)), n_models, axis=0).astype(float)
    return np.concatenate([informative, constant], axis=1)


def by_method(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(r["method"], r["k"]): r for r in rows}


def test_every_item_recovers_the_full_ranking_and_enough_random_items_nearly_do():
    scores = synthetic(8, 300, 0)
    rows = by_method(lite_eval(scores, [150, 300], n_draws=100))
    for method in ("random", "variance", "discrimination"):
        assert rows[method, 300]["spearman"] == 1.0 and rows[method, 300]["kendall"] == 1.0
    half = rows["random", 150]
    assert half["spearman_low"] > 0.9 and half["kendall"] > 0.85 and half["draws"] == 100
    assert half["fraction"] == 0.5 and half["time_saved"] == 0.5


def test_discriminative_items_beat_random_ones_at_small_k():
    scores = synthetic(8, 20, 380)  # 5% of the items tell the models apart
    rows = by_method(lite_eval(scores, [10], n_draws=200))
    random = rows["random", 10]
    assert random["spearman"] < 0.5 and random["spearman_low"] <= 0.0  # mostly constant items: little ranking
    for method in ("variance", "discrimination"):
        assert rows[method, 10]["spearman"] > 0.9 and rows[method, 10]["spearman_low"] is None
        assert set(select_variance(scores, 10)) <= set(range(20))  # only informative items were chosen


def test_selectors_worked_examples():
    scores = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0]], dtype=float)
    assert select_variance(scores, 2).tolist() == [1, 2]  # item 0 is solved by every model
    # models' totals [2/3, 1, 1/3, 1/3]; item 1 splits the models as much as item 2 but against the ranking
    scores = np.array([[1, 0, 1], [1, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=float)
    assert select_variance(scores, 1).tolist() == [1]
    assert select_discrimination(scores, 1).tolist() == [2]  # correlations 0.52, 0.30, 0.90 with the totals
    assert select_discrimination(np.array([[1, 1], [1, 0], [1, 0]], dtype=float), 1).tolist() == [1]


def test_stratified_selection_keeps_proportions():
    labels = ["math"] * 6 + ["code"] * 3 + ["qa"]
    assert stratum_counts(labels, 5) == {"code": 2, "math": 3, "qa": 0}
    assert stratum_counts(labels, 10) == {"code": 3, "math": 6, "qa": 1}
    picked = select_stratified(np.zeros((3, 10)), 5, labels, np.random.default_rng(0))
    assert sorted(labels[i] for i in picked) == ["code"] * 2 + ["math"] * 3 and len(set(picked)) == 5
    rows = lite_eval(synthetic(5, 10, 0), [4], labels=labels, n_draws=20)
    assert [r["method"] for r in rows] == ["random", "stratified", "variance", "discrimination"]


def test_held_out_models_measure_the_subset_honestly():
    scores = synthetic(12, 60, 60, seed=1)
    fit = list(range(0, 12, 2))
    held = [m for m in range(12) if m not in fit]
    rows = by_method(lite_eval(scores, [10], methods=["discrimination"], fit_models=fit))
    items = select_discrimination(scores[fit], 10)
    full, subset = scores[held].mean(1), scores[held][:, items].mean(1)
    assert rows["discrimination", 10]["spearman"] == spearman(full, subset)
    assert rows["discrimination", 10]["kendall"] == kendall_tau_b(full, subset)


def test_random_draws_are_seeded():
    scores = synthetic(6, 40, 0)
    assert lite_eval(scores, [5], seed=3, n_draws=30) == lite_eval(scores, [5], seed=3, n_draws=30)
    assert lite_eval(scores, [5], seed=3, n_draws=30) != lite_eval(scores, [5], seed=4, n_draws=30)


def test_a_constant_subset_ranks_nothing():
    assert rank_agreement(np.array([0.1, 0.5, 0.9]), np.array([1.0, 1.0, 1.0])) == (0.0, 0.0)


def test_plot_is_a_png(tmp_path):
    rows = lite_eval(synthetic(6, 40, 20), [5, 20, 60], n_draws=20)
    plot_lite(rows, tmp_path / "lite.png")
    assert (tmp_path / "lite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lite.png"]  # no temporary file left behind


def test_score_matrix_from_per_model_results():
    models, items, scores = score_matrix({"m1": {"q1": 1, "q2": 0}, "m2": {"q2": 1, "q1": 1}})
    assert models == ["m1", "m2"] and items == ["q1", "q2"] and scores.tolist() == [[1, 0], [1, 1]]
    with pytest.raises(UserError, match="'m2' and model 'm1' differ on item 'q2'"):
        score_matrix({"m1": {"q1": 1, "q2": 0}, "m2": {"q1": 1}})
    with pytest.raises(UserError, match="differ on item 'q3'"):
        score_matrix({"m1": {"q1": 1}, "m2": {"q1": 1, "q3": 0}})


@pytest.mark.parametrize("kwargs, message", [
    ({"scores": np.zeros((2, 5))}, "at least 3 models"),
    ({"scores": [[0, 1], [1, np.nan], [0, 0]]}, "finite"),
    ({"labels": ["a"] * 3}, "one entry per item"),
    ({"sizes": [0]}, "between 1 and"),
    ({"sizes": [11]}, "between 1 and"),
    ({"methods": ["greedy"]}, "unknown methods"),
    ({"methods": ["stratified"]}, "needs labels"),
    ({"fit_models": [0, 1, 2]}, "fit_models"),
    ({"scores": np.ones((4, 10))}, "no ranking"),
])
def test_bad_input(kwargs, message):
    args = {"scores": synthetic(5, 10, 0), "sizes": [3]} | kwargs
    with pytest.raises(ValueError, match=message):
        lite_eval(**args)
