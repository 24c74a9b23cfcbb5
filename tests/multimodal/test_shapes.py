"""The synthetic shapes: rendering facts read back from the pixels, captions, questions, seeds and the split."""

import numpy as np
import pytest
import torch
from PIL import ImageColor

from llmlab.multimodal import shapes
from llmlab.multimodal.shapes import Scene, Shape


def colours(img) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in px) for px in np.asarray(img).reshape(-1, 3)}


def test_rendering_facts_from_pixels():
    for scene in shapes.scenes(300, seed=3, split="train") + shapes.scenes(100, seed=3, split="test"):
        img = scene.render()
        a = np.asarray(img)
        assert img.mode == "RGB" and img.size == (64, 64)
        wanted = {(255, 255, 255)} | {ImageColor.getrgb(s.color) for s in scene.shapes}
        assert colours(img) == wanted  # white, plus each shape's Pillow colour, nothing anti-aliased
        assert 1 <= len(scene.shapes) <= 2
        for s in scene.shapes:
            assert s.kind in shapes.SHAPES and s.color in shapes.COLORS and 12 <= s.size <= 28
            x0, y0, x1, y1 = s.box()
            assert 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64
            ys, xs = np.nonzero((a[y0:y1, x0:x1] != 255).any(-1))
            # the drawn pixels fill the bounding box exactly: its side is the shape's size
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, s.size, s.size)
        if len(scene.shapes) == 2:
            a_, b_ = scene.shapes
            assert a_.x + a_.size <= b_.x  # apart, left to right
            assert "and" in scene.caption


def test_each_kind_by_its_pixels():
    size = 21
    masks = {k: (np.asarray(shapes.render([Shape(k, "blue", 10, 10, size)])) != 255).any(-1)[10:31, 10:31]
             for k in shapes.SHAPES}
    square, circle, triangle = masks["square"], masks["circle"], masks["triangle"]
    assert square.all()
    assert not circle[0, 0] and not circle[-1, -1] and circle[size // 2].all()  # corners empty, middle row full
    assert np.isclose(circle.mean(), np.pi / 4, atol=0.05)
    assert triangle[-1].all() and triangle[0].sum() <= 2  # a full base at the bottom, a point at the top
    widths = triangle.sum(1)
    assert (np.diff(widths) >= 0).all()  # it widens downwards: it points up
    assert np.isclose(triangle.mean(), 0.5, atol=0.06)


def test_captions_and_questions():
    one = Scene((Shape("circle", "red", 0, 0, 12),))
    assert one.caption == "a red circle"
    assert one.questions() == [("how many shapes are there?", "one"), ("what color is the circle?", "red")]
    two = Scene((Shape("circle", "red", 0, 0, 12), Shape("square", "orange", 30, 0, 12)))
    assert two.caption == "a red circle and an orange square"
    assert ("what color is the square?", "orange") in two.questions()
    same = Scene((Shape("circle", "red", 0, 0, 12), Shape("circle", "blue", 30, 0, 12)))
    assert same.questions() == [("how many shapes are there?", "two")]  # "the circle" would be ambiguous
    assert set(shapes.all_texts()) >= {one.caption, two.caption, *[q for q, _ in two.questions()]}


def test_deterministic_and_split_held_out():
    a, b = shapes.scenes(50, seed=7), shapes.scenes(50, seed=7)
    assert a == b and a != shapes.scenes(50, seed=8)
    test = shapes.scenes(400, seed=0, split="test")
    train = shapes.scenes(2000, seed=0, split="train")
    assert all(s.split == "test" for s in test) and all(s.split == "train" for s in train)
    assert not {s.key() for s in test} & {s.key() for s in train}
    share = np.mean([s.split == "test" for s in (shapes.random_scene(np.random.default_rng(i), 1)
                                                  for i in range(2000))])
    assert 0.06 < share < 0.14  # ~HELDOUT_PERCENT of all scenes
    ones = shapes.scenes(100, seed=0, n_shapes=(1,))
    assert all(len(s.shapes) == 1 for s in ones)


def test_pixels_normalised():
    img = shapes.render([Shape("square", "red", 0, 0, 12)])
    x = shapes.pixels([img, img.resize((32, 32))])
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # red
    assert torch.equal(x[0, :, 63, 63], torch.ones(3))  # white


def test_bad_input():
    with pytest.raises(ValueError, match="n_shapes"):
        shapes.scenes(3, seed=0, n_shapes=(3,))
    with pytest.raises(ValueError, match="split"):
        shapes.scenes(3, seed=0, split="validation")
    with pytest.raises(ValueError, match="kind"):
        shapes.render([Shape("hexagon", "red", 0, 0, 12)])
