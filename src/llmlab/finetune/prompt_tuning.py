"""Prompt tuning (Lester et al. 2021): n trainable "virtual token" embeddings in front of every input.

The model stays frozen; only a (n_virtual, C) table trains. `PromptTuned` feeds
the model n placeholder ids ahead of the real ones and swaps their embeddings
for the trainable table with a forward hook on `tok_emb`, so positions, masks
and every model family work unchanged. Logits come back for the real tokens
only. The table starts as embeddings of random vocabulary tokens, which the
paper found better than random vectors. No KV cache: generation reruns the
sequence (fine for short answers).
"""

import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.finetune.lora import freeze


class PromptTuned(nn.Module):
    def __init__(self, model: nn.Module, n_virtual: int = 16, seed: int = 0):
        super().__init__()
        if n_virtual < 1:
            raise UserError(f"--rank {n_virtual}: prompt tuning needs at least one virtual token")
        freeze(model)
        self.model, self.n_virtual = model, n_virtual
        self.config = model.config
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
                attn_mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        if kv_cache is not None:
            raise UserError("prompt tuning runs without a KV cache; generate with use_cache=False")
        B, T = idx.shape
        P = self.n_virtual
        ids = torch.cat([idx.new_zeros(B, P), idx], dim=1)  # (B, P + T); placeholders, replaced by the hook
        if positions is not None:
            positions = torch.cat([torch.arange(P, device=idx.device).expand(B, P), positions + P], dim=1)
        if attn_mask is not None:
            attn_mask = self._extend_mask(attn_mask.to(torch.bool), P)
        self._active = True
        try:
            logits = self.model(ids, positions=positions, attn_mask=attn_mask, last_only=last_only)
        finally:
            self._active = False
        return logits if last_only else logits[:, P:]  # (B, 1 or T, vocab)

    @staticmethod
    def _extend_mask(mask: torch.Tensor, P: int) -> torch.Tensor:
        """Every token may see the virtual tokens: (B, S) -> (B, P+S); (B, T, S) -> (B, P+T, P+S)."""
        B = mask.shape[0]
        if mask.dim() == 2:
            return torch.cat([mask.new_ones(B, P), mask], dim=1)
        T, S = mask.shape[1:]
        top = torch.cat([mask.new_ones(B, P, P), mask.new_zeros(B, P, S)], dim=2)  # (B, P, P+S)
        bottom = torch.cat([mask.new_ones(B, T, P), mask], dim=2)  # (B, T, P+S)
        return torch.cat([top, bottom], dim=1)
