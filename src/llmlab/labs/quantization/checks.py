"""Lab: quantization, the checks. References are llmlab's own round-to-nearest quantiser and n:m mask
(`llmlab.quantize`), which its tests hold to bitsandbytes' and llama.cpp's formats. Codes, scales and the
dequantised weights are compared; typical slips (qmax 128, a scale for the whole matrix, truncating instead of
rounding, groups along the wrong axis) are named.
"""

import torch

from llmlab.labs.checking import CheckFailed, CheckList, Workspace, call, close, diagnose, expect_tensor
from llmlab.quantize.prune import n_m_mask
from llmlab.quantize.rtn import dequantize_weight, quantize_weight

CHECKS = CheckList()


def _weights(out: int = 6, inp: int = 64) -> torch.Tensor:
    w = torch.randn(out, inp) * 0.05
    w[0] *= 20  # one row far larger: a single scale for the whole matrix shows
    return w


def _per_row(t, what: str) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.numel() != 6:
        raise CheckFailed(f"{what}: one scale per output row, shape (out, 1), not one for the whole matrix; found "
                          f"shape {tuple(t.shape)}")
    return t.reshape(6, 1).float()


def _pair(result, what: str, n: int) -> tuple:
    if not isinstance(result, tuple) or len(result) != n:
        raise CheckFailed(f"{what} should return {n} tensors ({'codes, scales' if n == 2 else 'codes, scales, zeros'})")
    return result


@CHECKS.add("absmax_quantize", "codes round(w / scale) in -qmax..qmax, one scale max|w| / qmax per row")
def absmax(ws: Workspace) -> None:
    for bits in (8, 4):
        w = _weights()
        codes, scales = _pair(call(ws.get("absmax_quantize"), w.clone(), bits=bits), "absmax_quantize", 2)
        ref_codes, ref_scales, _ = quantize_weight(w, bits, symmetric=True)
        qmax = 2 ** (bits - 1) - 1
        scales = _per_row(scales, "absmax_quantize")
        diagnose(scales, ref_scales, {
            f"qmax is 2^(bits-1) - 1 = {qmax}, so that the grid is symmetric about 0; you divided by {qmax + 1}":
                w.abs().amax(1, keepdim=True) / (qmax + 1),
            "one scale per output row, not one for the whole matrix": w.abs().max().expand(6, 1) / qmax,
            "the scale is max|w| / qmax, not max(w) / qmax: a row's largest weight may be negative":
                w.amax(1, keepdim=True) / qmax,
        }, f"the scales differ from max|w_row| / {qmax} (bits={bits})", atol=1e-7)
        codes = expect_tensor(torch.as_tensor(codes), w.shape, "absmax_quantize's codes").double()
        diagnose(codes, ref_codes.double(), {
            "round to the nearest integer (torch.round); you truncated towards zero": torch.trunc(w / ref_scales),
            "round to the nearest integer (torch.round); you took the floor": torch.floor(w / ref_scales),
            "the codes are not rounded: store integers": w / ref_scales,
        }, f"the codes differ from round(w / scale) (bits={bits})", atol=1e-6)
        if codes.abs().max() > qmax:
            raise CheckFailed(f"codes outside -{qmax}..{qmax}")


@CHECKS.add("zero_point_quantize", "codes in 0..2^bits - 1 with a rounded zero point; dequantises close to w")
def zero_point(ws: Workspace) -> None:
    for bits in (8, 4):
        w = _weights() + 0.02  # not centred on 0
        codes, scales, zeros = _pair(call(ws.get("zero_point_quantize"), w.clone(), bits=bits),
                                     "zero_point_quantize", 3)
        ref_codes, ref_scales, ref_zeros = quantize_weight(w, bits, symmetric=False)
        scales, zeros = _per_row(scales, "zero_point_quantize"), _per_row(zeros, "zero_point_quantize's zero")
        lo, hi = w.amin(1, keepdim=True).clamp(max=0), w.amax(1, keepdim=True).clamp(min=0)
        diagnose(scales, ref_scales, {
            f"there are 2^bits - 1 = {2 ** bits - 1} steps between the lowest and the highest code: divide the range "
            f"by {2 ** bits - 1}": (hi - lo) / 2 ** bits,
            "one scale per output row, not one for the whole matrix": ((w.max() - w.min()) / (2 ** bits - 1))
            .expand(6, 1),
        }, f"the scales differ from (hi - lo) / (2^bits - 1) (bits={bits})", atol=1e-7)
        if not close(zeros, ref_zeros, atol=1e-6):
            if close(zeros, -lo / ref_scales, atol=1e-6):
                raise CheckFailed("round the zero point: it is a code, so an integer, and 0.0 then stays exact")
            raise CheckFailed(f"the zero points differ from round(-lo / scale) (bits={bits})")
        codes = expect_tensor(torch.as_tensor(codes), w.shape, "zero_point_quantize's codes").double()
        if codes.min() < 0 or codes.max() > 2 ** bits - 1:
            raise CheckFailed(f"codes outside 0..{2 ** bits - 1}: clamp them")
        diagnose(codes, ref_codes.double(), {
            "add the zero point to the rounded codes": torch.round(w / ref_scales).clamp(0, 2 ** bits - 1),
        }, f"the codes differ from clamp(round(w / scale) + zero) (bits={bits})", atol=1e-6)
        if not close(dequantize_weight(ref_codes, ref_scales, ref_zeros), (codes - zeros) * scales, atol=1e-6):
            raise CheckFailed("(codes - zero) * scale does not give back w's grid")


@CHECKS.add("group_quantize", "one absmax scale per group of group_size inputs; any group size dividing in")
def groups(ws: Workspace) -> None:
    for bits, g in ((4, 32), (4, 16), (8, 64)):
        w = _weights()
        w[:, 5] *= 30  # one large input column: only its own group should lose precision
        out = expect_tensor(torch.as_tensor(call(ws.get("group_quantize"), w.clone(), bits=bits, group_size=g)),
                            w.shape, f"group_quantize(bits={bits}, group_size={g})")
        ref = dequantize_weight(*quantize_weight(w, bits, group_size=g))
        diagnose(out, ref, {
            "one scale per row instead of one per group of group_size inputs":
                dequantize_weight(*quantize_weight(w, bits)),
            "return the dequantised weight, codes * scale, not the codes":
                quantize_weight(w, bits, group_size=g)[0].float(),
        }, f"differs from llmlab's group-wise absmax (bits={bits}, group_size={g})", atol=1e-6)


@CHECKS.add("prune_2_4", "zeros the 2 smallest |w| of every 4 consecutive inputs, keeps the rest unchanged")
def prune(ws: Workspace) -> None:
    w = torch.randn(8, 16)
    out = expect_tensor(torch.as_tensor(call(ws.get("prune_2_4"), w.clone())), w.shape, "prune_2_4")
    ref = w * n_m_mask(w.abs(), 2, 4)
    diagnose(out, ref, {
        "prune by magnitude |w|, not by value: a large negative weight matters as much as a large positive one":
            w * n_m_mask(w, 2, 4),
        "you kept the 2 smallest of each 4: keep the largest": w * ~n_m_mask(w.abs(), 2, 4),
        "the groups of 4 run along each row's inputs, not down the columns": (w.T * n_m_mask(w.T.abs(), 2, 4)).T,
    }, "differs from keeping the 2 largest |w| of every 4 consecutive inputs")
    if int((out == 0).sum()) != w.numel() // 2:
        raise CheckFailed(f"{int((out == 0).sum())} zeros in {w.numel()} weights; 2:4 sparsity has exactly half")
