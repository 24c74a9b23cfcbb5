"""Loaded ViT classifiers and CLIP models: what `llmlab.load` returns for `multimodal vit` and `clip` folders.

A ViT checkpoint (`llmlab multimodal vit`) stores its class names next to the weights, so
`PretrainedViT.classify(images)` answers with labels; a CLIP checkpoint (`llmlab multimodal clip`) stores its
text tokenizer, so `PretrainedCLIP` embeds images and texts and classifies zero-shot by caption similarity.
Training and scoring on the built-in shapes are the recipe's; the VLM's loader is `vlm.load_vlm`.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from llmlab.common import checkpoint
from llmlab.common.constants import TOKENIZER_FILE
from llmlab.common.errors import UserError
from llmlab.multimodal.clip import CLIP, CLIPConfig, tokenize, zero_shot
from llmlab.multimodal.shapes import pixels
from llmlab.multimodal.vit import ViT, ViTConfig

ImageLike = str | os.PathLike | Image.Image


def open_image(image: ImageLike) -> Image.Image:
    """A PIL image from a path (a one-line error if it is missing or not an image) or the image itself."""
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        opened = Image.open(path)
        opened.load()
    except OSError as e:
        raise UserError(f"{path}: cannot read the image ({e})") from None
    return opened


def image_batch(images: ImageLike | list[ImageLike], image_size: int) -> torch.Tensor:
    """One image or a list of them -> (B, 3, H, W) pixels as the encoders were trained on."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    if not images:
        raise UserError("no images given")
    return pixels([open_image(i) for i in images], image_size)


@dataclass
class PretrainedViT:
    """A ViT with a classification head and the names of its classes: `.classify(images)`."""

    model: ViT
    classes: list[str]
    source: str

    @torch.no_grad()
    def classify(self, images: ImageLike | list[ImageLike]) -> tuple[list[str], torch.Tensor]:
        """(predicted label per image, class probabilities (N, K) in the order of `.classes`)."""
        device = next(self.model.parameters()).device
        x = image_batch(images, self.model.config.image_size).to(device)
        probs = self.model(x).float().softmax(-1).cpu()
        return [self.classes[i] for i in probs.argmax(-1).tolist()], probs


@dataclass
class PretrainedCLIP:
    """A CLIP-style image and text encoder pair with its tokenizer."""

    model: CLIP
    tokenizer: Any
    source: str
    max_len: int = 16  # the caption length the recipe trains with

    @torch.no_grad()
    def embed_images(self, images: ImageLike | list[ImageLike]) -> torch.Tensor:
        """(N, E) unit vectors."""
        device = next(self.model.parameters()).device
        self.model.eval()
        return self.model.encode_image(image_batch(images, self.model.vision.config.image_size).to(device)).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: str | list[str]) -> torch.Tensor:
        """(N, E) unit vectors."""
        device = next(self.model.parameters()).device
        self.model.eval()
        idx, mask = tokenize(self.tokenizer, [texts] if isinstance(texts, str) else list(texts), self.max_len)
        return self.model.encode_text(idx.to(device), mask.to(device)).cpu()

    def classify(self, images: ImageLike | list[ImageLike], labels: list[str]) -> tuple[list[str], torch.Tensor]:
        """Zero-shot: each label is its own caption ("a red circle"); (best label per image, probabilities (N, K))."""
        if not labels:
            raise UserError("zero-shot classification needs at least one label")
        x = image_batch(images, self.model.vision.config.image_size)
        probs = zero_shot(self.model, self.tokenizer, x, [[label] for label in labels], self.max_len).cpu()
        return [labels[i] for i in probs.argmax(-1).tolist()], probs


def load_vit(path: str | Path) -> PretrainedViT:
    path = checkpoint.resolve(path)
    meta = checkpoint.read_meta(path)
    config = ViTConfig.from_dict(meta["model"], source=str(path / checkpoint.META_FILE))
    classes = meta.get("classes")
    if config.n_classes <= 0 or not classes or len(classes) != config.n_classes:
        raise UserError(f"{path / checkpoint.META_FILE}: a ViT classifier needs n_classes > 0 and that many names "
                        f"in 'classes' (found {config.n_classes} and {len(classes or [])})")
    model = ViT(config)
    checkpoint.load_weights(model, path)
    return PretrainedViT(model.eval(), list(classes), str(path))


def load_clip(path: str | Path) -> PretrainedCLIP:
    from llmlab.tokenizer import Tokenizer

    path = checkpoint.resolve(path)
    config = CLIPConfig.from_dict(checkpoint.read_meta(path)["model"], source=str(path / checkpoint.META_FILE))
    if not (path / TOKENIZER_FILE).is_file():
        raise UserError(f"{path}: no {TOKENIZER_FILE}; a CLIP folder needs the tokenizer its text encoder read")
    model = CLIP(config)
    checkpoint.load_weights(model, path)
    return PretrainedCLIP(model.eval(), Tokenizer.load(path / TOKENIZER_FILE), str(path),
                          max_len=config.text.get("seq_len", 16))
