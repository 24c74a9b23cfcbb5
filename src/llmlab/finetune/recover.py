"""Recovery fine-tuning after pruning: a short LoRA run on plain text, merged back without losing sparsity.

Pruning half of every weight matrix costs perplexity; a few dozen steps of next-token training on
ordinary text win part of it back (Sun et al. 2023, "Wanda", section 5; Ma et al. 2023, "LLM-Pruner").
LoRA trains only a low-rank update B @ A per layer, so the run is cheap, but that update is dense:
merging it as is would fill the zeros back in. `recover_pruned` therefore merges through each layer's
mask, W' = (W + B @ A) * M, which keeps the pruned pattern (unstructured or 2:4) exactly; what the
masked-out part of the update would have added is lost, and the report shows how much remains.

This file does not prune (`llmlab.quantize.prune` does) and does not choose the text: the caller
passes token windows, usually `llmlab.quantize.calibration.calibration_batches` on training text.
"""

from collections.abc import Sequence

import torch
import torch.nn as nn

from llmlab.finetune.lora import apply_lora, unwrap_lora
from llmlab.train.loop import LoopSettings, TrainState, train_loop
from llmlab.train.objectives import lm_loss
from llmlab.train.optim import make_adamw

# every block projection: pruning touched all of them, so all of them get an update to recover with
RECOVERY_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                    "c_attn", "c_proj", "c_fc")


def pruning_masks(model: nn.Module, skip: Sequence[str] = ("lm_head",)) -> dict[str, torch.Tensor]:
    """Where each linear layer's weight is non-zero (bool, same shape), by module name."""
    return {name: m.weight != 0 for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(s in name for s in skip)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero every weight a mask marks as pruned."""
    for name, keep in masks.items():
        model.get_submodule(name).weight.mul_(keep)


def recover_pruned(model: nn.Module, windows: Sequence[torch.Tensor], steps: int, lr: float = 1e-3,
                   rank: int = 8, alpha: float = 16.0, targets: Sequence[str] = RECOVERY_TARGETS,
                   progress: bool = True) -> list[dict]:
    """Train LoRA on `windows` for `steps` steps, merge it through the pruning masks, return the loss history.

    windows: token-id batches (B, T); each step trains on the next one (cycling) with the next-token loss.
    The model comes back as plain `nn.Linear` layers with exactly the zeros it had before.
    """
    if steps < 1:
        raise ValueError(f"recovery steps must be at least 1, got {steps}")
    if not windows:
        raise ValueError("recovery needs at least one batch of token windows")
    masks = pruning_masks(model)
    device = next(model.parameters()).device
    present = {n.rsplit(".", 1)[-1] for n in masks}
    apply_lora(model, rank, alpha, targets=[t for t in targets if t in present] or list(targets))
    optimizer = make_adamw(model, lr, weight_decay=0.0, device_type=device.type)
    position = [0]

    def next_batch() -> tuple:
        ids = windows[position[0] % len(windows)].to(device)  # (B, T)
        position[0] += 1
        return ids[:, :-1], ids[:, 1:]

    settings = LoopSettings(max_steps=steps, lr=lr, warmup_steps=min(5, steps // 5), progress=progress)
    state = train_loop(model, optimizer, next_batch, settings, TrainState(), loss_fn=lm_loss)
    unwrap_lora(model)  # W + B @ A as plain Linear layers
    apply_masks(model, masks)  # ... with the pruned entries zero again
    model.eval()
    return state.history
