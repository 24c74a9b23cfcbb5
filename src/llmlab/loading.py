"""`llmlab.load`: one entry point that opens a model whatever stage made it.

It sits above the stages so that data still flows one way: the model stage
(`llmlab.models.pretrained`) opens GGUF files, Hugging Face and llmlab folders,
aliases and hub ids; a fine-tuned LoRA folder (`adapter_config.json`) is opened
by the fine-tuning stage, which loads the base through the model stage first.
"""

import os
from pathlib import Path

import torch

from llmlab.models import pretrained


def load(source: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
         with_tokenizer: bool = True) -> pretrained.Pretrained:
    """A `Pretrained` (.model, .tokenizer, .generate) from an alias, file, folder, adapter folder or hub id."""
    path = Path(str(source)).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        from llmlab.finetune.peft_format import load_adapter_dir

        return load_adapter_dir(path, device=device, dtype=dtype, with_tokenizer=with_tokenizer)
    return pretrained.load(source, device=device, dtype=dtype, with_tokenizer=with_tokenizer)


save_pretrained = pretrained.save_pretrained
