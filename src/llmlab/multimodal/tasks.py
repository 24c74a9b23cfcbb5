"""The shapes tasks for the models here: training batches, held-out scores, attention over patches.

Captioning and visual question answering (VQA) on `shapes` images: `vlm_batches` draws training examples
(a caption with probability `caption_share`, else one of the scene's questions) from the training split,
rendered on the fly so no image repeats; `score_vlm` generates greedily on held-out images and reports
exact match per task; `class_batches` and `accuracy` do the same for ViT classifiers. `patch_attention` says
where a VLM looks while it answers. Recipes wire these into training runs and reports.
"""

import random
from collections.abc import Callable
from itertools import islice
from typing import Any

import torch

from llmlab.multimodal.shapes import CAPTION_PROMPT, COLORS, SHAPES, Scene, article, pixels, scene_stream, scenes
from llmlab.multimodal.vlm import VLM, encode_example, generate, make_batch

# label sets for ViT classification: name -> (classes, the label of a one-shape scene)
LABELS: dict[str, tuple[list[str], Callable[[Scene], str]]] = {
    "shape": (list(SHAPES), lambda s: s.shapes[0].kind),
    "color": (list(COLORS), lambda s: s.shapes[0].color),
    "color+shape": ([f"{article(c)} {c} {k}" for k in SHAPES for c in COLORS], lambda s: s.caption),
}


def vlm_batches(tokenizer: Any, batch_size: int, seed: int, caption_share: float = 0.7,
                n_shapes: tuple[int, ...] = (1, 2)) -> Callable[[], tuple]:
    """A `next_batch` for `train_loop`: fresh training-split scenes, each with a caption or a question."""
    stream = scene_stream(seed, "train", n_shapes)
    rng = random.Random(seed)

    def next_batch() -> tuple:
        batch = list(islice(stream, batch_size))
        prompts, answers = [], []
        for scene in batch:
            if rng.random() < caption_share:
                prompts.append(CAPTION_PROMPT)
                answers.append(scene.caption)
            else:
                question, answer = rng.choice(scene.questions())
                prompts.append(question)
                answers.append(answer)
        return make_batch(tokenizer, pixels([s.render() for s in batch]), prompts, answers)

    return next_batch


def _answers(model: VLM, tokenizer: Any, items: list[tuple[Scene, str]], batch_size: int = 100) -> list[str]:
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        out += generate(model, tokenizer, pixels([s.render() for s, _ in chunk]), [p for _, p in chunk])
    return out


def score_vlm(model: VLM, tokenizer: Any, n_images: int = 200, seed: int = 1234) -> dict[str, Any]:
    """Held-out exact match: captions of one-shape and of two-shape images, and VQA over every question of
    n_images mixed images (overall, colour questions, count questions). Also a few examples."""
    result: dict[str, Any] = {}
    for n in (1, 2):
        test = scenes(n_images, seed + n, "test", (n,))
        got = _answers(model, tokenizer, [(s, CAPTION_PROMPT) for s in test])
        result[f"caption_em_{n}"] = sum(g == s.caption for g, s in zip(got, test, strict=True)) / len(test)
        result.setdefault("examples", []).extend({"caption": s.caption, "predicted": g}
                                                 for g, s in list(zip(got, test, strict=True))[:4])
    qa = [(s, q, a) for s in scenes(n_images, seed + 3, "test") for q, a in s.questions()]
    got = _answers(model, tokenizer, [(s, q) for s, q, _ in qa])
    right = [g == a for g, (_, _, a) in zip(got, qa, strict=True)]
    result["vqa_accuracy"] = sum(right) / len(right)
    for kind, word in (("color", "color"), ("count", "how many")):
        sub = [r for r, (_, q, _) in zip(right, qa, strict=True) if word in q]
        result[f"vqa_{kind}_accuracy"] = sum(sub) / max(len(sub), 1)
    return result


@torch.no_grad()
def patch_attention(model: VLM, tokenizer: Any, scene: Scene, answer: str) -> torch.Tensor:
    """Where the model looks while it says `answer` about `scene`: attention from the answer's positions to the
    image tokens, averaged over heads and those positions, as a (g, g) grid over the merged patches. Early
    fusion: the decoder's last block's self-attention; late fusion: the last cross-attention layer."""
    model.eval()
    device = next(model.parameters()).device
    ids, n_prompt = encode_example(tokenizer, CAPTION_PROMPT, answer)
    idx = torch.tensor([ids], device=device)
    features = model.image_features(pixels([scene.render()], model.vision.config.image_size).to(device))
    N = features.shape[1]
    if model.config.fusion == "early":
        layer = model.decoder.blocks[-1].attn
        rows, cols = slice(N + n_prompt - 1, N + len(ids) - 1), slice(0, N)
    else:
        layer = model.cross[str(max(model.config.cross_layers))]
        rows, cols = slice(n_prompt - 1, len(ids) - 1), slice(0, N)
    layer.keep_weights = True
    try:
        model(idx, torch.tensor([n_prompt], device=device), torch.tensor([len(ids)], device=device), features)
        weights = layer.last_weights[0, :, rows, cols].mean((0, 1))  # (N,)
    finally:
        layer.keep_weights, layer.last_weights = False, None
    weights = weights[int(model.config.keep_cls):]  # the patches only ([CLS] has no place on the image)
    g = int(round(weights.numel() ** 0.5))
    return weights.view(g, g).cpu()


def class_batches(label_set: str, batch_size: int, seed: int) -> Callable[[], tuple]:
    """A `next_batch` of (pixels (B, 3, H, W), labels (B,)) from one-shape training scenes."""
    classes, label = LABELS[label_set]
    stream = scene_stream(seed, "train", (1,))

    def next_batch() -> tuple:
        batch = list(islice(stream, batch_size))
        return pixels([s.render() for s in batch]), torch.tensor([classes.index(label(s)) for s in batch])

    return next_batch


@torch.no_grad()
def accuracy(model: torch.nn.Module, label_set: str, n_images: int = 300, seed: int = 1234) -> float:
    """Held-out accuracy of a classifier (pixels -> (B, K) logits) on one-shape test images."""
    classes, label = LABELS[label_set]
    test = scenes(n_images, seed, "test", (1,))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predicted = torch.cat([model(pixels([s.render() for s in test[i:i + 100]]).to(device)).argmax(-1).cpu()
                           for i in range(0, len(test), 100)])
    model.train(was_training)
    return (predicted == torch.tensor([classes.index(label(s)) for s in test])).float().mean().item()
