"""Lab: LoRA, the reference solution: llmlab's own LoRA (llmlab.finetune.lora) behind the lab's names.

llmlab's `LoRALinear` calls its matrices lora_A and lora_B (PEFT's names, so adapters load both ways) and
merges in place; the lab asks for A, B and a merge() that returns a new layer, so this adapter adds those.
"""

import torch
import torch.nn as nn

from llmlab.finetune import lora


class LoRALinear(lora.LoRALinear):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base, rank, alpha)
        base.requires_grad_(False)  # apply_lora freezes the whole model; a layer on its own freezes here

    @property
    def A(self) -> nn.Parameter:
        return self.lora_A

    @property
    def B(self) -> nn.Parameter:
        return self.lora_B

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        merged = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None)
        merged.weight.copy_(self.base.weight + self.delta_weight())
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged


def add_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = ("q_proj", "v_proj")) -> nn.Module:
    return lora.apply_lora(model, rank, alpha, targets=targets)


LLMLAB_CODE = [lora.LoRALinear, lora.apply_lora]  # printed by `llmlab labs solution lora`
