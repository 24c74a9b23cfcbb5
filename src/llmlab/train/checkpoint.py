"""Checkpoints: safetensors for every tensor, JSON for everything else; never pickle.

A checkpoint is a folder:
  model.safetensors          the weights (a tied output head is stored once)
  llmlab.json                model config, step, tokens seen, run arguments, loss history, sampler state
  tokenizer.llmlab.json      the tokenizer
  trainer_state.safetensors  optimizer moments and RNG states (only when saved for resuming)
It is written into a temporary sibling folder and swapped in by rename, so a
crash leaves the previous checkpoint whole (as `<dir>.old` during the swap).
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmlab.common.errors import UserError
from llmlab.common.io import current_umask, write_json_atomic
from llmlab.models import ModelConfig, Transformer

META_FILE = "llmlab.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.llmlab.json"
STATE_FILE = "trainer_state.safetensors"


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / META_FILE).is_file()


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (safetensors refuses aliases)."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().contiguous()
    return out


def write_folder_atomically(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Call `fill(tmp)` on a fresh sibling folder, then swap it in for `path` by rename.

    During the swap the previous folder is `<path>.old`; readers fall back to it (see `_resolve`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes folders private (0700)
        fill(tmp)
        old = path.with_name(path.name + ".old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_trainer_state(folder: Path, optimizer: torch.optim.Optimizer) -> list[dict]:
    """Write optimizer moments and RNG states to `folder/trainer_state.safetensors`; return the param groups
    (plain numbers, for the caller's JSON)."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, folder / STATE_FILE)
    return sd["param_groups"]


def load_trainer_state(folder: Path, optimizer: torch.optim.Optimizer, param_groups: list[dict]) -> None:
    """Restore what `save_trainer_state` wrote, so the next step is the one the original run would take."""
    if not (folder / STATE_FILE).is_file():
        raise UserError(f"{folder}: this checkpoint has no {STATE_FILE}, so training cannot resume from it")
    state = load_file(folder / STATE_FILE)
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("optim."):  # torch moves each moment to its parameter's device on load
            _, i, name = key.split(".", 2)
            per_param.setdefault(int(i), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": param_groups})
    torch.set_rng_state(state["rng.cpu"])
    cuda_states = [state[k] for k in sorted(k for k in state if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | Path, model: Transformer, tokenizer, meta: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write a whole checkpoint folder atomically (write aside, then swap)."""
    def fill(tmp: Path) -> None:
        save_file({k: v.cpu() for k, v in model_tensors(model).items()}, tmp / WEIGHTS_FILE)
        full_meta = {"format": "llmlab-checkpoint", "version": 1, "model": model.config.to_dict(), **meta}
        if optimizer is not None:
            full_meta["optimizer_param_groups"] = save_trainer_state(tmp, optimizer)
        tokenizer.save(tmp / TOKENIZER_FILE)
        write_json_atomic(tmp / META_FILE, full_meta)

    write_folder_atomically(path, fill)


def _resolve(path: str | Path) -> Path:
    """The checkpoint folder, or its `.old` twin if a swap was interrupted."""
    path = Path(path)
    if not is_checkpoint(path) and is_checkpoint(path.with_name(path.name + ".old")):
        return path.with_name(path.name + ".old")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint folder")
    if not is_checkpoint(path):
        raise UserError(f"{path}: not an llmlab checkpoint (no {META_FILE}); give the folder pretraining wrote")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = _resolve(path)
    try:
        return json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path / META_FILE}: corrupt checkpoint metadata ({e.msg})") from None


def load_weights(model: Transformer, path: str | Path) -> None:
    """Load weights strictly: every tensor present with the shape the config implies."""
    file = _resolve(path) / WEIGHTS_FILE
    try:
        sd = load_file(file)
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise UserError(f"{file}: cannot read weights ({e})") from None
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise UserError(f"{file}: tensor {k} has shape {tuple(v.shape)} but the config implies "
                            f"{tuple(own[k].shape)}; the weights and llmlab.json disagree")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"{file}: weights do not match the config (missing {sorted(set(missing) - tied)[:3]}, "
                        f"unexpected {unexpected[:3]})")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, meta) from a checkpoint folder, ready for inference."""
    from llmlab.tokenizer import Tokenizer

    path = _resolve(path)
    meta = read_meta(path)
    model = Transformer(ModelConfig.from_dict(meta["model"], source=str(path / META_FILE)))
    load_weights(model, path)
    tokenizer = Tokenizer.load(path / TOKENIZER_FILE)
    return model.to(device).eval(), tokenizer, meta


def restore_training_state(path: str | Path, model: Transformer, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load weights, optimizer moments and RNG states for an exact resume; return the metadata."""
    path = _resolve(path)
    meta = read_meta(path)
    load_weights(model, path)
    load_trainer_state(path, optimizer, meta["optimizer_param_groups"])
    return meta
