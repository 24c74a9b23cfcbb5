"""Checkpoint folders: safetensors for every tensor, JSON for everything else; never pickle.

Every stage that trains writes the same folder:

    llmlab.json                what the folder holds: `weights` ("full" or "trainable"), the model
                               config, and the run's own record (arguments, step, history, sampler)
    model.safetensors          weights = "full": every tensor (a tied output head stored once)
    trainable.safetensors      weights = "trainable": only the parameters that train, by their name
                               in the wrapped model; llmlab.json then names the `base` model and the
                               `method` that wraps it, the way PEFT's adapter_config.json does
    tokenizer.llmlab.json      the tokenizer (full weights; a trainable set uses its base's)
    trainer_state.safetensors  optimizer moments and RNG states (only when saved for resuming)

A folder is written into a temporary sibling and swapped in by rename, so a
crash leaves the previous checkpoint whole (as `<dir>.old` during the swap,
which readers fall back to). This file moves tensors between folders and a
model the caller built; building models from a folder is `llmlab.load`'s job.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.common.io import current_umask, write_json_atomic

META_FILE = "llmlab.json"
WEIGHTS_FILE = "model.safetensors"
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.safetensors"


def old_twin(path: str | Path) -> Path:
    """Where the previous folder waits while a new one is swapped in."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def is_checkpoint(path: str | Path) -> bool:
    """An llmlab checkpoint folder, or one whose swap was interrupted (only `<path>.old` is whole)."""
    return (Path(path) / META_FILE).is_file() or (old_twin(path) / META_FILE).is_file()


def resolve(path: str | Path) -> Path:
    """The checkpoint folder itself, or its `.old` twin if a swap was interrupted."""
    path = Path(path)
    if not (path / META_FILE).is_file() and (old_twin(path) / META_FILE).is_file():
        return old_twin(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint folder")
    if not (path / META_FILE).is_file():
        raise UserError(f"{path}: not an llmlab checkpoint (no {META_FILE}); give the folder a training run wrote")
    return path


def write_folder_atomically(path: str | Path, fill: Callable[[Path], None]) -> None:
    """Call `fill(tmp)` on a fresh sibling folder, then swap it in for `path` by rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes folders private (0700)
        fill(tmp)
        old = old_twin(path)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once (safetensors refuses aliases), on the CPU."""
    out, seen = {}, set()
    for k, v in model.state_dict().items():
        if v.data_ptr() in seen:
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().cpu().contiguous()
    return out


def trainable_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains, by its name in the model, on the CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


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


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any], *, tokenizer: Any = None,
                    optimizer: torch.optim.Optimizer | None = None, trainable_only: bool = False,
                    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
    """Write a checkpoint folder atomically: all weights (with the tokenizer), or with `trainable_only` the
    parameters that train (then `meta` must name the `base` model and the `method` that wraps it).
    `extra_tensors` {file name: tensors} go into the same folder (a PPO value head beside its policy)."""
    if trainable_only and not ({"base", "method"} <= set(meta)):
        raise ValueError("a trainable-only checkpoint needs 'base' and 'method' in its metadata")

    def fill(tmp: Path) -> None:
        full_meta = {"format": "llmlab-checkpoint", "version": 1, "weights": "trainable" if trainable_only else "full",
                     "model": model.config.to_dict(), **meta}
        if trainable_only:
            save_file(trainable_tensors(model), tmp / TRAINABLE_FILE)
        else:
            save_file(model_tensors(model), tmp / WEIGHTS_FILE)
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
        for name, tensors in (extra_tensors or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / name)
        if optimizer is not None:
            full_meta["optimizer_param_groups"] = save_trainer_state(tmp, optimizer)
        write_json_atomic(tmp / META_FILE, full_meta)

    write_folder_atomically(path, fill)


def read_meta(path: str | Path) -> dict[str, Any]:
    path = resolve(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path / META_FILE}: corrupt checkpoint metadata ({e.msg})") from None
    meta.setdefault("weights", "full")  # folders written before trainable-only sets existed
    return meta


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise UserError(f"{file}: cannot read weights ({e})") from None


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load full weights strictly: every tensor present with the shape the config implies."""
    file = resolve(path) / WEIGHTS_FILE
    sd = _read_tensors(file)
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise UserError(f"{file}: tensor {k} has shape {tuple(v.shape)} but the config implies "
                            f"{tuple(own[k].shape)}; the weights and {META_FILE} disagree")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"{file}: weights do not match the config (missing {sorted(set(missing) - tied)[:3]}, "
                        f"unexpected {unexpected[:3]})")


@torch.no_grad()
def load_trainable(model: torch.nn.Module, path: str | Path) -> None:
    """Fill the model's trainable parameters from a trainable-only folder; names and shapes must match both ways."""
    file = resolve(path) / TRAINABLE_FILE
    sd = _read_tensors(file)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    extra, missing = sorted(set(sd) - set(params)), sorted(set(params) - set(sd))
    if extra or missing:
        raise UserError(f"{file}: the saved weights do not fit this model (unexpected {extra[:2]}, missing "
                        f"{missing[:2]}); was it made with the same method, rank and targets?")
    for name, value in sd.items():
        if params[name].shape != value.shape:
            raise UserError(f"{file}: tensor {name} has shape {tuple(value.shape)}, the model expects "
                            f"{tuple(params[name].shape)}; same method, rank and targets as the original run?")
        params[name].copy_(value)


def restore_training_state(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load weights (full or trainable), optimizer moments and RNG states for an exact resume; return the metadata."""
    path = resolve(path)
    meta = read_meta(path)
    if meta["weights"] == "trainable":
        load_trainable(model, path)
    else:
        load_weights(model, path)
    load_trainer_state(path, optimizer, meta["optimizer_param_groups"])
    return meta


def base_reference(source: str) -> str:
    """How a trainable-only folder names its base: an absolute path for a local file or folder, else the alias
    or hub id as given."""
    return str(Path(source).resolve()) if Path(source).exists() else source


def check_resume(saved: dict[str, Any], current: dict[str, Any], keys: Iterable[str], where: str | Path) -> None:
    """Refuse to resume when a setting that shapes the run changed; name the first few differences."""
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        raise UserError(f"{where}: the run was started with other settings ({'; '.join(diffs[:4])}); "
                        "resume with the original settings or start a new run in another folder")
