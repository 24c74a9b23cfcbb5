"""Fine-tuning by composition: LoRA, QLoRA (NF4), bottleneck adapters, prompt tuning, classification heads.

Every method wraps or replaces modules of an existing `Transformer` in place;
there is no second model tree. Training loops live in `llmlab.recipes.finetune`.
"""

from llmlab.finetune.lora import LoRALinear, apply_lora, merge_lora, unmerge_lora

__all__ = ["LoRALinear", "apply_lora", "merge_lora", "unmerge_lora"]
