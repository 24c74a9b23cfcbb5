"""NF4 4-bit weights with double quantisation, as QLoRA (Dettmers et al. 2023) stores a frozen base.

Quantising one weight matrix W (out, in), flattened row-major into blocks of 64:

1. absmax per block: a_b = max |w| over the block; w / a_b lies in [-1, 1].
2. Each scaled value becomes the index (0..15) of the nearest of the 16 NF4
   values: quantiles of a standard normal, rescaled to [-1, 1], with an exact 0
   (`NF4_CODE`, built by `build_nf4_code`). Two indices pack into one byte,
   the first in the high nibble (bitsandbytes' layout).
3. Double quantisation: the absmax constants (one float32 per 64 weights, 0.5
   bit per weight) are themselves quantised: subtract their mean, then 8-bit
   blockwise (block 256) with bitsandbytes' signed dynamic code
   (`build_dynamic_code`), leaving ~0.127 bits of overhead per weight.

Dequantising reverses the steps; `NF4Linear` (a `QuantizedLinear`) does it on
the fly in forward and again in backward (nothing but the packed bytes stays in
memory). This file does not train anything; `llmlab.finetune.lora.apply_qlora`
puts LoRA on top of the NF4 layers. The numbers match bitsandbytes'
`quantize_4bit(..., quant_type="nf4", compress_statistics=True)` byte for byte
(tests/quantize/test_nf4.py).
"""

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.models.swap import find_modules, freeze, replace_module
from llmlab.quantize.linear import QuantizedLinear

BLOCK = 64  # weights per absmax constant
BLOCK2 = 256  # absmax constants per second-level scale

# the 16 NF4 values as published with QLoRA (bitsandbytes' table); build_nf4_code() derives them
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])


def build_nf4_code(offset: float = 0.9677083) -> torch.Tensor:
    """NormalFloat4: 8 positive and 7 negative normal quantiles plus 0, scaled to [-1, 1].

    Asymmetric so 0 is exact; `offset` is where the outermost quantile sits ((1-1/(2*15) + 1-1/(2*16))/2).
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # 8 values
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # 7 values
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.abs().max()).float()


def build_dynamic_code(max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic type (Dettmers 2015): a decimal exponent, then a linear fraction.

    For exponent i = 0..6 there are 2^i fraction values in (0.1, 1] * 10^(i-6), each mirrored
    negative; with 0 and 1.0 that makes 255 values, padded with one more 0 to 256, sorted.
    """
    data: list[float] = []
    for i in range(max_exponent_bits):
        n = 2 ** (i + total_bits - 1 - max_exponent_bits) + 1
        bounds = torch.linspace(0.1, 1, n, dtype=torch.float32)
        means = ((bounds[:-1] + bounds[1:]) / 2.0) * 10 ** (-(max_exponent_bits - 1) + i)
        data += means.tolist() + (-means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (2 ** total_bits - len(data))
    return torch.tensor(sorted(data), dtype=torch.float32)


DYNAMIC_CODE = build_dynamic_code()


def _nearest(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code value (code sorted ascending) for every element."""
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, midpoints.to(scaled.device)).to(torch.uint8)


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """Flatten and cut into rows of `size`, zero-padding the last (zeros never change an absmax)."""
    flat = x.reshape(-1).float()
    return F.pad(flat, (0, -flat.numel() % size)).view(-1, size)  # (n_blocks, size)


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax-scale each block to [-1, 1] and round to the nearest code value -> (indices uint8, absmax float32)."""
    blocks = _blocks(x, block)  # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = (blocks / absmax.clamp(min=1e-38)[:, None]).clamp(-1, 1)
    return _nearest(scaled, code).view(-1)[: x.numel()], absmax


def dequantize_blockwise(idx: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, block: int) -> torch.Tensor:
    values = F.pad(code.to(absmax.device)[idx.long()], (0, -idx.numel() % block)).view(-1, block)
    return (values * absmax[:, None]).view(-1)[: idx.numel()]


def quantize_nf4(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """W -> {"packed": uint8 (numel/2,), "qabsmax": uint8 (n_blocks,), "absmax2": f32, "offset": f32 ()}."""
    if w.numel() % 2:
        raise ValueError(f"NF4 packs two values per byte; a tensor of {w.numel()} values is odd")
    idx, absmax = quantize_blockwise(w, NF4_CODE, BLOCK)  # (numel,), (n_blocks,)
    packed = (idx[0::2] << 4) | idx[1::2]  # (numel/2,): first value in the high nibble
    offset = absmax.mean()
    qabsmax, absmax2 = quantize_blockwise(absmax - offset, DYNAMIC_CODE, BLOCK2)
    return {"packed": packed, "qabsmax": qabsmax, "absmax2": absmax2, "offset": offset}


def dequantize_nf4(q: dict[str, torch.Tensor], shape: torch.Size, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    absmax = dequantize_blockwise(q["qabsmax"], q["absmax2"], DYNAMIC_CODE, BLOCK2) + q["offset"]
    packed = q["packed"]
    idx = torch.stack([packed >> 4, packed & 0xF], dim=1).view(-1)  # (numel,)
    return dequantize_blockwise(idx, absmax, NF4_CODE, BLOCK).view(shape).to(dtype)


def nf4_bytes(q: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in q.values())


class NF4Linear(QuantizedLinear):
    """A frozen linear layer whose weight lives as NF4 with double-quantised absmax."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        for name, t in quantize_nf4(linear.weight.detach()).items():
            self.register_buffer(name, t)

    def quantized(self) -> dict[str, torch.Tensor]:
        return {"packed": self.packed, "qabsmax": self.qabsmax, "absmax2": self.absmax2, "offset": self.offset}

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_nf4(self.quantized(), torch.Size((self.out_features, self.in_features)),
                              dtype or self.compute_dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nf4 block={BLOCK}"


def quantize_model_nf4(model: nn.Module, skip: Iterable[str] = ("lm_head",)) -> dict[str, int]:
    """Replace every nn.Linear (except `skip`) by an NF4Linear, in place; returns the weights' bytes.

    {"nf4": bytes now stored, "float32": the same weights in float32, "bfloat16": ... in bf16, "params": n}
    """
    freeze(model)
    report = {"nf4": 0, "float32": 0, "bfloat16": 0, "params": 0}
    for name in find_modules(model, (nn.Linear,), skip=skip):
        q = NF4Linear(model.get_submodule(name))
        replace_module(model, name, q)
        n = q.in_features * q.out_features
        report["nf4"] += nf4_bytes(q.quantized())
        report["float32"] += 4 * n
        report["bfloat16"] += 2 * n
        report["params"] += n
    return report
