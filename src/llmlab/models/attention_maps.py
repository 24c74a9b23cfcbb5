"""Attention maps: every head's weights for one input, collected from the explicit attention path, and a plot.

`attention_maps(model, *inputs)` runs one forward with every attention module keeping its weights (any
module with a `keep_weights` switch: the decoder's and BERT's `layers.Attention`, T5's self- and
cross-attention), and returns them by module name, each (H, T, S) for the first sequence of the batch.
`plot_attention_maps` draws them as a grid, one row per attention module (layer) and one column per head,
with the tokens on the axes when they are few enough to read. Nothing is changed in the model: the
attention switch is restored afterwards. Reading maps: Clark et al. 2019, "What does BERT look at?".
"""

from pathlib import Path

import torch
import torch.nn as nn

from llmlab.common.io import atomic_write

MAX_LABELS = 40  # more token labels than this per axis are unreadable at any sane figure size


@torch.no_grad()
def attention_maps(model: nn.Module, *inputs, **kwargs) -> dict[str, torch.Tensor]:
    """{module name: weights (H, T, S)} of every attention module in `model` for `model(*inputs, **kwargs)`."""
    modules = {name: m for name, m in model.named_modules() if hasattr(m, "keep_weights")}
    if not modules:
        raise ValueError("attention_maps: the model has no attention module that can keep its weights")
    was_training = model.training
    model.eval()
    for m in modules.values():
        m.keep_weights = True
    try:
        model(*inputs, **kwargs)
        return {name: m.last_weights[0].float().cpu() for name, m in modules.items() if m.last_weights is not None}
    finally:
        for m in modules.values():
            m.keep_weights, m.last_weights = False, None
        model.train(was_training)


def plot_attention_maps(maps: dict[str, torch.Tensor], path: str | Path, tokens: list[str] | None = None,
                        key_tokens: list[str] | None = None, title: str = "attention") -> None:
    """A PNG grid: rows are attention modules in order, columns heads; row i, column h shows maps[i][h] (T, S).

    tokens label the queries (and the keys, unless key_tokens is given: cross-attention reads another
    sequence). Brighter is more weight; each row of a map sums to 1.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    names = list(maps)
    n_rows, n_cols = len(names), max(w.shape[0] for w in maps.values())
    cell = 2.2 if (tokens and len(tokens) <= MAX_LABELS) else 1.6
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell * n_cols + 1, cell * n_rows + 0.8), squeeze=False)
    keys = key_tokens if key_tokens is not None else tokens
    for r, name in enumerate(names):
        weights = maps[name]  # (H, T, S)
        for h in range(n_cols):
            ax = axes[r][h]
            ax.set_xticks([])
            ax.set_yticks([])
            if h >= weights.shape[0]:
                ax.axis("off")
                continue
            ax.imshow(weights[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            if r == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(name, fontsize=7)
            T, S = weights.shape[-2:]
            if tokens and len(tokens) == T and T <= MAX_LABELS and h == 0:
                ax.set_yticks(range(T), tokens, fontsize=4)
            if keys and len(keys) == S and S <= MAX_LABELS and r == n_rows - 1:
                ax.set_xticks(range(S), keys, fontsize=4, rotation=90)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
