"""Pretraining objectives for encoders: BERT's masked tokens and T5's span corruption. Pure and seeded.

- `mlm_mask` (Devlin et al. 2018, section 3.1): pick each non-special token with probability 0.15; of the
  picked, 80% become [MASK], 10% a random token, 10% stay as they are; only picked positions have targets.
  The draws are made in the order of transformers' `DataCollatorForLanguageModeling`, so the same torch
  generator state gives the same masks.
- `span_corruption` (Raffel et al. 2019, section 3.1.4): drop ~15% of the tokens in spans of mean length 3;
  the input keeps the rest with one sentinel per dropped span, the target lists each sentinel followed by
  the tokens it replaced, then EOS. Span lengths are drawn as T5's `random_spans_noise_mask` does:
  "the cat sat on the mat" -> input "the <0> on the mat </s>", target "<0> cat sat </s>".

This file knows token ids only: which ids are special, masks and sentinels are the caller's choice.
"""

from collections.abc import Sequence

import numpy as np
import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.common.errors import UserError


def mlm_mask(ids: torch.Tensor, mask_id: int, vocab_size: int, prob: float = 0.15, special_ids: Sequence[int] = (),
             mask_frac: float = 0.8, random_frac: float = 0.1, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) for masked-language modelling from ids (B, T); targets are -100 where not picked.

    Special ids (padding, [CLS], [SEP]) are never picked. Random replacements are uniform over the vocabulary.
    """
    if not 0 < prob < 1 or mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1:
        raise UserError(f"masking: need 0 < prob < 1 and mask_frac + random_frac <= 1 (got prob={prob}, "
                        f"mask_frac={mask_frac}, random_frac={random_frac})")
    inputs, targets = ids.clone(), ids.clone()
    p = torch.full(ids.shape, prob)
    p.masked_fill_(torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype)), 0.0)
    picked = torch.bernoulli(p, generator=generator).bool()
    targets[~picked] = IGNORE_INDEX
    to_mask = torch.bernoulli(torch.full(ids.shape, mask_frac), generator=generator).bool() & picked
    inputs[to_mask] = mask_id
    if mask_frac == 1 or random_frac == 0:
        return inputs, targets
    # of the picked tokens not masked, this share is randomised (0.1 / 0.2 = half), the rest kept
    to_random = torch.bernoulli(torch.full(ids.shape, random_frac / (1 - mask_frac)), generator=generator).bool()
    to_random &= picked & ~to_mask
    random_ids = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, targets


def _random_segmentation(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split n_items into n_segments non-empty parts at random: the lengths, summing to n_items."""
    first = np.arange(n_items - 1) < n_segments - 1  # (n_items - 1,) segment boundaries, then shuffled
    rng.shuffle(first)
    segment_id = np.cumsum(np.concatenate([[False], first]))
    return np.bincount(segment_id, minlength=n_segments)


def noise_spans(length: int, density: float = 0.15, mean_span: float = 3.0,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """A boolean mask (length,) of the tokens to drop: round(length * density) of them (at least 1, at most
    length - 1) in round(count / mean_span) spans (at least 1), alternating kept/dropped, kept first."""
    if length < 2:
        raise UserError(f"span corruption needs at least 2 tokens (got {length})")
    rng = rng if rng is not None else np.random.default_rng(0)
    n_noise = min(max(int(round(length * density)), 1), length - 1)
    n_spans = max(int(round(n_noise / mean_span)), 1)
    n_spans = min(n_spans, n_noise, length - n_noise)
    noise = _random_segmentation(n_noise, n_spans, rng)
    kept = _random_segmentation(length - n_noise, n_spans, rng)
    lengths = np.stack([kept, noise], axis=1).reshape(-1)  # (2 * n_spans,) kept, dropped, kept, dropped...
    return np.repeat(np.arange(2 * n_spans) % 2 == 1, lengths)


def span_corruption(ids: Sequence[int], sentinel_ids: Sequence[int], eos_id: int, density: float = 0.15,
                    mean_span: float = 3.0, rng: np.random.Generator | None = None) -> tuple[list[int], list[int]]:
    """(input ids, target ids) for T5's objective. Sentinel k replaces the k-th dropped span.

    ids [10, 11, 12, 13, 14, 15] with spans dropped at 11-12 and 15, sentinels [99, 98], eos 1:
    input [10, 99, 13, 14, 98, 1], target [99, 11, 12, 98, 15, 1].
    """
    noise = noise_spans(len(ids), density, mean_span, rng)
    n_spans = int((noise[1:] & ~noise[:-1]).sum() + noise[0])
    if n_spans > len(sentinel_ids):
        raise UserError(f"span corruption: {n_spans} spans need as many sentinels, only {len(sentinel_ids)} given")
    inputs, targets, span = [], [], -1
    for i, (tok, dropped) in enumerate(zip(ids, noise, strict=True)):
        starts = dropped and (i == 0 or not noise[i - 1])
        if starts:
            span += 1
            inputs.append(sentinel_ids[span])
            targets.append(sentinel_ids[span])
        (targets if dropped else inputs).append(int(tok))
    return inputs + [eos_id], targets + [eos_id]
