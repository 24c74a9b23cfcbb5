"""ggml's block formats, written from scratch: float rows -> the bytes llama.cpp reads.

Legacy formats (Q8_0, Q4_0) first, then two K-quants (Q6_K, Q4_K) at the end of the file.

A weight matrix (out, in) is cut along each row into blocks of 32 consecutive weights
(so `in` must be a multiple of 32); each block becomes one float16 scale `d` followed by
its 32 codes. Both formats are symmetric (no zero point) and round the way ggml's
reference `quantize_row_*_ref` does, so the bytes equal llama.cpp's and the `gguf`
package's own `gguf.quants.quantize` (tests/quantize/test_gguf_export.py holds them equal).

- Q8_0, 34 bytes per block (8.5 bits per weight): d = max|x| / 127, q = round(x / d)
  in -127..127 (half away from zero, C's `roundf`), stored as int8. w = d * q.
- Q4_0, 18 bytes per block (4.5 bits per weight): d = m / -8, where m is the block's
  value of largest magnitude *with its sign*, so that value lands exactly on code 0
  and the other side gets the finer half of the range; q = trunc(x / d + 8.5) clamped
  to 0..15. w = d * (q - 8). Byte j holds code j in its low nibble and code j + 16 in
  its high nibble (not neighbours: a SIMD kernel unpacks 16 low then 16 high at once).

Codes are computed with the float32 scale and its float32 reciprocal; only the stored
scale is rounded to float16 (as ggml does), which is why dequantised weights are
`float16(d) * q`. Dequantisation is the reader's job: `llmlab.models.gguf.QUANTS`.
Example, one block of Q8_0: x = [0.5, -1.27, 0, ...] -> d = 0.01, q = [50, -127, 0, ...].
"""

import numpy as np

from llmlab.common.errors import UserError

QK = 32  # weights per block
BLOCK_BYTES = {"Q8_0": 2 + QK, "Q4_0": 2 + QK // 2}


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: 2.5 -> 3, -2.5 -> -3 (numpy's round goes to even).

    trunc(x + 0.5 * sign(x)) in float64, where adding 0.5 to a float32 is exact; in float32 it is not
    (0.49999997 + 0.5 would round up to 1.0).
    """
    x64 = x.astype(np.float64)
    return np.trunc(x64 + np.copysign(0.5, x64))


def _blocks(w: np.ndarray, name: str) -> np.ndarray:
    """(out, in) float -> (out * in / 32, 32) float32 blocks; in must be a multiple of 32."""
    if w.ndim != 2 or w.shape[-1] % QK:
        raise UserError(f"{name}: rows of {w.shape[-1]} weights do not split into blocks of {QK}; "
                        "choose qtype f16 or f32 for this model")
    return np.ascontiguousarray(w, dtype=np.float32).reshape(-1, QK)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1/d in float32, 0 where d is 0 (an all-zero block keeps codes at the centre)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def quantize_q8_0(w: np.ndarray, name: str = "tensor") -> np.ndarray:
    """(out, in) float -> (out, in / 32 * 34) uint8: per block a float16 scale then 32 int8 codes."""
    x = _blocks(w, name)  # (n, 32)
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)  # (n, 1) float32
    q = _round_half_away(x * _reciprocal(d))  # (n, 32) in -127..127
    out = np.concatenate([d.astype(np.float16).view(np.uint8), q.astype(np.int8).view(np.uint8)], axis=1)
    return out.reshape(w.shape[0], -1)


def quantize_q4_0(w: np.ndarray, name: str = "tensor") -> np.ndarray:
    """(out, in) float -> (out, in / 32 * 18) uint8: per block a float16 scale then 16 bytes of nibbles."""
    x = _blocks(w, name)  # (n, 32)
    signed_max = np.take_along_axis(x, np.abs(x).argmax(axis=1, keepdims=True), axis=1)  # (n, 1)
    d = signed_max / np.float32(-8)  # the extreme value maps to code 0: -8 after the offset
    q = np.trunc(x * _reciprocal(d) + np.float32(8.5)).clip(0, 15).astype(np.uint8)  # (n, 32)
    packed = q[:, :QK // 2] | (q[:, QK // 2:] << 4)  # (n, 16): code j low, code j + 16 high
    out = np.concatenate([d.astype(np.float16).view(np.uint8), packed], axis=1)
    return out.reshape(w.shape[0], -1)


QK_K = 256  # weights per K-quant super-block


def _super_blocks(w: np.ndarray, name: str) -> np.ndarray:
    """(out, in) float -> (out * in / 256, 256) float32; in must be a multiple of 256."""
    if w.ndim != 2 or w.shape[-1] % QK_K:
        raise UserError(f"{name}: rows of {w.shape[-1]} weights do not split into K-quant blocks of {QK_K}")
    return np.ascontiguousarray(w, dtype=np.float32).reshape(-1, QK_K)


def quantize_q6_k(w: np.ndarray, name: str = "tensor") -> np.ndarray:
    """(out, in) float -> (out, in / 256 * 210) uint8. Q6_K: 6.5625 bits per weight.

    A super-block of 256 weights is 16 sub-blocks of 16, each with a signed int8 scale; one float16 `d`
    scales the scales. Codes q in -32..31 (stored + 32 as 6 bits): w = d * scale_j * q. As in Q4_0, a
    sub-block's value of largest magnitude lands on code -32, so its sign picks the finer side.
    Layout: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, float16 d.
    (llama.cpp also searches the scale that minimises the weighted error; this is the direct choice.)
    """
    x = _super_blocks(w, name).reshape(-1, 16, 16)  # (n, sub-block, weight)
    signed_max = np.take_along_axis(x, np.abs(x).argmax(axis=2, keepdims=True), axis=2)[..., 0]  # (n, 16)
    sub_scale = signed_max / np.float32(-32)  # (n, 16)
    top = np.take_along_axis(sub_scale, np.abs(sub_scale).argmax(axis=1, keepdims=True), axis=1)  # (n, 1)
    d = (top / np.float32(-128)).astype(np.float16)  # the largest scale lands on int8 -128
    scales = _round_half_away(sub_scale * _reciprocal(d.astype(np.float32))).clip(-128, 127)  # (n, 16)
    step = d.astype(np.float32) * scales  # (n, 16): the dequantisation step of each sub-block
    q = _round_half_away(x * _reciprocal(step)[..., None]).clip(-32, 31) + 32  # (n, 16, 16) in 0..63
    q = q.astype(np.uint8).reshape(-1, 2, 128)  # two halves of 128 weights
    low, high = q & 0x0F, q >> 4
    low = low.reshape(-1, 2, 2, 64)  # (n, half, which nibble, 64)
    ql = low[:, :, 0] | (low[:, :, 1] << 4)  # (n, 2, 64): weight j low nibble, weight j + 64 high
    high = high.reshape(-1, 2, 4, 32)  # (n, half, which pair of bits, 32)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)  # (n, 2, 32)
    out = np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), scales.astype(np.int8).view(np.uint8),
                          d.view(np.uint8)], axis=1)
    return out.reshape(w.shape[0], -1)


def _pack_6bit_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins (n, 8) -> 12 bytes (n, 12), Q4_K's packing.

    Bytes 0-3: scale i (6 bits) with the top 2 bits of scale i + 4 above it; bytes 4-7: the same for
    the mins; bytes 8-11: the low 4 bits of scale i + 4, then of min i + 4.
    """
    first = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    second = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    third = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return np.concatenate([first, second, third], axis=1).astype(np.uint8)


def quantize_q4_k(w: np.ndarray, name: str = "tensor") -> np.ndarray:
    """(out, in) float -> (out, in / 256 * 144) uint8. Q4_K: 4.5 bits per weight, asymmetric.

    A super-block of 256 weights is 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min;
    float16 `d` and `dmin` scale those. Codes q in 0..15: w = d * scale_j * q - dmin * min_j, where the
    sub-block's minimum (never above 0) is -dmin * min_j. Layout: d, dmin, 12 bytes of packed scales and
    mins, then 128 bytes of nibbles (sub-blocks 2c and 2c + 1 share 32 bytes: low, then high nibbles).
    (llama.cpp refines each scale and min by a small search; this is the direct choice.)
    """
    x = _super_blocks(w, name).reshape(-1, 8, 32)  # (n, sub-block, weight)
    lo = np.minimum(x.min(axis=2), 0)  # (n, 8): the range always includes 0
    sub_scale = (x.max(axis=2) - lo) / np.float32(15)  # (n, 8)
    d = (sub_scale.max(axis=1, keepdims=True) / np.float32(63)).astype(np.float16)  # (n, 1)
    dmin = ((-lo).max(axis=1, keepdims=True) / np.float32(63)).astype(np.float16)  # (n, 1)
    sc = _round_half_away(sub_scale * _reciprocal(d.astype(np.float32))).clip(0, 63).astype(np.uint8)  # (n, 8)
    mn = _round_half_away(-lo * _reciprocal(dmin.astype(np.float32))).clip(0, 63).astype(np.uint8)  # (n, 8)
    step = d.astype(np.float32) * sc  # (n, 8)
    offset = dmin.astype(np.float32) * mn  # (n, 8)
    q = _round_half_away((x + offset[..., None]) * _reciprocal(step)[..., None]).clip(0, 15).astype(np.uint8)
    q = q.reshape(-1, 4, 2, 32)  # (n, pair of sub-blocks, which nibble, 32)
    qs = q[:, :, 0] | (q[:, :, 1] << 4)  # (n, 4, 32)
    out = np.concatenate([d.view(np.uint8), dmin.view(np.uint8), _pack_6bit_scales(sc, mn), qs.reshape(-1, 128)],
                         axis=1)
    return out.reshape(w.shape[0], -1)


QUANTIZERS = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q6_K": quantize_q6_k, "Q4_K": quantize_q4_k}
# what a K-quant matrix whose rows do not split into 256s is stored as instead (llama.cpp also falls back)
K_FALLBACK = {"Q6_K": "Q8_0", "Q4_K": "Q4_0"}
