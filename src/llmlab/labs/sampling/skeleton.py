"""Lab: sampling. Fill in the bodies below, then run `llmlab labs check sampling` (or the notebook).

logits are (B, V): one row of scores over the vocabulary per sequence. A filter returns new logits (B, V)
with the removed tokens set to -inf (so softmax gives them probability 0); `sample` returns token ids (B,).
"""

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by the temperature: below 1 sharpens the distribution, above 1 flattens it."""
    raise NotImplementedError("TODO: one line")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf. k larger than V keeps everything."""
    raise NotImplementedError("TODO: the k-th largest value per row (topk), then masked_fill below it")


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of likeliest tokens whose probabilities sum to at least p
    (the token that takes the sum past p is kept; the most likely token always is), the rest -inf."""
    raise NotImplementedError("TODO: sort descending, cumulative softmax, mask, put the mask back in order")


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,): temperature, then top-k, then top-p, then a random draw from the softmax using
    `generator`. temperature=0 means greedy: the argmax, no randomness."""
    raise NotImplementedError("TODO: the filters in order, softmax, torch.multinomial(..., generator=generator)")
