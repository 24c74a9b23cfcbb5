"""The mixture-of-experts training objective: the task's loss plus the router's auxiliary losses.

A mixture trained on cross-entropy alone tends to collapse onto a few experts (the router's favourites get
the gradient, so they get better, so they are chosen more). The load-balancing loss (Switch Transformer,
Fedus et al. 2022) pushes the router towards an even load; the router z-loss (ST-MoE, Zoph et al. 2022)
keeps its logits small. The model computes both in each forward (`llmlab.models.moe`); this file adds them,
weighted by the model config's `aux_loss_coef` and `z_loss_coef`, to any `*_loss(model, batch)`.
"""

from collections.abc import Callable

import torch

from llmlab.train.objectives import lm_loss


def with_aux_loss(loss_fn: Callable = lm_loss) -> Callable:
    """loss_fn(model, batch) -> (loss + model.aux_loss(), {"ce": loss, "aux": aux}) for the loop to log.

    A dense model's aux loss is 0, so wrapping is harmless; the loop's "loss" column is then the sum, and
    "ce" the task's loss alone (what to compare with a dense model).
    """
    def loss_with_aux(model: torch.nn.Module, batch: tuple):
        out = loss_fn(model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        inner = getattr(model, "_orig_mod", model)  # a torch.compile'd model keeps the real one here
        aux = inner.aux_loss() if hasattr(inner, "aux_loss") else loss.new_zeros(())
        return loss + aux, {**metrics, "ce": loss.item(), "aux": aux.item()}

    return loss_with_aux


moe_lm_loss = with_aux_loss(lm_loss)
