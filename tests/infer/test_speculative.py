"""Speculative decoding gives exactly the target's greedy tokens, whatever the draft guesses."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.infer import generate
from llmlab.infer.speculative import speculative_generate
from llmlab.models import Transformer, get_preset


def _model(seed, n_layer, vocab=97):
    torch.manual_seed(seed)
    return Transformer(get_preset("llama-tiny", vocab_size=vocab, seq_len=128, n_layer=n_layer)).eval()


PROMPT = [4, 8, 15, 16, 23, 42]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_equals_target_greedy_with_a_different_draft(k):
    target, draft = _model(0, 2), _model(1, 1)
    stats = {}
    assert speculative_generate(target, draft, PROMPT, 40, k=k, stats=stats) == generate(target, PROMPT, 40,
                                                                                          temperature=0)
    assert stats["rounds"] >= 40 / (k + 1)


def test_draft_equal_to_target_accepts_everything():
    target = _model(0, 2)
    stats = {}
    assert speculative_generate(target, target, PROMPT, 30, k=4, stats=stats) == generate(target, PROMPT, 30,
                                                                                           temperature=0)
    assert stats["acceptance"] == 1.0 and stats["rounds"] == 6


def test_eos_stops_and_vocabularies_must_match():
    target, draft = _model(0, 2), _model(1, 1)
    free = generate(target, PROMPT, 20, temperature=0)
    eos = free[5]
    assert speculative_generate(target, draft, PROMPT, 20, eos_id=eos) == free[:free.index(eos) + 1]
    with pytest.raises(UserError, match="vocabulary"):
        speculative_generate(target, _model(1, 1, vocab=50), PROMPT, 5)
