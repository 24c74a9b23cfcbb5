"""Figures for the multimodal reports: sample images with captions, attention over patches. PNG files only."""

from pathlib import Path

import torch
from PIL import Image

from llmlab.common.io import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_samples(images: list[Image.Image], titles: list[str], path: Path, columns: int = 4) -> None:
    """A grid of images, each titled (e.g. "true / early / late" captions, one per line)."""
    plt = _pyplot()
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(img)
        ax.set_title(title, fontsize=7)
    _save(fig, path)


def plot_attention(image: Image.Image, maps: dict[str, torch.Tensor], path: Path, title: str) -> None:
    """The image, then per model its (g, g) attention grid laid over it (nearest-neighbour upsampling)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(3.2 * (1 + len(maps)), 3.4), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title(title, fontsize=8)
    size = image.size[0]
    for ax, (name, grid) in zip(axes[0, 1:], maps.items(), strict=True):
        ax.imshow(image)
        ax.imshow(grid.float().numpy(), cmap="inferno", alpha=0.6, extent=(0, size, size, 0),
                  interpolation="nearest")
        ax.set_title(f"{name}: {grid.sum():.2f} of attention on the image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    _save(fig, path)
