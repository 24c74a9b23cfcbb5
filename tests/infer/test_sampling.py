"""Sampling filters against transformers' logits processors, and the worked example in sampling.py."""

import pytest
import torch

from llmlab.infer import sampling

transformers = pytest.importorskip("transformers")
gen_utils = pytest.importorskip("transformers.generation.logits_process")


def _logits(seed=0, B=3, V=50):
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_worked_example():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    for filtered in (sampling.top_k_filter(logits, 2), sampling.top_p_filter(logits, 0.7),
                     sampling.min_p_filter(logits, 0.2)):
        assert torch.isfinite(filtered).tolist() == [[True, True, False, False]]
    assert sampling.sample(logits, temperature=0).tolist() == [0]


@pytest.mark.parametrize("value", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_transformers(value):
    logits = _logits()
    expected = gen_utils.TopPLogitsWarper(value)(None, logits.clone())
    assert torch.equal(sampling.top_p_filter(logits, value), expected)


@pytest.mark.parametrize("value", [1, 5, 49])
def test_top_k_matches_transformers(value):
    logits = _logits(1)
    expected = gen_utils.TopKLogitsWarper(value)(None, logits.clone())
    assert torch.equal(sampling.top_k_filter(logits, value), expected)


@pytest.mark.parametrize("value", [0.01, 0.1, 0.5])
def test_min_p_matches_transformers(value):
    logits = _logits(2)
    expected = gen_utils.MinPLogitsWarper(value)(None, logits.clone())
    assert torch.equal(sampling.min_p_filter(logits, value), expected)


@pytest.mark.parametrize("penalty", [0.8, 1.3])
def test_repetition_penalty_matches_transformers(penalty):
    logits = _logits(3)
    prev = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(4))
    expected = gen_utils.RepetitionPenaltyLogitsProcessor(penalty)(prev, logits.clone())
    torch.testing.assert_close(sampling.apply_repetition_penalty(logits, prev, penalty), expected)


def test_temperature_zero_is_greedy_and_seeds_reproduce():
    logits = _logits(5)
    assert torch.equal(sampling.sample(logits, temperature=0), logits.argmax(-1))
    draw = lambda s: sampling.sample(logits, temperature=1.5, top_p=0.9, generator=torch.Generator().manual_seed(s))
    assert torch.equal(draw(7), draw(7))
    assert any(not torch.equal(draw(7), draw(s)) for s in range(8, 20))


def test_filters_keep_at_least_one_token():
    logits = _logits(6)
    assert torch.isfinite(sampling.top_p_filter(logits, 1e-9)).sum(-1).min() >= 1
    assert torch.isfinite(sampling.min_p_filter(logits, 1.0)).sum(-1).min() >= 1
