"""Fine-tuning by composition: LoRA, QLoRA, bottleneck adapters, prompt tuning, classification heads.

Every method wraps or replaces modules of an existing `Transformer` in place;
there is no second model tree. `methods.py` names them all; the training run
itself is `llmlab.recipes.finetune`'s, on the shared loop in `llmlab.train`.
"""

from llmlab.finetune.lora import LoRALinear, apply_lora, apply_qlora, merge_lora, unmerge_lora, unwrap_lora
from llmlab.finetune.methods import METHODS, apply_method

__all__ = ["METHODS", "LoRALinear", "apply_lora", "apply_method", "apply_qlora", "merge_lora", "unmerge_lora",
           "unwrap_lora"]
