"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"): round one column at a time and push each rounding error onto the columns not yet rounded.

For one linear layer, W (out, in), and its inputs X (N, in), GPTQ minimises ||X W^T - X Q^T||^2 row by
row. The loss of a row is quadratic with Hessian H = 2 X^T X / N (calibration.py collects it). Optimal
Brain Quantization: after rounding column j to q_j, the best change to the columns still free is

    W[:, j+1:] -= (w_j - q_j) / [H^-1]_jj * [H^-1]_{j, j+1:}

and the inverse Hessian of the remaining columns is what is left after eliminating j. GPTQ's three tricks:
1. one fixed column order for every row, so H^-1 is shared by all rows;
2. the upper Cholesky factor U of H^-1 holds, in row j, exactly the eliminated inverses needed at step j
   (no re-inversion); numerical stability comes from dampening: H += 0.01 * mean(diag H) * I;
3. lazy batches: apply updates inside a block of 128 columns, and to the rest of W once per block.

Details as in the reference implementation (github.com/IST-DASLab/gptq):
- dead inputs (diag H == 0: a channel that was always zero) get H_jj = 1 and weight 0;
- group-wise scales: each group's scale/zero point comes from the group's columns when the first of them
  is reached, already carrying the error pushed from earlier columns (`static_groups=False`), or from the
  original W before anything moves (`static_groups=True`);
- act_order ("desc_act"): process columns by decreasing diag H (the inputs with the most energy are
  rounded first, while most columns are still free to compensate). It forces static groups, so each
  group is still a run of consecutive ORIGINAL columns: codes, scales and zeros come back in the original
  column order and the layer needs no permutation (`perm`) at run time. The order is only a
  processing order, free at inference, so `gptq_quantize_model` uses it by default (the reference's
  default is off): on SmolLM2-135M INT4 g128 it recovered 50% of RTN's perplexity gap, against 25%
  without it (32 x 512 calibration tokens).

With H = I there is nothing to compensate (H^-1 is diagonal) and GPTQ gives exactly RTN's codes.

A footgun seen on SmolLM2: the first position of every window is an attention sink whose down_proj inputs
are ~50x larger than the median token's, so it dominates X^T X and GPTQ trades other tokens' error for
its own. Leaving that position out of H was worse still (perplexity 14.4 against RTN's 13.1): its outputs
matter. Act-order is what helped (see above).

    codes, scales, zeros, loss = gptq_quantize_weight(w, stats.hessian, bits=4, group_size=128)
    record = gptq_quantize_model(model, batches, bits=4, group_size=128, act_order=True)

Layer by layer: `gptq_quantize_model` walks the blocks (calibration.for_each_block); inside a block it
quantises the linears in the order they run, grouped by shared input (q/k/v, then o, gate/up, down),
each group's H collected with the groups before it already quantised ("true sequential").
"""

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.models.swap import freeze, replace_module
from llmlab.quantize.calibration import (
    calibration_info,
    collect_block_stats,
    for_each_block,
    input_groups,
    linear_names,
)
from llmlab.quantize.layers import Int4Linear, Int8Linear
from llmlab.quantize.model import quantization_record
from llmlab.quantize.rtn import pad_columns, qrange, quantize_weight


def _round_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, qmin: int, qmax: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One column (out,) -> (codes (out,), dequantised (out,)), with the group's scale and zero (out,)."""
    z = 0.0 if zero is None else zero
    codes = torch.clamp(torch.round(w / scale) + z, qmin, qmax)
    return codes, (codes - z) * scale


def _inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1; damping grows x10 (up to 3 times) if H is not positive definite."""
    damp = percdamp * H.diagonal().mean()
    for attempt in range(4):
        Hd = H.clone()
        Hd.diagonal().add_(damp)
        L, info = torch.linalg.cholesky_ex(Hd)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                return U
        damp = damp * 10 if damp > 0 else torch.tensor(1e-6, device=H.device)
        log.info(f"gptq: Hessian not positive definite; dampening x10 (attempt {attempt + 2})")
    raise ValueError("gptq: the Hessian stays singular even when heavily dampened; are the inputs all zero?")


@contextmanager
def _one_thread(device: torch.device):
    """Run the column loop single-threaded on CPU: each step is a few small ops, and one of them (the rank-1
    update) is big enough for PyTorch to split across threads; on a busy machine every split then waits for
    a descheduled thread, and 2 threads ran the loop ~25x slower than 1 (measured on a shared 2-core box)."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _lazy_block(block_size: int, g: int) -> int:
    """A lazy-batch width so that every group start is a block start or has its whole group inside one block."""
    if g <= block_size:
        return g * (block_size // g)
    return max(d for d in range(1, block_size + 1) if g % d == 0)


@torch.no_grad()
def gptq_quantize_weight(w: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int | None = 128,
                         symmetric: bool = True, act_order: bool = False, percdamp: float = 0.01,
                         block_size: int = 128, static_groups: bool = False
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """GPTQ one weight (out, in) given H (in, in) -> (codes int32, scales, zeros or None, loss), in the shared
    convention (original column order; group_size None = one group per row). A group size that does not
    divide `in` zero-pads the columns to whole groups, as `Int4Linear` stores them: codes (out, padded in).

    loss: sum over columns of (w - q)^2 / [U]_jj^2 / 2, the reference's estimate of the added output error.
    """
    out, true_in = w.shape
    if H.shape != (true_in, true_in):
        raise ValueError(f"H is {tuple(H.shape)} but the weight has {true_in} inputs")
    if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
        raise UserError(f"group_size must be a positive integer or None for per-channel (got {group_size!r})")
    g = true_in if group_size is None else group_size
    qmin, qmax = qrange(bits, symmetric)
    W = pad_columns(w.detach().float(), g).clone()  # (out, in), updated as errors are pushed right
    n_in = W.shape[1]  # padded to whole groups: the padding columns are dead inputs, quantised to 0
    H = F.pad(H.float(), (0, n_in - true_in, 0, n_in - true_in))
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    static_groups = static_groups or act_order
    n_groups = n_in // g
    scales = torch.empty(out, n_groups, device=W.device)
    zeros = None if symmetric else torch.empty(out, n_groups, device=W.device)
    if static_groups:
        _, scales, z = quantize_weight(W, bits, group_size=g, symmetric=symmetric)
        zeros = None if symmetric else z
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(n_in, device=W.device)
    W, H = W[:, perm], H[perm][:, perm]  # processing order
    group_of = (perm // g).tolist()  # the (original-order) group of each processed column
    U = _inverse_hessian_factor(H, percdamp)  # (in, in) upper
    codes = torch.empty(out, n_in, device=W.device)  # processing order until the end
    loss = torch.zeros((), dtype=torch.float64, device=W.device)
    B = _lazy_block(block_size, g)
    with _one_thread(W.device):
        for i1 in range(0, n_in, B):
            i2 = min(i1 + B, n_in)
            W1 = W[:, i1:i2].clone()  # (out, B) the lazy batch
            Err1 = torch.zeros_like(W1)
            U1 = U[i1:i2, i1:i2]
            for i in range(i2 - i1):
                col = i1 + i
                group = group_of[col]
                if not static_groups and col % g == 0:  # a group starts: its scale from its columns as they are now
                    cur = W1[:, i:i + g] if g <= B else W[:, i1:i1 + g]
                    _, s, z = quantize_weight(cur, bits, group_size=g, symmetric=symmetric)
                    scales[:, group] = s[:, 0]
                    if zeros is not None:
                        zeros[:, group] = z[:, 0]
                w_col = W1[:, i]
                zero = None if zeros is None else zeros[:, group]
                codes[:, col], q = _round_column(w_col, scales[:, group], zero, qmin, qmax)
                err = (w_col - q).div_(U1[i, i])  # (out,)
                W1[:, i:].addr_(err, U1[i, i:], alpha=-1)  # compensate inside the lazy batch
                Err1[:, i] = err
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # and once for all columns after it
            loss += Err1.double().pow(2).sum() / 2
    codes = codes[:, torch.argsort(perm)].to(torch.int32)  # back to the original column order
    return codes, scales, zeros, float(loss)


def quantized_layer(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int,
                    linear: nn.Linear, input_scale: torch.Tensor | None = None) -> nn.Module:
    """An Int4Linear (bits <= 4) or Int8Linear (bits <= 8) holding the codes (maybe padded), with the linear's
    bias, width and dtype."""
    if not 2 <= bits <= 8:
        raise UserError(f"bits must be between 2 and 8, got {bits}")
    cls = Int4Linear if bits <= 4 else Int8Linear
    bias = None if linear.bias is None else linear.bias.detach()
    return cls.from_codes(codes, scales, zeros, bias=bias, compute_dtype=linear.weight.dtype, input_scale=input_scale,
                          in_features=linear.in_features)


@torch.no_grad()
def gptq_quantize_model(model: nn.Module, batches: Sequence[torch.Tensor], bits: int = 4,
                        group_size: int | None = 128, symmetric: bool = True, act_order: bool = True,
                        percdamp: float = 0.01, true_sequential: bool = True, static_groups: bool = False,
                        skip: Sequence[str] = ("lm_head",), progress: bool = False) -> dict:
    """Quantise every linear in the model's blocks (but `skip`) with GPTQ, in place, block by block.

    Returns the checkpoint's "quantization" record (`model.quantization_record`: method, settings, each
    layer's config for `prepare_quantized`), with the calibration used and, in "per_layer", GPTQ's loss
    estimate of each layer. lm_head (tied to the embedding in small models) stays float.
    """
    freeze(model)
    skip = tuple(skip)
    per_layer: dict[str, dict] = {}
    for i, block, inputs in for_each_block(model, batches, progress, desc="gptq"):
        names = [n for n in linear_names(block, skip=()) if not f"blocks.{i}.{n}".endswith(skip)]
        groups = input_groups(block, i, inputs, names) if true_sequential else [names]
        for group in groups:
            stats = collect_block_stats(block, i, inputs, group, hessian=True).stats
            for name in group:
                linear = block.get_submodule(name)
                codes, scales, zeros, loss = gptq_quantize_weight(
                    linear.weight, stats[name].hessian, bits, group_size, symmetric, act_order, percdamp,
                    static_groups=static_groups)
                replace_module(block, name, quantized_layer(codes, scales, zeros, bits, linear))
                per_layer[f"blocks.{i}.{name}"] = {"loss": loss}
    scheme = "channel" if group_size is None else "group"
    return quantization_record(
        model, "gptq", bits=bits, group_size=group_size, symmetric=symmetric, scheme=scheme,
        skip=list(skip), act_order=act_order, static_groups=static_groups or act_order, percdamp=percdamp,
        true_sequential=true_sequential, calibration=calibration_info(batches), per_layer=per_layer)
