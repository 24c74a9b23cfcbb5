"""Lab: kv-cache, the reference solution: llmlab's own cache (llmlab.models.kv_cache) and generation loop
(llmlab.infer.generate), which runs the prompt once and then one token per step when use_cache is set."""

import torch

from llmlab.infer.generate import _decode_loop, generate_batch
from llmlab.models.kv_cache import KVCache

__all__ = ["KVCache", "greedy_decode"]


def greedy_decode(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True
                  ) -> torch.Tensor:
    new = generate_batch(model, idx.tolist(), max_new_tokens, temperature=0.0, use_cache=use_cache)
    return torch.tensor(new, dtype=torch.long, device=idx.device)  # (B, max_new_tokens)


LLMLAB_CODE = [KVCache, _decode_loop]  # printed by `llmlab labs solution kv-cache`
