"""Round-to-nearest (RTN) integer quantisation of a weight matrix: the baseline every other method improves on.

A weight W (out, in) is cut along its input dimension into groups of g consecutive columns; each
row's group gets its own scale (and, asymmetric, its own zero point):

    symmetric (absmax)     s = max|w| / qmax            c = clamp(round(w / s), -qmax, qmax)    z = None
    asymmetric (zero pt)   s = (max w - min w) / qmax   z = clamp(round(-min w / s), 0, qmax)
                                                        c = clamp(round(w / s) + z, 0, qmax)
    dequantised            w' = (c - z) * s             (z = 0 when symmetric)

with qmax = 2^(b-1) - 1 (symmetric: int8 -127..127, int4 -7..7; the extra negative code -2^(b-1) is
left unused so the grid is symmetric about 0) or 2^b - 1 (asymmetric: int8 0..255, int4 0..15). The
asymmetric range always contains 0 (min w clipped at most to 0, max w at least to 0), so 0 is exactly
representable, and a padded column of zeros never changes a group's scale. Rounding is torch.round:
half to even (1.5 -> 2, 2.5 -> 2), as numpy.

Granularity: `group_size=g` (g divides `in`); `group_size=None` is one group per row (per output
channel, g = in); `per_tensor=True` is one scale for the whole matrix, repeated per row so the shapes
stay (out, 1). A group size that does not divide the input width is a UserError; `pad_columns(w, g)`
zero-pads the columns first (the padding rule the quantised layers use: the last group is short in
effect, its padded columns quantise to code 0 / zero point and are dropped after dequantising).

Shapes (the shared convention of every llmlab quantiser): codes int32 (out, in), scales float32
(out, in // g), zeros float32 (out, in // g) in code units (integers) or None.

Worked example, int4 symmetric per channel, one row [0.1, -0.4, 0.2, 0.3]: s = 0.4 / 7 = 0.0571,
w / s = [1.75, -7, 3.5, 5.25] -> codes [2, -7, 4, 5] (3.5 rounds to even 4), dequantised
[0.114, -0.4, 0.229, 0.286].

INT4 storage: `pack_int4` puts two 4-bit values in a byte, the even column in the high nibble:
byte j of a row = (u[2j] << 4) | u[2j + 1], u unsigned 0..15 (symmetric codes are stored as c + 8).
That is the order of `llmlab.quantize.nf4` and of the input of PyTorch's CUDA int4 packer.

Not here: layers that compute with these codes (`layers.py`), error-minimising quantisers (GPTQ,
AWQ: `gptq.py`, `awq.py`), the GGUF block formats (`gguf_export.py`).
"""

import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError

BITS = range(2, 9)  # integer widths quantize_weight knows; the layers use 8 and 4


def qrange(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """The code range: symmetric -(2^(b-1)-1)..2^(b-1)-1, asymmetric 0..2^b-1. bits=4 -> (-7, 7) or (0, 15)."""
    if bits not in BITS:
        raise UserError(f"bits must be an integer width from {BITS.start} to {BITS.stop - 1} (got {bits!r}); "
                        "the quantised layers use 8 and 4")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def check_group_size(in_features: int, group_size: int | None) -> int:
    """The group size to use (None -> the whole row), or a UserError when it does not divide the width."""
    if group_size is None:
        return in_features
    if not isinstance(group_size, int) or group_size < 1:
        raise UserError(f"group_size must be a positive integer or None for per-channel (got {group_size!r})")
    if in_features % group_size:
        divisors = [d for d in (32, 64, 128, 256) if in_features % d == 0]
        hint = f"one of {divisors}" if divisors else "a divisor of it"
        raise UserError(f"group_size {group_size} does not divide the input width {in_features}; use {hint}, "
                        "or zero-pad the columns first with pad_columns(w, group_size)")
    return group_size


def pad_columns(w: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the last dimension of `w` up to a multiple of `multiple`. (2, 5), 4 -> (2, 8)."""
    return F.pad(w, (0, -w.shape[-1] % multiple))


@torch.no_grad()
def quantize_weight(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                    per_tensor: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """W (out, in) -> (codes int32 (out, in), scales float32 (out, in // g), zeros float32 or None).

    Rules and the worked example are in the module docstring. All-zero groups get scale 1 (any scale
    represents them exactly) so nothing divides by zero.
    """
    if w.dim() != 2:
        raise UserError(f"w: expected a 2-D weight (out, in), got shape {tuple(w.shape)}")
    if per_tensor and group_size is not None:
        raise UserError(f"per_tensor=True means one scale for the whole matrix; leave group_size unset "
                        f"(got {group_size})")
    qmin, qmax = qrange(bits, symmetric)
    out_features, in_features = w.shape
    g = check_group_size(in_features, group_size)
    wg = w.detach().float().reshape(out_features, in_features // g, g)  # (out, G, g)
    if per_tensor:  # one statistic for the whole matrix, shaped like per-channel
        stats = wg.reshape(1, 1, -1)
    else:
        stats = wg
    if symmetric:
        scale = stats.abs().amax(-1) / qmax  # (out, G) or (1, 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        scale = scale.expand(out_features, in_features // g)
        codes = torch.round(wg / scale[..., None]).clamp(qmin, qmax)
        zeros = None
    else:
        lo, hi = stats.amin(-1).clamp(max=0), stats.amax(-1).clamp(min=0)  # the range always holds 0
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-lo / scale).clamp(qmin, qmax)
        scale = scale.expand(out_features, in_features // g)
        zeros = zero.expand(out_features, in_features // g).contiguous()
        codes = (torch.round(wg / scale[..., None]) + zeros[..., None]).clamp(qmin, qmax)
    return codes.reshape(out_features, in_features).to(torch.int32), scale.contiguous(), zeros


def dequantize_weight(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(codes - zeros) * scales, each group's scale and zero broadcast over its g columns -> W (out, in)."""
    out_features, in_features = codes.shape
    n_groups = scales.shape[-1]
    if scales.shape[0] != out_features or in_features % n_groups:
        raise ValueError(f"scales {tuple(scales.shape)} do not fit codes {tuple(codes.shape)}: expected "
                         f"(out, in // group_size)")
    g = in_features // n_groups
    q = codes.reshape(out_features, n_groups, g).float()  # (out, G, g)
    if zeros is not None:
        q = q - zeros.float()[..., None]
    return (q * scales.float()[..., None]).reshape(out_features, in_features).to(dtype)


def fake_quantize(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True,
                  per_tensor: bool = False) -> torch.Tensor:
    """W rounded onto its quantisation grid and back to float: what a quantised layer computes with."""
    return dequantize_weight(*quantize_weight(w, bits, group_size, symmetric, per_tensor), dtype=w.dtype)


def pack_int4(u: torch.Tensor) -> torch.Tensor:
    """Unsigned 4-bit values (..., n) in 0..15, n even -> uint8 (..., n / 2), the even column in the high nibble.

    [[1, 2, 15, 0]] -> [[0x12, 0xF0]] = [[18, 240]].
    """
    if u.shape[-1] % 2:
        raise ValueError(f"pack_int4 packs pairs of columns; got an odd width {u.shape[-1]}")
    if u.numel() and (int(u.min()) < 0 or int(u.max()) > 15):
        raise ValueError(f"pack_int4 takes unsigned 4-bit values 0..15; got {int(u.min())}..{int(u.max())} "
                         "(store symmetric codes as code + 8)")
    u = u.to(torch.uint8)
    return (u[..., 0::2] << 4) | u[..., 1::2]


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., m) -> uint8 (..., 2m): the inverse of `pack_int4`."""
    return torch.stack([packed >> 4, packed & 0xF], dim=-1).flatten(-2)
