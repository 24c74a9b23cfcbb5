"""The built-in image data: coloured shapes on white, rendered with Pillow, with captions and questions.

Each image is 64x64 RGB on a white background with one or two shapes. A shape is a circle, a square or an
upward-pointing triangle, its bounding box a square of 12 to 28 pixels at a random place, filled with one of
six colours as Pillow names them (`ImageColor`: "green" is (0, 128, 0), "purple" (128, 0, 128), "orange"
(255, 165, 0)). Drawing is not anti-aliased, so every pixel is white or exactly one shape's colour.

Two shapes never share a pixel column (their boxes' x ranges are apart), so "left to right" is always clear:
    caption    "a red circle" / "a red circle and an orange square"   (shapes left to right)
    questions  "how many shapes are there?" -> "one" / "two"
               "what color is the circle?" -> "red"                 (asked only of a shape drawn once)

Everything is decided by a seed. The held-out split is by content, not by seed: a scene belongs to the test
split when a hash of its shapes, colours, sizes and positions says so (~10%), and each split's sampler skips
the other's scenes, so no test image is ever drawn for training, whatever the seeds.
This file does not know about models: `pixels` turns images into the normalised (B, 3, H, W) tensor a ViT
reads. Sizes are the issue's; CLEVR (Johnson et al. 2017) is the classic bigger cousin.
"""

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice, pairwise, product

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
MIN_SIZE, MAX_SIZE = 12, 28  # side of a shape's bounding box, in pixels
GAP = 2  # pixels between two shapes' x ranges, so they never touch
HELDOUT_PERCENT = 10
COUNT_WORDS = ("zero", "one", "two")
CAPTION_PROMPT = "caption"  # what the VLMs are asked when no question is given


@dataclass(frozen=True)
class Shape:
    kind: str  # circle, square or triangle
    color: str  # a Pillow colour name
    x: int  # left column of the bounding box
    y: int  # top row of the bounding box
    size: int  # side of the bounding box

    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), right and bottom exclusive, as `Image.getbbox` reports it."""
        return self.x, self.y, self.x + self.size, self.y + self.size


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]  # left to right

    @property
    def caption(self) -> str:
        return " and ".join(f"{article(s.color)} {s.color} {s.kind}" for s in self.shapes)

    def questions(self) -> list[tuple[str, str]]:
        """(question, answer) pairs this scene answers unambiguously."""
        qa = [("how many shapes are there?", COUNT_WORDS[len(self.shapes)])]
        kinds = [s.kind for s in self.shapes]
        qa += [(f"what color is the {s.kind}?", s.color) for s in self.shapes if kinds.count(s.kind) == 1]
        return qa

    def key(self) -> str:
        return ";".join(f"{s.kind},{s.color},{s.x},{s.y},{s.size}" for s in self.shapes)

    @property
    def split(self) -> str:
        """"test" for about HELDOUT_PERCENT % of all scenes (a hash of their content), else "train"."""
        return "test" if zlib.crc32(self.key().encode()) % 100 < HELDOUT_PERCENT else "train"

    def render(self) -> Image.Image:
        return render(self.shapes)


def article(word: str) -> str:
    """"an" before a vowel ("an orange circle"), else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def render(shapes: tuple[Shape, ...] | list[Shape], image_size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the shapes on a white RGB image; every pixel of a shape's box that it covers gets its colour."""
    img = Image.new("RGB", (image_size, image_size), "white")
    draw = ImageDraw.Draw(img)
    for s in shapes:
        x1, y1 = s.x + s.size - 1, s.y + s.size - 1  # Pillow's corners are inclusive
        if s.kind == "circle":
            draw.ellipse((s.x, s.y, x1, y1), fill=s.color)
        elif s.kind == "square":
            draw.rectangle((s.x, s.y, x1, y1), fill=s.color)
        elif s.kind == "triangle":  # apex at the top centre, base along the bottom row
            draw.polygon([((s.x + x1) / 2, s.y), (s.x, y1), (x1, y1)], fill=s.color)
        else:
            raise ValueError(f"shape kind {s.kind!r} is unknown; use one of {', '.join(SHAPES)}")
    return img


def random_scene(rng: np.random.Generator, n_shapes: int, image_size: int = IMAGE_SIZE) -> Scene:
    """One scene of n_shapes (1 or 2) random shapes, sorted left to right; x ranges apart by GAP pixels."""
    if n_shapes not in (1, 2):
        raise ValueError(f"n_shapes={n_shapes}: scenes have one or two shapes")
    while True:  # two shapes fit side by side at least 60% of the time, so this ends fast
        shapes = []
        for _ in range(n_shapes):
            size = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
            shapes.append(Shape(SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))],
                                int(rng.integers(0, image_size - size + 1)),
                                int(rng.integers(0, image_size - size + 1)), size))
        shapes.sort(key=lambda s: s.x)
        if all(a.x + a.size + GAP <= b.x for a, b in pairwise(shapes)):
            return Scene(tuple(shapes))


def scenes(n: int, seed: int, split: str = "train", n_shapes: tuple[int, ...] = (1, 2)) -> list[Scene]:
    """n scenes of `split` ("train" or "test"), each with a shape count drawn from n_shapes; same seed, same list."""
    return list(islice(scene_stream(seed, split, n_shapes), n))


def scene_stream(seed: int, split: str = "train", n_shapes: tuple[int, ...] = (1, 2)) -> Iterator[Scene]:
    """An endless, seeded stream of the split's scenes (training draws from it batch by batch)."""
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r}: use 'train' or 'test'")
    if not n_shapes or any(k not in (1, 2) for k in n_shapes):
        raise ValueError(f"n_shapes={n_shapes}: choose from 1 and 2")
    rng = np.random.default_rng(seed)
    while True:
        scene = random_scene(rng, int(n_shapes[rng.integers(len(n_shapes))]))
        if scene.split == split:
            yield scene


def pixels(images: list[Image.Image], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) floats in [-1, 1] ((x/255 - 0.5) / 0.5); others are converted to RGB and
    resized (bicubic) to image_size first."""
    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(img, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return (x / 255.0 - 0.5) / 0.5


def all_texts() -> list[str]:
    """Every caption, question and answer the data can produce (a tokenizer trained on these knows them all)."""
    singles = [f"{article(c)} {c} {k}" for k, c in product(SHAPES, COLORS)]
    texts = singles + [f"{a} and {b}" for a, b in product(singles, singles)]
    texts += ["how many shapes are there?", *COUNT_WORDS[1:], *COLORS, CAPTION_PROMPT]
    texts += [f"what color is the {k}?" for k in SHAPES]
    return texts
