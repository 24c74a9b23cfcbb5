"""ggml's legacy block formats, written from scratch: float rows -> the bytes llama.cpp reads.

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


QUANTIZERS = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0}
