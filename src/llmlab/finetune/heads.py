"""Classification on a decoder (the courses' spam/sentiment exercise): a new head on the last token.

`add_classification_head` replaces the LM head (vocab_size outputs) by a
linear layer with one output per class; the model then returns (B, T, K)
class logits and the prediction is read at each row's last real token, the
only position that has seen the whole text. By default the head and the last
block train and the rest stays frozen, as in Raschka's "LLMs from scratch" ch. 6.
"""

import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.finetune.lora import freeze


def add_classification_head(model: nn.Module, num_classes: int, train_last_blocks: int = 1) -> nn.Module:
    """Swap `model.lm_head` for an (n_embd -> num_classes) layer, freeze all but it, the last blocks and the
    final norm. Returns the model."""
    if num_classes < 2:
        raise UserError(f"classification needs at least 2 classes, got {num_classes}")
    freeze(model)
    device = model.tok_emb.weight.device
    model.lm_head = nn.Linear(model.config.n_embd, num_classes, device=device)  # unties it from tok_emb
    trainable = [model.lm_head, model.norm_f, *list(model.blocks)[len(model.blocks) - train_last_blocks:]]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def last_token_logits(logits: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, K) -> (B, K) at each row's last real token; attn_mask (B, T) is 1 on tokens (right padding)."""
    if attn_mask is None:
        return logits[:, -1]
    last = attn_mask.long().sum(dim=1) - 1  # (B,)
    return logits[torch.arange(logits.shape[0], device=logits.device), last]


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item() if labels.numel() else 0.0


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class.

    labels=[0, 1, 1], preds=[0, 1, 0] -> [[1, 0], [1, 1]].
    """
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)
