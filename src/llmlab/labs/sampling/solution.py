"""Lab: sampling, the reference solution: llmlab's own sampling functions (llmlab.infer.sampling).

The filters are llmlab's as they are; `sample` is llmlab's with the lab's short list of arguments.
"""

import torch

from llmlab.infer import sampling
from llmlab.infer.sampling import apply_temperature, top_k_filter, top_p_filter

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "sample"]


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    return sampling.sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)


LLMLAB_CODE = [apply_temperature, top_k_filter, top_p_filter, sampling.sample]  # `llmlab labs solution sampling`
