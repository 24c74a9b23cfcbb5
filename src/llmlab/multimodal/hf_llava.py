"""Hugging Face LLaVA folders -> llmlab's ViT, projector and decoder: the real architecture, key by key.

LLaVA (Liu et al. 2023; `LlavaForConditionalGeneration`) is early fusion with a causal mask: a CLIP vision
tower, a two-layer projector, and a Llama-family language model. The prompt holds one image token per image
feature; their embeddings are replaced by the projected features, and the decoder runs on the result.
What is read from the tower: the hidden states after block `vision_feature_layer` (default -2, the
second-to-last, before any final norm; a list concatenates several), without [CLS] when the strategy is
"default". CLIP's tower is `vit.ViT` with `pre_norm` (CLIP's "pre_layrnorm"), no patch bias and quick GELU;
the decoder is `llmlab.models.gpt.Transformer` through `llmlab.models.hf`'s key maps. Both weight layouts load:
transformers 4 and the files transformers 5 writes (`vision_tower.vision_model.*` or `vision_tower.*`,
`language_model.model.*`) and transformers 5's in-memory names (`model.vision_tower.*`,
`model.language_model.*`, `lm_head.*`). PaliGemma (SigLIP + Gemma) is not supported. Folders are read with
safetensors only.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file

from llmlab.common.errors import UserError
from llmlab.models.gpt import Transformer
from llmlab.models.hf import _rename, config_from_hf, state_dict_from_hf
from llmlab.multimodal.vit import ViT, ViTConfig
from llmlab.multimodal.vlm import Projector, decoder_logits

CLIP_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
PROJECTOR_ACTS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP's
CLIP_VISION_KEYS = [
    ("embeddings.class_embedding", "cls_token"),
    ("embeddings.patch_embedding.weight", "patch_emb.weight"),
    ("embeddings.position_embedding.weight", "pos_emb.weight"),
    *[(f"pre_layrnorm.{w}", f"pre_norm.{w}") for w in ("weight", "bias")],
    *[(f"post_layernorm.{w}", f"norm_f.{w}") for w in ("weight", "bias")],
    *[(f"encoder.layers.{{i}}.{hf}.{w}", f"blocks.{{i}}.{ours}.{w}") for w in ("weight", "bias") for hf, ours in (
        ("self_attn.q_proj", "attn.q_proj"), ("self_attn.k_proj", "attn.k_proj"), ("self_attn.v_proj", "attn.v_proj"),
        ("self_attn.out_proj", "attn.o_proj"), ("layer_norm1", "attn_norm"), ("layer_norm2", "mlp_norm"),
        ("mlp.fc1", "mlp.up_proj"), ("mlp.fc2", "mlp.down_proj"))],
]
PROJECTOR_KEYS = [(f"linear_{n}.{w}", f"{ours}.{w}") for n, ours in ((1, "up_proj"), (2, "down_proj"))
                  for w in ("weight", "bias")]


def is_llava_dir(path: str | os.PathLike) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "llava"
    except ValueError:
        return False


def vision_config_from_hf(hf: dict[str, Any], source: str) -> ViTConfig:
    if hf.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise UserError(f"{source}: vision tower {hf.get('model_type')!r} is not supported; llmlab reads CLIP's")
    act = hf.get("hidden_act", "quick_gelu")
    if act not in CLIP_ACTS:
        raise UserError(f"{source}: vision hidden_act={act!r} is not supported; use one of {', '.join(CLIP_ACTS)}")
    return ViTConfig(arch="vit", image_size=hf.get("image_size", 224), patch_size=hf.get("patch_size", 32),
                     n_channels=hf.get("num_channels", 3), n_layer=hf["num_hidden_layers"],
                     n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
                     intermediate_size=hf["intermediate_size"], act=CLIP_ACTS[act], patch_bias=False, pre_norm=True,
                     norm_eps=hf.get("layer_norm_eps", 1e-5), pos="learned")


class Llava(nn.Module):
    """CLIP tower + projector + decoder; `forward(idx, pixels)` gives LlavaForConditionalGeneration's logits."""

    def __init__(self, vision: ViT, projector: Projector, decoder: Transformer, image_token_id: int,
                 feature_layer: int | list[int] = -2, strategy: str = "default"):
        super().__init__()
        if strategy not in ("default", "full"):
            raise UserError(f"vision_feature_select_strategy={strategy!r} is unknown; LLaVA has default and full")
        self.vision, self.projector, self.decoder = vision, projector, decoder
        self.config = decoder.config
        self.image_token_id, self.feature_layer, self.strategy = image_token_id, feature_layer, strategy

    @property
    def n_image_tokens(self) -> int:
        return self.vision.config.n_patches + (self.strategy == "full")

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N, C): the chosen hidden states, [CLS] dropped by "default", projected."""
        states = self.vision.hidden_states(pixels)
        layers = self.feature_layer if isinstance(self.feature_layer, list) else [self.feature_layer]
        x = torch.cat([states[i] for i in layers], dim=-1)  # (B, 1+N, Cv * len(layers))
        return self.projector(x[:, 1:] if self.strategy == "default" else x)

    def forward(self, idx: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for ids idx (B, T) whose image tokens stand for the features of `pixels`, in order."""
        x = self.decoder.tok_emb(idx)  # (B, T, C)
        slots = idx == self.image_token_id  # (B, T)
        if pixels is not None:
            features = self.image_features(pixels).to(x.dtype)  # (B_img, N, C)
            if int(slots.sum()) != features.shape[0] * features.shape[1]:
                raise UserError(f"the ids hold {int(slots.sum())} image tokens but {features.shape[0]} image(s) "
                                f"give {features.shape[0] * features.shape[1]} features; put {features.shape[1]} "
                                "image tokens per image")
            x = x.masked_scatter(slots[..., None], features.reshape(-1, features.shape[-1]))
        elif slots.any():
            raise UserError("the ids hold image tokens but no pixels were given")
        return decoder_logits(self.decoder, x, None)  # no mask: causal, as LLaVA's language model

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, pixels: torch.Tensor | None, max_new_tokens: int,
                 eos_id: int | None = None) -> list[int]:
        """Greedy new ids for one prompt (1, T); the whole sequence is recomputed each step."""
        new = []
        for _ in range(max_new_tokens):
            token = int(self(idx, pixels)[0, -1].argmax())
            if token == eos_id:
                break
            new.append(token)
            idx = torch.cat([idx, torch.tensor([[token]], device=idx.device)], dim=1)
        return new


def _normalise_key(key: str) -> str:
    """Every LLaVA layout -> vision_tower.*, multi_modal_projector.*, language_model.*, lm_head.*."""
    key = re.sub(r"^model\.(?=vision_tower\.|multi_modal_projector\.|language_model\.)", "", key)
    key = key.replace("vision_tower.vision_model.", "vision_tower.", 1)
    key = key.replace("language_model.model.", "language_model.", 1)
    return key.replace("language_model.lm_head.", "lm_head.", 1)


def load_llava_dir(directory: str | os.PathLike) -> "PretrainedLlava":
    """A Hugging Face LLaVA folder (config.json + safetensors) -> `PretrainedLlava`."""
    directory = Path(directory)
    source = str(directory / "config.json")
    hf = json.loads((directory / "config.json").read_text())
    vision_cfg = vision_config_from_hf(hf.get("vision_config", {}), source)
    text_cfg = config_from_hf(hf.get("text_config", {}), source)
    act = hf.get("projector_hidden_act", "gelu")
    if act not in PROJECTOR_ACTS or not hf.get("multimodal_projector_bias", True):
        raise UserError(f"{source}: projector_hidden_act={act!r} without biases or outside "
                        f"{', '.join(PROJECTOR_ACTS)} is not supported")
    layers = hf.get("vision_feature_layer", -2)
    n_layers = len(layers) if isinstance(layers, list) else 1
    model = Llava(ViT(vision_cfg), Projector(vision_cfg.n_embd * n_layers, text_cfg.n_embd, PROJECTOR_ACTS[act]),
                  Transformer(text_cfg), hf.get("image_token_index", hf.get("image_token_id", 32000)), layers,
                  hf.get("vision_feature_select_strategy", "default"))
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise UserError(f"{directory}: no *.safetensors weights found (llmlab never unpickles *.bin)")
    parts: dict[str, dict[str, torch.Tensor]] = {"vision_tower": {}, "multi_modal_projector": {},
                                                 "language_model": {}}
    for f in files:
        for key, value in load_file(f).items():
            key = _normalise_key(key)
            if key.startswith("lm_head."):
                parts["language_model"][key] = value
                continue
            head, _, rest = key.partition(".")
            if head not in parts:
                raise UserError(f"{f}: unexpected weight {key!r}; not a LLaVA checkpoint llmlab knows")
            parts[head]["model." + rest if head == "language_model" else rest] = value
    parts["vision_tower"].pop("embeddings.position_ids", None)  # a buffer some versions save
    sd = {f"vision.{k}": v for k, v in _rename(parts["vision_tower"], CLIP_VISION_KEYS, source).items()}
    sd |= {f"projector.{k}": v for k, v in _rename(parts["multi_modal_projector"], PROJECTOR_KEYS, source).items()}
    sd |= {f"decoder.{k}": v for k, v in state_dict_from_hf(parts["language_model"], text_cfg, source).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("vision.norm_f.")]  # LLaVA never reads the final norm
    if missing or unexpected:
        raise UserError(f"{directory}: weights do not match the config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    tokenizer = None
    if (directory / "tokenizer.json").is_file():
        from llmlab.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(directory)
    return PretrainedLlava(model.eval(), tokenizer, str(directory), _image_norm(directory))


def _image_norm(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The image processor's mean and std (preprocessor_config.json), else OpenAI CLIP's."""
    path = directory / "preprocessor_config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        return tuple(cfg.get("image_mean", CLIP_MEAN)), tuple(cfg.get("image_std", CLIP_STD))
    return CLIP_MEAN, CLIP_STD


@dataclass
class PretrainedLlava:
    """A loaded LLaVA: `.model` (logits from ids and pixels), `.pixels(image)`, `.describe(image, prompt=None)`."""

    model: Llava
    tokenizer: Any
    source: str
    image_norm: tuple[tuple[float, ...], tuple[float, ...]]

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """(1, 3, S, S): resized to the tower's size (bicubic), scaled to [0, 1], normalised per channel."""
        size = self.model.vision.config.image_size
        img = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0  # (3, S, S)
        mean, std = (torch.tensor(v)[:, None, None] for v in self.image_norm)
        return ((x - mean) / std)[None]

    def describe(self, image: str | os.PathLike | Image.Image, prompt: str | None = None,
                 max_new_tokens: int = 64) -> str:
        """LLaVA-1.5's prompt "USER: <image>\\n{prompt} ASSISTANT:", answered greedily."""
        if self.tokenizer is None:
            raise UserError(f"{self.source}: has no tokenizer.json, so it cannot read or write text; use .model "
                            "with token ids")
        if not isinstance(image, Image.Image):
            image = Image.open(image)
        text = prompt or "Describe the image briefly."
        before, after = self.tokenizer.encode("USER: "), self.tokenizer.encode(f"\n{text} ASSISTANT:")
        ids = before + [self.model.image_token_id] * self.model.n_image_tokens + after
        if self.tokenizer.bos_id is not None:
            ids = [self.tokenizer.bos_id] + ids
        new = self.model.generate(torch.tensor([ids]), self.pixels(image), max_new_tokens, self.tokenizer.eos_id)
        return self.tokenizer.decode(new).strip()
