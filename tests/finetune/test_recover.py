"""LoRA recovery after pruning: the loss on the training text falls, and the zeros stay exactly where they were."""

import pytest
import torch
import torch.nn as nn

from llmlab.common import log
from llmlab.finetune.recover import pruning_masks, recover_pruned
from llmlab.models import Transformer, get_preset
from llmlab.quantize.prune import is_n_m_sparse, prune_n_m, prune_wanda
from llmlab.train.objectives import lm_loss


def setup(seed=0):
    log.set_quiet(True)
    torch.manual_seed(seed)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=64))
    g = torch.Generator().manual_seed(seed)
    # text with structure to learn: a repeated random phrase, so recovery has something to win back
    phrase = torch.randint(0, 128, (24,), generator=g)
    windows = [phrase.repeat(3)[i:i + 33].repeat(4, 1) for i in range(0, 24, 3)]  # (4, 33) each
    return model, windows


def mean_loss(model, windows):
    with torch.no_grad():
        return sum(lm_loss(model.eval(), (w[:, :-1], w[:, 1:])).item() for w in windows) / len(windows)


def test_recovery_lowers_the_loss_and_keeps_unstructured_zeros():
    model, windows = setup()
    prune_wanda(model, [w[:, :-1] for w in windows], sparsity=0.5)
    masks = pruning_masks(model)
    before = mean_loss(model, windows)
    history = recover_pruned(model, windows, steps=30, lr=3e-3, progress=False)
    assert len(history) == 30 and history[-1]["loss"] < history[0]["loss"]
    assert mean_loss(model, windows) < before - 0.1
    for name, keep in masks.items():
        layer = model.get_submodule(name)
        assert type(layer) is nn.Linear  # LoRA merged away: plain layers again
        assert torch.equal(layer.weight != 0, keep), name  # no pruned weight came back, none was lost


def test_recovery_keeps_the_2_4_pattern():
    model, windows = setup(1)
    prune_n_m(model, 2, 4)
    recover_pruned(model, windows, steps=5, progress=False)
    assert all(is_n_m_sparse(m.weight, 2, 4) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and "lm_head" not in n)


def test_recovery_rejects_nothing_to_train_on():
    model, windows = setup()
    with pytest.raises(ValueError, match="at least one batch"):
        recover_pruned(model, [], steps=3)
    with pytest.raises(ValueError, match="at least 1"):
        recover_pruned(model, windows, steps=0)
