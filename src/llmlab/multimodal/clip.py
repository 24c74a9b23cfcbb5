"""CLIP-style contrastive pretraining: an image encoder and a text encoder that agree on what goes together.

Radford et al. 2021 (CLIP). A ViT (`vit.py`, its [CLS] token) and a small BERT-style text encoder
(`llmlab.models.bert`, mean over real tokens) each end in a linear map to one shared width; both vectors are
L2-normalised, and a batch of B (image, caption) pairs gives a (B, B) matrix of cosine similarities times a
learned scale (exp of a parameter starting at log(1/0.07)). The loss is the mean of two cross-entropies, each
image against all captions and each caption against all images, with the matching pair as the class:
in-batch negatives (InfoNCE, van den Oord et al. 2018). Duplicate captions in a batch would be false
negatives, so `distinct_scenes` builds batches whose captions all differ.
Zero-shot classification (`zero_shot`) embeds one caption per class ("a red circle", ...) and picks the class
whose caption is most similar to the image; `class_prompts` averages several captions per class (CLIP's prompt
ensembling), e.g. every colour for the class "circle". Training loops and reports are the recipe's.
"""

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models.bert import Bert, BertConfig
from llmlab.multimodal.shapes import Scene
from llmlab.multimodal.vit import ViT, ViTConfig


@dataclass
class CLIPConfig:
    arch: str = "clip"  # what `llmlab.load` builds from a saved config
    vision: dict[str, Any] = field(default_factory=dict)  # a ViTConfig's fields
    text: dict[str, Any] = field(default_factory=dict)  # a BertConfig's fields (head "none")
    embed_dim: int = 64  # the shared width both encoders map into
    init_temperature: float = 0.07  # CLIP's; the scale 1/T is learned from there (and capped at 100)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tie_embeddings(self) -> bool:
        """No output head shares weights with an embedding (`checkpoint.load_weights` asks)."""
        return False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model config") -> "CLIPConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"{source}: unknown field(s) {', '.join(unknown)}")
        return cls(**d)


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.vision = ViT(ViTConfig.from_dict(config.vision, source="clip vision config"))
        text = BertConfig.from_dict({**config.text, "head": "none"}, source="clip text config")
        self.text = Bert(text)
        self.vision_proj = nn.Linear(self.vision.config.n_embd, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(text.n_embd, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(1.0 / config.init_temperature).log())

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, E) unit vectors."""
        return F.normalize(self.vision_proj(self.vision.pool(self.vision.encode(pixels))), dim=-1)

    def encode_text(self, idx: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids with a (B, T) mask (1 on tokens) -> (B, E) unit vectors."""
        hidden = self.text.encode(idx, attn_mask)  # (B, T, C)
        return F.normalize(self.text_proj(self.text.pool(hidden, attn_mask, "mean")), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), capped at 100 as CLIP does so training cannot make the softmax arbitrarily sharp."""
        return self.logit_scale.clamp(max=math.log(100.0)).exp()

    def forward(self, pixels: torch.Tensor, idx: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """Image-text logits (B_img, B_txt): scaled cosine similarities."""
        return self.scale() * self.encode_image(pixels) @ self.encode_text(idx, attn_mask).T


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """(CE(images -> captions) + CE(captions -> images)) / 2, the i-th caption being the i-th image's."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2


def tokenize(tokenizer: Any, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, T), mask (B, T)), right-padded, each text cut to max_len tokens."""
    if not texts:
        raise UserError("no texts to encode")
    return tokenizer.pad([tokenizer.encode(t)[:max_len] for t in texts])


def distinct_scenes(stream: Iterator[Scene], n: int, max_tries: int = 10_000) -> list[Scene]:
    """The next n scenes of the stream with pairwise different captions (true in-batch negatives)."""
    out, seen = [], set()
    for _ in range(max_tries):
        scene = next(stream)
        if scene.caption not in seen:
            seen.add(scene.caption)
            out.append(scene)
            if len(out) == n:
                return out
    raise UserError(f"batch size {n}: cannot find that many different captions; use a smaller batch")


@torch.no_grad()
def zero_shot(model: CLIP, tokenizer: Any, pixels: torch.Tensor, class_prompts: list[list[str]],
              max_len: int = 16) -> torch.Tensor:
    """Class probabilities (B, K): each class is the mean of its prompts' unit text vectors (re-normalised),
    compared by cosine with each image."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    classes = []
    for prompts in class_prompts:
        idx, mask = tokenize(tokenizer, prompts, max_len)
        classes.append(F.normalize(model.encode_text(idx.to(device), mask.to(device)).mean(0), dim=-1))
    text = torch.stack(classes)  # (K, E)
    image = torch.cat([model.encode_image(chunk.to(device)) for chunk in pixels.split(256)])  # (B, E)
    model.train(was_training)
    return (model.scale() * image @ text.T).softmax(-1)
