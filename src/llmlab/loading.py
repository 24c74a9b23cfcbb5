"""`llmlab.load`: one entry point that opens a model whatever stage made it.

A source is an alias, a .gguf file, a Hugging Face folder or hub id, or a folder
an llmlab command wrote:

    run folder            holds checkpoint/ (pretraining, speedrun, fine-tuning runs): open that
    full checkpoint       llmlab.json + model.safetensors (pretraining, full fine-tuning, merge)
    quantised checkpoint  a full checkpoint whose llmlab.json has a "quantization" record (llmlab quantize,
                          GPTQ, AWQ): build the Transformer from the config, swap in empty quantised
                          layers (`llmlab.quantize.model.prepare_quantized`), then load the tensors strictly
    trainable checkpoint  llmlab.json + trainable.safetensors naming a base and a method (LoRA, QLoRA,
                          adapters, prompt tuning, classification): load the base, apply the method
                          again (`llmlab.finetune.methods`), then the saved weights
    PEFT LoRA folder      adapter_config.json + adapter_model.safetensors, from peft or llmlab
    multimodal folder     a VLM checkpoint (`llmlab multimodal train`) or a Hugging Face LLaVA folder:
                          `llmlab.multimodal.load_folder`, an object with `.describe(image, prompt=None)`;
                          a ViT or CLIP checkpoint (`multimodal vit|clip`): `.classify(images[, labels])`

It sits above every stage that writes models so data still flows one way:
plain models come from `llmlab.models.pretrained`, quantised layers from `llmlab.quantize`,
methods from `llmlab.finetune`, and the result is an `llmlab.infer.pretrained.Pretrained`.
"""

import os
from pathlib import Path

import torch

from llmlab.common import checkpoint
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.finetune.methods import apply_method
from llmlab.finetune.peft_format import CONFIG_NAME, load_peft_adapter, read_adapter_config
from llmlab.infer.pretrained import Pretrained
from llmlab.models.config import ModelConfig
from llmlab.models.device_map import dispatch, plan_device_map
from llmlab.models.gpt import Transformer
from llmlab.models.pretrained import load_model
from llmlab.multimodal import is_multimodal
from llmlab.multimodal import load_folder as load_multimodal
from llmlab.quantize.model import prepare_quantized


def load(source: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         with_tokenizer: bool = True, device_map: str | None = None) -> Pretrained:
    """A `Pretrained` (.model, .tokenizer, .generate, .classify) from any source llmlab knows (see above).

    `device_map` ("auto", "balanced", "0:0-15,1:16-31,cpu:rest") spreads the layers over several devices
    instead of `device` (`llmlab.models.device_map`). Hugging Face folders and GGUF files are read one tensor
    at a time either way; fine-tuned and quantised models are built whole, then placed.
    """
    path = Path(str(source)).expanduser()
    if path.is_dir() and not checkpoint.is_checkpoint(path) and checkpoint.is_checkpoint(path / "checkpoint"):
        path = source = path / "checkpoint"  # a run folder: what training wrote last
    if is_multimodal(path):  # a VLM checkpoint or a Hugging Face LLaVA folder: `.describe(image, prompt=None)`
        return load_multimodal(path, device, dtype)
    meta = checkpoint.read_meta(path) if path.is_dir() and checkpoint.is_checkpoint(path) else {}
    if meta.get("weights") == "trainable":
        loaded = load_trainable_dir(path, with_tokenizer)
    elif "quantization" in meta:
        loaded = load_quantized_dir(path, with_tokenizer)
    elif path.is_dir() and (path / CONFIG_NAME).is_file():
        loaded = load_peft_dir(path, with_tokenizer)
    else:
        model, tokenizer, where = load_model(source, device, dtype, with_tokenizer=with_tokenizer,
                                             device_map=device_map)
        return Pretrained(model.eval(), tokenizer, where)
    if device_map:
        plan = plan_device_map(device_map, loaded.model.config, dtype)
        dispatch(loaded.model.to(dtype=dtype), plan).eval()
        return loaded
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


def load_base(base: str, folder: Path, with_tokenizer: bool) -> tuple:
    """The base model a fine-tuned folder names: a path relative to the folder, an absolute path, an alias or a
    hub id. A base that cannot be found is a one-line error naming it."""
    relative = folder / base
    source = str(relative) if not Path(base).exists() and relative.exists() else base
    try:
        return load_model(source, with_tokenizer=with_tokenizer)
    except UserError as e:
        raise UserError(f"{folder}: cannot load its base model {base!r} ({e}); put the base back where it was, "
                        "or name where it is now in the folder's JSON") from None


def load_trainable_dir(path: Path, with_tokenizer: bool = True) -> Pretrained:
    """Base + method + the trainable weights a fine-tuning run saved: the model as it was when training ended."""
    path = checkpoint.resolve(path)
    meta = checkpoint.read_meta(path)
    model, tokenizer, _ = load_base(meta["base"], path, with_tokenizer)
    model, _ = apply_method(model, meta["method"])
    checkpoint.load_trainable(model, path)
    classes = meta["method"].get("classes") if meta["method"].get("name") == "classify" else None
    return Pretrained(model, tokenizer, str(path), classes=classes)


def load_quantized_dir(path: Path, with_tokenizer: bool = True) -> Pretrained:
    """A quantised checkpoint: Transformer(config) -> empty quantised layers -> the saved tensors, strictly."""
    from llmlab.tokenizer import Tokenizer

    path = checkpoint.resolve(path)
    meta = checkpoint.read_meta(path)
    model = Transformer(ModelConfig.from_dict(meta["model"], source=str(path / checkpoint.META_FILE)))
    prepare_quantized(model, meta["quantization"])
    checkpoint.load_weights(model, path)  # every tensor, shapes checked; only a tied head may be absent
    tokenizer = Tokenizer.load(path / TOKENIZER_FILE) if with_tokenizer and (path / TOKENIZER_FILE).is_file() else None
    return Pretrained(model.eval(), tokenizer, str(path))


def load_peft_dir(path: Path, with_tokenizer: bool = True) -> Pretrained:
    """A PEFT LoRA folder: its base (`base_model_name_or_path`) with the adapter applied."""
    cfg = read_adapter_config(path)
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{path / CONFIG_NAME}: base_model_name_or_path is empty; set it to the base model's path "
                        "or alias")
    model, tokenizer, _ = load_base(base, path, with_tokenizer)
    load_peft_adapter(model, path)
    return Pretrained(model, tokenizer, str(path))


def save_pretrained(model: Pretrained | torch.nn.Module, directory: str | os.PathLike, tokenizer=None) -> None:
    """Write a loaded model (or a bare `Transformer` and its tokenizer) in the Hugging Face format."""
    from llmlab.models.pretrained import save_pretrained as save_hf

    if isinstance(model, Pretrained):
        model, tokenizer = model.model, tokenizer or model.tokenizer
    save_hf(model, directory, tokenizer)
