"""Lab: quantization, the reference solution: llmlab's own round-to-nearest quantiser (llmlab.quantize.rtn)
and its n:m pruning mask (llmlab.quantize.prune), behind the lab's names."""

import torch

from llmlab.quantize.prune import n_m_mask
from llmlab.quantize.rtn import dequantize_weight, quantize_weight


def absmax_quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    codes, scales, _ = quantize_weight(w, bits, group_size=None, symmetric=True)  # scales (out, 1)
    return codes, scales


def zero_point_quantize(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return quantize_weight(w, bits, group_size=None, symmetric=False)


def group_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 32) -> torch.Tensor:
    return dequantize_weight(*quantize_weight(w, bits, group_size=group_size, symmetric=True))


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    return w * n_m_mask(w.abs(), 2, 4)


LLMLAB_CODE = [quantize_weight, dequantize_weight, n_m_mask]  # printed by `llmlab labs solution quantization`
