"""Resumable checkpoints of the trainable part only: what a LoRA/adapter/prompt run needs to continue.

A parameter-efficient run trains ~1% of the weights; saving the frozen base
every time would write hundreds of MB to keep a few. This folder holds

    trainable.safetensors      every parameter with requires_grad, by its name in the model
    trainer_state.safetensors  optimizer moments and RNG states (`llmlab.train.checkpoint`'s layout)
    finetune.json              step, history, run arguments, optimizer param groups

and is written aside and swapped in by rename, like full checkpoints. Full
fine-tuning uses `llmlab.train.checkpoint` directly. (Candidate to move into
`llmlab.train.checkpoint` as a `trainable_only` option.)
"""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from llmlab.common.errors import UserError
from llmlab.common.io import write_json_atomic
from llmlab.train.checkpoint import STATE_FILE, _optimizer_tensors, _rng_tensors

META_FILE = "finetune.json"
TRAINABLE_FILE = "trainable.safetensors"


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                              meta: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save_file(trainable_tensors(model), tmp / TRAINABLE_FILE)
        tensors, groups = _optimizer_tensors(optimizer)
        save_file({k: v.cpu().contiguous() for k, v in {**tensors, **_rng_tensors()}.items()}, tmp / STATE_FILE)
        write_json_atomic(tmp / META_FILE, {**meta, "optimizer_param_groups": groups})
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    state = load_file(path / STATE_FILE)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["optimizer_param_groups"]})
    torch.set_rng_state(state["rng.cpu"])
    return meta
