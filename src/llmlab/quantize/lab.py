"""Lab helpers: what each quantisation choice does to one weight matrix, in numbers and in a picture.

    rows = quantization_error_table(model.blocks[0].mlp.down_proj.weight)
    print(format_table(rows))
    plot_weight_grid(w, bits=4, group_size=128, symmetric=True, path="grid.png")

The table runs round-to-nearest (`rtn.py`) for each configuration and measures the rebuilt matrix
W' against W:

    mse        mean (W' - W)^2
    max_abs    max |W' - W|                     (at most half a step, unless clipped)
    rel_fro    ||W' - W||_F / ||W||_F
    sqnr_db    10 log10(sum W^2 / sum (W' - W)^2)   (~6 dB per bit for a uniform grid)
    bits_per_weight  b plus the float32 scales (and zeros) spread over each group

Group sizes that do not divide the width are zero-padded (`rtn.pad_columns`) as the layers do.
Nothing here changes a model; `model.py` does that.
"""

import math
from pathlib import Path

import torch

from llmlab.common.errors import UserError
from llmlab.common.io import atomic_write
from llmlab.quantize.rtn import dequantize_weight, pad_columns, qrange, quantize_weight

DEFAULT_CONFIGS = (
    {"bits": 8, "per_tensor": True},
    {"bits": 8},
    {"bits": 8, "group_size": 128},
    {"bits": 4, "per_tensor": True},
    {"bits": 4},
    {"bits": 4, "group_size": 256},
    {"bits": 4, "group_size": 128},
    {"bits": 4, "group_size": 64},
    {"bits": 4, "group_size": 32},
    {"bits": 4, "group_size": 128, "symmetric": False},
    {"bits": 4, "group_size": 32, "symmetric": False},
)


def rtn_roundtrip(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                  per_tensor: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(W' (out, in) float32 rebuilt from its codes, scales) with columns padded for the groups and cut again."""
    w = w.detach().float()
    padded = pad_columns(w, group_size) if group_size else w
    codes, scales, zeros = quantize_weight(padded, bits, group_size, symmetric, per_tensor)
    return dequantize_weight(codes, scales, zeros)[:, : w.shape[1]], scales


def error_stats(w: torch.Tensor, w_hat: torch.Tensor) -> dict[str, float]:
    """MSE, max abs, relative Frobenius and SQNR (dB) of W' against W. w=[3, 4], w_hat=[3, 3] -> rel_fro 0.2."""
    w, err = w.detach().double(), (w_hat.detach().double() - w.detach().double())
    noise, signal = float(err.pow(2).sum()), float(w.pow(2).sum())
    return {"mse": float(err.pow(2).mean()), "max_abs": float(err.abs().max()),
            "rel_fro": math.sqrt(noise / signal) if signal else float("nan"),
            "sqnr_db": 10 * math.log10(signal / noise) if noise else float("inf")}


def quantization_error_table(w: torch.Tensor, configs=DEFAULT_CONFIGS) -> list[dict]:
    """One row per configuration (keys of `rtn.quantize_weight`): its settings, `error_stats` and bits/weight."""
    if w.dim() != 2:
        raise UserError(f"w: expected a 2-D weight (out, in), got shape {tuple(w.shape)}")
    rows = []
    for cfg in configs:
        unknown = set(cfg) - {"bits", "group_size", "symmetric", "per_tensor"}
        if unknown:
            raise UserError(f"configs: unknown key {sorted(unknown)[0]!r}; use bits, group_size, symmetric, per_tensor")
        bits, g = cfg["bits"], cfg.get("group_size")
        symmetric, per_tensor = cfg.get("symmetric", True), cfg.get("per_tensor", False)
        w_hat, scales = rtn_roundtrip(w, bits, g, symmetric, per_tensor)
        n_params = 1 if per_tensor else scales.numel()
        overhead = 32 * n_params * (1 if symmetric else 2) / w.numel()  # float32 scale (+ zero) per group
        scheme = "tensor" if per_tensor else "channel" if g is None else f"group {g}"
        rows.append({"bits": bits, "scheme": scheme, "group_size": g, "symmetric": symmetric,
                     **error_stats(w, w_hat), "bits_per_weight": bits + overhead})
    return rows


def format_table(rows: list[dict]) -> str:
    """The table as aligned text, one configuration per line."""
    lines = [f"{'bits':>4} {'scheme':<10} {'sym':<4} {'mse':>10} {'max_abs':>10} {'rel_fro':>9} {'sqnr_dB':>8} "
             f"{'bits/w':>7}"]
    for r in rows:
        lines.append(f"{r['bits']:>4} {r['scheme']:<10} {'yes' if r['symmetric'] else 'no':<4} {r['mse']:>10.3e} "
                     f"{r['max_abs']:>10.3e} {r['rel_fro']:>9.4f} {r['sqnr_db']:>8.2f} {r['bits_per_weight']:>7.3f}")
    return "\n".join(lines)


def plot_weight_grid(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, path: str | Path,
                     bins: int = 200) -> None:
    """A PNG: left, the weights of the group with the widest range and that group's quantisation grid (one
    line per code); right, all weights in units of their own group's step (w / s + z), where the grid is
    the integers qmin..qmax for every group at once, so crowding and unused codes show."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    if w.dim() != 2:
        raise UserError(f"w: expected a 2-D weight (out, in), got shape {tuple(w.shape)}")
    w = w.detach().float().cpu()
    g = group_size or w.shape[1]
    padded = pad_columns(w, g)
    codes, scales, zeros = quantize_weight(padded, bits, g if group_size else None, symmetric)
    qmin, qmax = qrange(bits, symmetric)
    out_features, n_groups = scales.shape
    groups = padded.view(out_features, n_groups, g)  # (out, G, g)
    z = zeros if zeros is not None else torch.zeros_like(scales)
    widest = int((groups.amax(-1) - groups.amin(-1)).argmax())  # flat index over (out, G)
    r, c = divmod(widest, n_groups)
    width = min(g, w.shape[1] - c * g)
    values = groups[r, c, :width]
    grid = (torch.arange(qmin, qmax + 1).float() - z[r, c]) * scales[r, c]
    in_steps = (groups / scales[..., None] + z[..., None]).reshape(out_features, -1)[:, : w.shape[1]]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ax1.hist(values.numpy(), bins=min(bins, max(10, width // 2)), color="tab:blue", alpha=0.8)
    for v in grid.tolist():
        ax1.axvline(v, color="tab:red", linewidth=0.6, alpha=0.6)
    ax1.set_title(f"row {r}, group {c}: {width} weights and the {qmax - qmin + 1} levels")
    ax1.set_xlabel("weight")
    ax2.hist(in_steps.flatten().numpy(), bins=bins, color="tab:blue", alpha=0.8)
    if qmax - qmin <= 32:
        for v in range(qmin, qmax + 1):
            ax2.axvline(v, color="tab:red", linewidth=0.6, alpha=0.6)
    ax2.axvspan(qmin - 0.5, qmax + 0.5, color="tab:green", alpha=0.08, label="representable range")
    ax2.set_title("all weights, in steps of their group's scale (w / s + z)")
    ax2.set_xlabel("code units")
    ax2.legend(loc="upper right")
    scheme = "per channel" if group_size is None else f"groups of {group_size}"
    fig.suptitle(f"int{bits} {'symmetric' if symmetric else 'zero-point'}, {scheme}: shape {tuple(w.shape)}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
