"""Classification on a decoder (the courses' spam/sentiment exercise): a new head on the last token.

`add_classification_head` replaces the LM head (vocab_size outputs) by a
linear layer with one output per class; the model then returns (B, T, K)
class logits and the prediction is read at each row's last real token, the
only position that has seen the whole text (`llmlab.infer.classify`). By
default the head and the last block train and the rest stays frozen, as in
Raschka's "LLMs from scratch" ch. 6. Accuracy and the confusion matrix are
`llmlab.eval.classification`'s.
"""

import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.models.swap import freeze


def add_classification_head(model: nn.Module, num_classes: int, train_last_blocks: int = 1) -> nn.Module:
    """Swap `model.lm_head` for an (n_embd -> num_classes) layer, freeze all but it, the last blocks and the
    final norm. Returns the model."""
    if num_classes < 2:
        raise UserError(f"num_classes must be at least 2 for classification (got {num_classes})")
    if not 0 <= train_last_blocks <= len(model.blocks):
        raise UserError(f"train_last_blocks must be between 0 and {len(model.blocks)} (got {train_last_blocks})")
    freeze(model)
    device = model.tok_emb.weight.device
    model.lm_head = nn.Linear(model.config.n_embd, num_classes, device=device)  # unties it from tok_emb
    trainable = [model.lm_head, model.norm_f, *list(model.blocks)[len(model.blocks) - train_last_blocks:]]
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return model


def add_score_head(model: nn.Module) -> nn.Module:
    """Swap `model.lm_head` for one scalar output (n_embd -> 1, no bias, as HF's `score` layer): a reward model.

    Only the head is new, and it trains; what else trains is left as the method applied before decided.
    """
    weight = model.tok_emb.weight
    model.lm_head = nn.Linear(model.config.n_embd, 1, bias=False, device=weight.device, dtype=weight.dtype)
    nn.init.normal_(model.lm_head.weight, std=model.config.init_std)  # HF's init for `score`
    return model
