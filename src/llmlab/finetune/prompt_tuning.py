"""Prompt tuning (Lester et al. 2021): n trainable "virtual token" embeddings in front of every input.

The model stays frozen; only a (n_virtual, C) table trains. `PromptTuned` feeds
the model n placeholder ids ahead of the real ones and swaps their embeddings
for the trainable table with a forward hook on `tok_emb`, so positions, masks
and every model family work unchanged. Logits come back for the real tokens
only. The table starts as embeddings of random vocabulary tokens, which the
paper found better than random vectors.

With a KV cache the virtual tokens go in once, with the prompt (prefill); later
steps feed only new tokens, shifted P positions on. `prefix_len` tells
`KVCache.for_model` to make room for them, and `config.seq_len` is the context
left for real tokens, so generation works exactly as for the bare model.
"""

import dataclasses

import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.models.swap import freeze


class PromptTuned(nn.Module):
    def __init__(self, model: nn.Module, n_virtual: int = 16, seed: int = 0):
        super().__init__()
        if n_virtual < 1:
            raise UserError(f"n_virtual must be at least 1 for prompt tuning (got {n_virtual})")
        if n_virtual >= model.config.seq_len:
            raise UserError(f"n_virtual {n_virtual} leaves no room in a context window of {model.config.seq_len}")
        freeze(model)
        self.model, self.n_virtual, self.prefix_len = model, n_virtual, n_virtual
        self.config = dataclasses.replace(model.config, seq_len=model.config.seq_len - n_virtual)
        init = torch.randint(0, model.config.vocab_size, (n_virtual,), generator=torch.Generator().manual_seed(seed))
        self.prompt = nn.Parameter(model.tok_emb.weight[init].detach().clone())  # (P, C)
        self._active = False
        model.tok_emb.register_forward_hook(self._swap_in_prompt)

    def _swap_in_prompt(self, module: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
        if not self._active:
            return out
        P = self.n_virtual
        prompt = self.prompt.to(out.dtype).expand(out.shape[0], P, -1)  # (B, P, C)
        return torch.cat([prompt, out[:, P:]], dim=1)  # (B, P + T, C)

    def forward(self, idx: torch.Tensor, kv_cache=None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False,
                logits_mask: torch.Tensor | None = None) -> torch.Tensor:
        """As `Transformer.forward`, over the real tokens; positions count from the first real token."""
        B, T = idx.shape
        P = self.n_virtual
        prefill = kv_cache is None or kv_cache.pos == 0
        if attn_mask is not None:
            attn_mask = self._extend_mask(attn_mask.to(torch.bool), P, prefill)
        if positions is not None:
            positions = positions + P
        if not prefill:  # the virtual tokens are in the cache already
            return self.model(idx, kv_cache=kv_cache, positions=positions, attn_mask=attn_mask,
                              last_only=last_only, logits_mask=logits_mask)
        ids = torch.cat([idx.new_zeros(B, P), idx], dim=1)  # (B, P + T); placeholders, replaced by the hook
        if positions is not None:
            positions = torch.cat([torch.arange(P, device=idx.device).expand(B, P), positions], dim=1)
        if logits_mask is not None:
            logits_mask = torch.cat([logits_mask.new_zeros(B, P), logits_mask], dim=1)  # (B, P + T)
        self._active = True
        try:
            logits = self.model(ids, kv_cache=kv_cache, positions=positions, attn_mask=attn_mask,
                                last_only=last_only, logits_mask=logits_mask)
        finally:
            self._active = False
        return logits if last_only or logits_mask is not None else logits[:, P:]  # (B, 1 or T, vocab) or (N, vocab)

    @staticmethod
    def _extend_mask(mask: torch.Tensor, P: int, prefill: bool) -> torch.Tensor:
        """Every token may see the virtual tokens: keys (B, S) -> (B, P+S); full masks (B, T, S) gain P key
        columns, and at prefill also the P virtual queries' rows -> (B, P+T, P+S)."""
        B = mask.shape[0]
        if mask.dim() == 2:
            return torch.cat([mask.new_ones(B, P), mask], dim=1)
        T, S = mask.shape[1:]
        rows = torch.cat([mask.new_ones(B, T, P), mask], dim=2)  # (B, T, P+S)
        if not prefill:
            return rows
        top = torch.cat([mask.new_ones(B, P, P), mask.new_zeros(B, P, S)], dim=2)  # (B, P, P+S)
        return torch.cat([top, rows], dim=1)
