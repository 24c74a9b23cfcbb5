"""Lab: kv-cache. Fill in the bodies below, then run `llmlab labs check kv-cache` (or the notebook).

During generation, each new token attends to the keys and values of every earlier one. Those never change, so a
KV cache keeps them: each step then runs the model on the newest token only. Your cache plugs into llmlab's
decoder, which calls it like this for every layer i of one forward pass over T new tokens:

    k_all, v_all = cache.update(i, k, v)    # k, v: (B, n_kv_head, T, head_dim) for the T new positions
    ...                                     # attention of the T queries over k_all, v_all (B, n_kv_head, S, head_dim)
    cache.advance(T)                        # once, after the last layer; cache.pos is then S
"""

import torch


class KVCache:
    """Keys and values of the positions seen so far, per layer.

    pos: how many positions are stored (0 when new), the same for every layer and every row of the batch.
    Preallocating zeros of (n_layer, batch_size, n_kv_head, max_len, head_dim) for k and for v is one way.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int):
        raise NotImplementedError("TODO: storage for keys and values, and pos = 0")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_head, T, head_dim) of `layer` after the pos positions already there, and return
        all of that layer's keys and values so far, each (B, n_kv_head, pos + T, head_dim). Does not move pos."""
        raise NotImplementedError("TODO: write at positions pos .. pos + T, return positions 0 .. pos + T")

    def advance(self, T: int) -> None:
        """T more positions are stored in every layer now."""
        raise NotImplementedError("TODO: one line")


def greedy_decode(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True
                  ) -> torch.Tensor:
    """Greedy generation with an llmlab Transformer: idx (B, T) prompt ids -> (B, max_new_tokens) new ids.

    Each step picks the argmax of the last position's logits. Without a cache, run the whole sequence every
    step: model(ids). With one, KVCache(c.n_layer, B, c.n_kv_head, T + max_new_tokens, c.head_dim) for
    c = model.config, run the prompt once, model(idx, kv_cache=cache), then only the newest token each step.
    """
    raise NotImplementedError("TODO: a loop of max_new_tokens steps, under torch.no_grad()")
