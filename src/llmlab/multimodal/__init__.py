"""Vision and language: a ViT, synthetic shapes, CLIP-style contrastive training, a tiny VLM, and LLaVA.

`shapes` draws the built-in images, `vit` encodes them, `clip` trains an image and a text encoder together,
`vlm` joins a ViT and llmlab's decoder by early or late fusion, `hf_llava` opens Hugging Face LLaVA
folders, and `pretrained` wraps saved ViT classifiers and CLIP models. `is_multimodal` and `load_folder` are
what `llmlab.load` asks.
"""

import json
import os
from pathlib import Path

import torch

from llmlab.common import checkpoint

ARCHS = ("vlm", "vit", "clip")  # checkpoint configs `load_folder` rebuilds


def is_multimodal(path: str | os.PathLike) -> bool:
    """A VLM, ViT or CLIP checkpoint folder, or a Hugging Face LLaVA folder."""
    from llmlab.multimodal.hf_llava import is_llava_dir

    path = Path(path)
    if not path.is_dir():
        return False
    if checkpoint.is_checkpoint(path):
        try:
            return checkpoint.read_meta(path).get("model", {}).get("arch") in ARCHS
        except (OSError, json.JSONDecodeError):
            return False
    return is_llava_dir(path)


def load_folder(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A `PretrainedVLM` or `PretrainedLlava` (both with `.describe(image, prompt=None)`), a `PretrainedViT`
    (`.classify(images)`) or a `PretrainedCLIP` (`.embed_images`, `.embed_texts`, zero-shot `.classify`)."""
    from llmlab.multimodal.hf_llava import is_llava_dir, load_llava_dir
    from llmlab.multimodal.pretrained import load_clip, load_vit
    from llmlab.multimodal.vlm import load_vlm

    if is_llava_dir(path):
        loaded = load_llava_dir(path)
    else:
        arch = checkpoint.read_meta(path)["model"]["arch"]
        loaded = {"vlm": load_vlm, "vit": load_vit, "clip": load_clip}[arch](path)
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded
