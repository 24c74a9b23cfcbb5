"""Lab: quantization. Fill in the bodies below, then run `llmlab labs check quantization` (or the notebook).

A weight matrix w (out, in) is stored as small integers (codes) and a float scale per group of weights;
dequantised, it is codes * scale (minus a zero point, if any). Rounding is to the nearest integer (torch.round).
"""

import torch


def absmax_quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric, one scale per output row: scale = max|w_row| / qmax with qmax = 2^(bits-1) - 1 (127 for
    int8), codes = round(w / scale) in -qmax..qmax. Returns codes (out, in) and scales (out, 1)."""
    raise NotImplementedError("TODO: the row's largest magnitude, the scale, round")


def zero_point_quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric, one scale and zero point per output row, codes in 0..2^bits - 1:
    lo = min(w_row.min(), 0), hi = max(w_row.max(), 0), scale = (hi - lo) / (2^bits - 1),
    zero = round(-lo / scale), codes = clamp(round(w / scale) + zero, 0, 2^bits - 1).
    Returns codes (out, in), scales (out, 1) and zeros (out, 1); w is about (codes - zero) * scale."""
    raise NotImplementedError("TODO: the row's range, the scale, the zero point, the codes")


def group_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 32) -> torch.Tensor:
    """Symmetric absmax with one scale per group of `group_size` consecutive inputs of a row (in % group_size
    == 0), as int4 formats store weights. Returns the dequantised weight (out, in): codes * scale."""
    raise NotImplementedError("TODO: reshape to (out, in // group_size, group_size), absmax per group, back")


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    """2:4 sparsity: in every 4 consecutive inputs of a row, zero the 2 of smallest magnitude (in % 4 == 0)."""
    raise NotImplementedError("TODO: reshape to (out, in // 4, 4), keep the 2 largest |w| per group")
