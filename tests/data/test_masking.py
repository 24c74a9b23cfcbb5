"""BERT masking against transformers' DataCollatorForLanguageModeling; T5 span corruption by its invariants."""

import numpy as np
import pytest
import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.common.errors import UserError
from llmlab.data.masking import mlm_mask, noise_spans, span_corruption

SPECIAL = (0, 1, 2)  # pad, cls, sep
MASK, VOCAB = 3, 500


def _batch(B=8, T=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, T), generator=g)
    ids[:, 0], ids[:, -1], ids[0, 40:] = 1, 2, 0
    return ids


def test_equals_transformers_collator_with_the_same_generator():
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "[UNK]": 4, **{f"w{i}": i for i in range(5, VOCAB)}}
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]")
    collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    ids = _batch()
    special = torch.isin(ids, torch.tensor(SPECIAL))
    for seed in range(3):
        collator.generator = torch.Generator().manual_seed(seed)
        expected = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
        ours = mlm_mask(ids, MASK, VOCAB, 0.15, SPECIAL, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ours[0], expected[0]) and torch.equal(ours[1], expected[1])


def test_80_10_10_proportions_and_invariants():
    ids = _batch(B=64, T=256)
    inputs, targets = mlm_mask(ids, MASK, VOCAB, 0.15, SPECIAL, generator=torch.Generator().manual_seed(5))
    picked = targets != IGNORE_INDEX
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert not (picked & special).any()
    assert torch.equal(targets[picked], ids[picked])
    assert torch.equal(inputs[~picked], ids[~picked])  # untouched where not picked
    rate = picked.sum() / (~special).sum()
    masked = (inputs[picked] == MASK).float().mean()
    kept = (inputs[picked] == ids[picked]).float().mean()
    assert abs(rate - 0.15) < 0.01 and abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.015  # ~2500 picked


def test_mlm_bad_probabilities():
    with pytest.raises(UserError):
        mlm_mask(_batch(), MASK, VOCAB, prob=0.0)
    with pytest.raises(UserError):
        mlm_mask(_batch(), MASK, VOCAB, mask_frac=0.95, random_frac=0.1)


def _reconstruct(inputs, targets, sentinels, eos):
    """The original ids back from T5's (input, target): each sentinel in the input takes its target span."""
    spans, current = {}, None
    for t in targets[:-1]:
        if t in sentinels:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(spans[t] if t in sentinels else [t])
    return out


@pytest.mark.parametrize("length,density,mean_span", [(100, 0.15, 3.0), (512, 0.15, 3.0), (7, 0.5, 2.0),
                                                      (2, 0.15, 3.0), (50, 0.3, 8.0)])
def test_span_corruption_reconstructs_and_counts(length, density, mean_span):
    rng = np.random.default_rng(length)
    ids = list(range(1000, 1000 + length))
    sentinels = list(range(999, 899, -1))
    for _ in range(20):
        inputs, targets = span_corruption(ids, sentinels, eos_id=1, density=density, mean_span=mean_span, rng=rng)
        assert inputs[-1] == targets[-1] == 1
        assert _reconstruct(inputs, targets, set(sentinels), 1) == ids
        n_noise = min(max(round(length * density), 1), length - 1)
        assert len(targets) - 1 - sum(t in sentinels for t in targets) == n_noise
        used = [t for t in inputs if t in sentinels]
        assert used == sentinels[:len(used)] and targets[0] == sentinels[0]
        assert inputs[0] == ids[0]  # T5's spans start with kept tokens


def test_noise_spans_is_seeded_and_span_count_matches_t5():
    a = noise_spans(200, rng=np.random.default_rng(3))
    assert np.array_equal(a, noise_spans(200, rng=np.random.default_rng(3)))
    starts = int((a[1:] & ~a[:-1]).sum())
    assert a.sum() == 30 and starts == 10  # 15% of 200, in round(30 / 3) spans


def test_span_corruption_errors():
    with pytest.raises(UserError, match="sentinels"):
        span_corruption(list(range(100)), [999], eos_id=1)
    with pytest.raises(UserError, match="at least 2"):
        span_corruption([5], [999], eos_id=1)
