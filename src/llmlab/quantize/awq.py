"""AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration"):
protect the weights that meet large activations by scaling them up before rounding.

For a linear y = x W^T, any per-input-channel s > 0 gives the same function as y = (x / s) (W diag s)^T.
Rounding W diag(s) instead of W shrinks the relative rounding error of columns with s_j > 1, and those are
the ones to protect when channel j's activations are large. AWQ sets

    s = mean|x|^alpha, normalised so sqrt(max s * min s) = 1,

and picks alpha on a grid in [0, 1] (alpha = 0 is plain RTN, so the search never does worse on the
calibration objective) minimising the output error of the RTN-rounded scaled weight:

    err(s) = sum over the layers sharing x of  sum_t ||x_t W^T - (x_t / s) Q(W diag s)^T||^2
           = tr(D H D^T) * N / 2,     D = W - Q(W diag s) diag(s)^-1,   H = 2 X^T X / N

so the search needs only the H that calibration.py collects, not the activations (every grid point costs
one (out, in) x (in, in) product, independent of the number of calibration tokens).

Where 1/s goes ("folding"), exactly, so the float model is unchanged until the weights are rounded:
- into the norm before the layers (attention norm -> q/k/v, MLP norm -> gate/up): norm.weight /= s
  (and its bias); the canonical choice, the model graph stays as it was;
- into the rows of the layer before, when nothing nonlinear sits between: up_proj's rows for down_proj
  in a SwiGLU MLP (down's input is silu(gate) * up, linear in up); v_proj's rows for o_proj when every
  query head has its own value head (no grouped-query sharing);
- otherwise (o_proj under grouped-query attention, down_proj after GELU) the quantised layer keeps
  `input_scale` = s and divides its input by it at run time.

Optional clipping search (AWQ's auto_clip): per output row and group, try max|w| shrunk by up to 50%
and keep the clip with the least output error, measured with the diagonal blocks of H as the reference
measures it (the group's own inputs). Skipped for q/k as the reference does (their errors are amplified
by the attention softmax).

Block by block (calibration.for_each_block): stats of a block's linears are collected once (scaling is
exact, so earlier groups' folds do not change later groups' inputs), scales searched and folded, then
all its linears clipped and rounded; the next block sees the quantised block's outputs.

    record = awq_quantize_model(model, batches, bits=4, group_size=128)
"""

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.models.swap import freeze, replace_module
from llmlab.quantize.calibration import (
    InputStats,
    calibration_info,
    collect_block_stats,
    for_each_block,
    linear_names,
)
from llmlab.quantize.gptq import quantized_layer
from llmlab.quantize.model import quantization_record
from llmlab.quantize.rtn import dequantize_weight, pad_columns, quantize_weight


def _quantize(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> tuple:
    """RTN codes of W (out, in) with the columns zero-padded to whole groups (as Int4Linear stores them)."""
    g = group_size or w.shape[1]
    return quantize_weight(pad_columns(w.float(), g), bits, g, symmetric)


def fake_quant(w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool) -> torch.Tensor:
    """W rounded to its grid and back, (out, in): padding columns (if any) dropped."""
    return dequantize_weight(*_quantize(w, bits, group_size, symmetric))[:, : w.shape[1]]


def output_error(w: torch.Tensor, w_q: torch.Tensor, H: torch.Tensor) -> float:
    """tr(D H D^T) with D = w - w_q: the summed squared output error, in H's units."""
    D = (w - w_q).float()  # (out, in)
    return float(((D @ H) * D).sum())


@torch.no_grad()
def awq_search_scale(weights: Sequence[torch.Tensor], H: torch.Tensor, mean_abs: torch.Tensor, bits: int = 4,
                     group_size: int | None = 128, symmetric: bool = True, n_grid: int = 20
                     ) -> tuple[torch.Tensor, float, list[float]]:
    """The per-input-channel scale (in,) for layers sharing one input -> (s, alpha, error at each alpha).

    Grid: alpha = 0, 1/n_grid, ..., 1.
    """
    H = H.float()
    x_mean = mean_abs.float().clamp(min=1e-4)  # a dead channel must not give s = 0
    errors, best = [], (float("inf"), None, 0.0)
    for k in range(n_grid + 1):
        alpha = k / n_grid
        s = x_mean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        err = sum(output_error(w, fake_quant(w.float() * s, bits, group_size, symmetric) / s, H)
                  for w in weights)
        errors.append(err)
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2], errors


@torch.no_grad()
def awq_search_clip(w: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                    symmetric: bool = True, n_grid: int = 20, max_shrink: float = 0.5) -> torch.Tensor:
    """Per row and group, the clip value in [ (1 - max_shrink), 1 ] x max|w| with the least output error.

    -> max_val (out, ceil(in / g)). Error of a group: d H_gg d^T with d the group's rounding error (out, g).
    """
    g = group_size or w.shape[1]
    w = pad_columns(w.float(), g)  # padding columns: zero weight, zero input
    out, n_in = w.shape
    H = F.pad(H.float(), (0, n_in - H.shape[0], 0, n_in - H.shape[0]))
    wg = w.view(out, n_in // g, g)  # (out, G, g)
    Hb = torch.stack([H[j:j + g, j:j + g] for j in range(0, n_in, g)])  # (G, g, g) diagonal blocks
    absmax = wg.abs().amax(-1)  # (out, G)
    best_err = torch.full_like(absmax, float("inf"))
    best = absmax.clone()
    for k in range(int(max_shrink * n_grid)):
        max_val = absmax * (1 - k / n_grid)
        clipped = torch.maximum(torch.minimum(wg, max_val[..., None]), -max_val[..., None])
        q = fake_quant(clipped.view(out, n_in), bits, g, symmetric).view(out, n_in // g, g)
        d = wg - q  # (out, G, g)
        err = torch.einsum("ogi,gij,ogj->og", d, Hb, d)  # (out, G)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best = torch.where(better, max_val, best)
    return best


def clip_weight(w: torch.Tensor, max_val: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Clamp each row's groups of g columns of W (out, in) to [-max_val, max_val] (out, ceil(in / g))."""
    n_in = w.shape[1]
    m = max_val.repeat_interleave(group_size or n_in, dim=1)[:, :n_in]  # (out, in); the last group may be short
    return torch.maximum(torch.minimum(w, m), -m)


def _fold_target(block: nn.Module, first: str) -> tuple[nn.Module, str] | None:
    """Where 1/s of the group led by linear `first` can go exactly: (module, "norm" | "rows") or None."""
    mlp, attn = getattr(block, "mlp", None), getattr(block, "attn", None)
    if first in ("attn.q_proj", "attn.k_proj", "attn.v_proj"):
        return block.attn_norm, "norm"
    if first in ("mlp.gate_proj", "mlp.up_proj"):
        return block.mlp_norm, "norm"
    if first == "mlp.down_proj" and hasattr(mlp, "gate_proj"):  # SwiGLU: down(silu(gate) * up)
        return mlp.up_proj, "rows"
    if first == "attn.o_proj" and attn.n_head == attn.n_kv_head:  # o's input channel j is a mix of v's row j
        return attn.v_proj, "rows"
    return None


@torch.no_grad()
def awq_scale_block(block: nn.Module, stats: dict[str, InputStats], groups: list[list[str]], bits: int = 4,
                    group_size: int | None = 128, symmetric: bool = True, n_grid: int = 20) -> dict[str, dict]:
    """Search and fold the scales of each group of linears sharing an input, in float, in place.

    Returns per linear {"alpha", "scale" (in,), "fold": where 1/s went, "input_scale": True when it could
    not be folded}. Folded groups have W diag(s) in their weights now (the block computes the same
    function); an unfolded group's weights are left as they are and `awq_quantize_block` scales them.
    """
    info = {}
    for group in groups:
        st = stats[group[0]]
        linears = [block.get_submodule(n) for n in group]
        s, alpha, _ = awq_search_scale([lin.weight for lin in linears], st.hessian, st.mean_abs, bits,
                                       group_size, symmetric, n_grid)
        target = _fold_target(block, group[0])
        if target is not None:
            module, kind = target
            s = s.to(module.weight.dtype)
            if kind == "norm":
                module.weight.div_(s)
            else:
                module.weight.div_(s[:, None])  # (out_prev, in_prev): row j feeds channel j
            if getattr(module, "bias", None) is not None:
                module.bias.div_(s)
            for lin in linears:
                lin.weight.mul_(s[None, :])
        where = "input_scale" if target is None else next(n for n, m in block.named_modules() if m is target[0])
        for name in group:
            info[name] = {"alpha": alpha, "scale": s, "fold": where, "input_scale": target is None}
    return info


@torch.no_grad()
def awq_quantize_block(block: nn.Module, stats: dict[str, InputStats], info: dict[str, dict], bits: int = 4,
                       group_size: int | None = 128, symmetric: bool = True, clip: bool = True) -> None:
    """Clip (optional) and round each linear of `info` (after `awq_scale_block`), replacing it by a quantised layer."""
    for name, meta in info.items():
        linear = block.get_submodule(name)
        s = meta["scale"].float()
        w = linear.weight.float() * s[None, :] if meta["input_scale"] else linear.weight.float()  # W diag(s)
        meta["clip"] = clip and name not in ("attn.q_proj", "attn.k_proj")
        if meta["clip"]:
            H = stats[name].hessian / (s[:, None] * s[None, :])  # the scaled input x / s
            w = clip_weight(w, awq_search_clip(w, H, bits, group_size, symmetric), group_size)
        codes, scales, zeros = _quantize(w, bits, group_size, symmetric)
        q = quantized_layer(codes, scales, zeros, bits, linear, input_scale=s if meta["input_scale"] else None)
        replace_module(block, name, q)


@torch.no_grad()
def awq_quantize_model(model: nn.Module, batches: Sequence[torch.Tensor], bits: int = 4,
                       group_size: int | None = 128, symmetric: bool = True, n_grid: int = 20, clip: bool = True,
                       skip: Sequence[str] = ("lm_head",), progress: bool = False) -> dict:
    """AWQ every linear in the model's blocks (but `skip`), in place, block by block -> the "quantization" record
    (`model.quantization_record`), with in "per_layer" the alpha chosen, where the scale was folded, whether
    the layer keeps an input_scale, and whether it was clipped.
    """
    freeze(model)
    skip = tuple(skip)
    per_layer: dict[str, dict] = {}
    for i, block, inputs in for_each_block(model, batches, progress, desc="awq"):
        names = [n for n in linear_names(block, skip=()) if not f"blocks.{i}.{n}".endswith(skip)]
        col = collect_block_stats(block, i, inputs, names, hessian=True)
        info = awq_scale_block(block, col.stats, col.groups, bits, group_size, symmetric, n_grid)
        awq_quantize_block(block, col.stats, info, bits, group_size, symmetric, clip)
        for name, meta in info.items():
            per_layer[f"blocks.{i}.{name}"] = {k: v for k, v in meta.items() if k != "scale"}
    scheme = "channel" if group_size is None else "group"
    return quantization_record(
        model, "awq", bits=bits, group_size=group_size, symmetric=symmetric, scheme=scheme,
        skip=list(skip), n_grid=n_grid, clip=clip, calibration=calibration_info(batches), per_layer=per_layer)
