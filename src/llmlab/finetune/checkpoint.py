"""Resumable checkpoints of the trainable part only: what a LoRA/adapter/prompt run needs to continue.

A parameter-efficient run trains ~1% of the weights; saving the frozen base
every time would write hundreds of MB to keep a few. This folder holds

    trainable.safetensors      every parameter with requires_grad, by its name in the model
    trainer_state.safetensors  optimizer moments and RNG states (`llmlab.train.checkpoint`'s layout)
    finetune.json              step, history, run arguments, optimizer param groups

and is written aside and swapped in by rename, like full checkpoints (the swap
and the optimizer/RNG state come from `llmlab.train.checkpoint`). Full
fine-tuning uses `llmlab.train.checkpoint` directly.
"""

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.train.checkpoint import load_trainer_state, save_trainer_state, write_folder_atomically

META_FILE = "finetune.json"
TRAINABLE_FILE = "trainable.safetensors"


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                              meta: dict[str, Any]) -> None:
    def fill(tmp: Path) -> None:
        save_file(trainable_tensors(model), tmp / TRAINABLE_FILE)
        groups = save_trainer_state(tmp, optimizer)
        write_json_atomic(tmp / META_FILE, {**meta, "optimizer_param_groups": groups})

    write_folder_atomically(path, fill)


def restore_trainable_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load trainable weights, optimizer moments and RNG states; return the metadata."""
    path = Path(path)
    if not (path / META_FILE).is_file() and (path.with_name(path.name + ".old") / META_FILE).is_file():
        path = path.with_name(path.name + ".old")  # a swap was interrupted: the previous one is whole
    if not (path / META_FILE).is_file():
        raise UserError(f"--resume: {path} holds no fine-tuning checkpoint ({META_FILE}); drop --resume or "
                        "point --out at the earlier run")
    meta = json.loads((path / META_FILE).read_text())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(path / TRAINABLE_FILE).items():
            if name not in params or params[name].shape != value.shape:
                raise UserError(f"--resume {path}: tensor {name} does not fit this model; same --method, --rank "
                                "and --targets as the original run?")
            params[name].copy_(value)
    load_trainer_state(path, optimizer, meta["optimizer_param_groups"])
    return meta
