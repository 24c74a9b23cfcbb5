"""Pruning: zero the least important weights of each linear layer, in place.

Three ways to say which weights matter, all on W (out, in) of an `nn.Linear`:
- magnitude: score |W_ij|. Per layer (each layer loses the same fraction) or with one global threshold
  (layers whose weights are small overall lose more; Han et al. 2015).
- Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): score |W_ij| * ||X_j||_2,
  the weight times the norm of its input channel over calibration tokens, compared within each output
  row. A small weight on a channel that carries large activations survives.
- N:M semi-structured (2:4 as NVIDIA's sparse tensor cores want): in every group of 4 consecutive
  weights along the input dimension keep the 2 with the largest score (magnitude or Wanda): exactly 50%.

Masks are applied at once (the weights become zeros; no mask is stored): the model keeps its shape,
size and speed. `sparsity_report` counts the zeros.

The speed story: zeros cost as much as any other number in a dense matmul. Only 2:4 has a kernel
in PyTorch (`torch.sparse.to_sparse_semi_structured`, cuSPARSELt/CUTLASS), on CUDA GPUs of compute
capability 8.0+ in float16/bfloat16; on the CPU it raises "Only CUDA tensors are currently supported"
(torch 2.13). `semi_structured_support()` tries it and says what happened; pruning here never
claims a speed-up it has not measured. Not here: structured pruning (whole heads or channels),
SparseGPT's weight update, or fine-tuning after pruning.

    prune_magnitude(model, 0.5)                   # every linear but lm_head at 50%
    prune_wanda(model, batches, 0.5)              # needs calibration batches (calibration.py)
    prune_n_m(model, 2, 4, batches=batches)       # 2:4 by Wanda score; batches=None: by magnitude
    sparsity_report(model)["sparsity"]            # 0.5
"""

from collections.abc import Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from llmlab.common.errors import UserError
from llmlab.models.swap import find_modules, freeze
from llmlab.quantize.calibration import collect_block_stats, for_each_block, linear_names


def _check_sparsity(sparsity: float) -> None:
    if not 0 <= sparsity < 1:
        raise UserError(f"sparsity must be in [0, 1), got {sparsity}")


def unstructured_mask(score: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Keep-mask (bool, same shape) dropping the round(sparsity * n) lowest scores, of the whole matrix or
    of each row (ties broken by position, so the count is exact).

    score=[[4, 1, 3, 2]], sparsity=0.5 -> [[True, False, True, False]]
    """
    _check_sparsity(sparsity)
    flat = score.reshape(score.shape[0], -1) if per_row else score.reshape(1, -1)  # (rows, n)
    k = round(sparsity * flat.shape[1])
    keep = torch.ones_like(flat, dtype=torch.bool)
    if k:
        drop = flat.argsort(dim=1, stable=True)[:, :k]  # (rows, k) lowest scores
        keep.scatter_(1, drop, False)
    return keep.view(score.shape)


def n_m_mask(score: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask with the n largest scores of every m consecutive entries along the last (input) dimension.

    score=[[4, 1, 3, 2, 0, 5, 6, 1]], n=2, m=4 -> [[True, False, True, False, False, True, True, False]]
    """
    if not 0 < n < m:
        raise UserError(f"n:m sparsity needs 0 < n < m, got {n}:{m}")
    out, n_in = score.shape
    if n_in % m:
        raise UserError(f"n:m sparsity: a layer has {n_in} inputs, not a multiple of m={m}")
    groups = score.reshape(out, n_in // m, m)  # (out, in/m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.view(out, n_in)


def wanda_score(weight: torch.Tensor, input_l2: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2: (out, in) from W (out, in) and the per-input-channel norms (in,)."""
    return weight.detach().abs().float() * input_l2.float()[None, :]


@torch.no_grad()
def _apply(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight.mul_(keep.to(linear.weight.dtype))


def _linears(model: nn.Module, skip: Sequence[str]) -> list[tuple[str, nn.Linear]]:
    return [(n, model.get_submodule(n)) for n in find_modules(model, (nn.Linear,), skip=skip)]


@torch.no_grad()
def prune_magnitude(model: nn.Module, sparsity: float, scope: str = "layer", skip: Sequence[str] = ("lm_head",)
                    ) -> dict:
    """Zero the smallest |W| of every linear (but `skip`): per layer, or below one global threshold."""
    _check_sparsity(sparsity)
    freeze(model)
    layers = _linears(model, skip)
    if scope == "layer":
        for _, linear in layers:
            _apply(linear, unstructured_mask(linear.weight.abs(), sparsity))
    elif scope == "global":
        scores = torch.cat([lin.weight.abs().float().reshape(-1) for _, lin in layers])  # all weights at once
        k = round(sparsity * scores.numel())
        if k:
            thr = scores.kthvalue(k).values
            ties_left = k - int((scores < thr).sum())  # drop exactly k: some weights equal to thr go too
            del scores
            for _, linear in layers:
                w = linear.weight.abs().float()
                drop = w < thr
                tie = (w == thr).reshape(-1)
                take = tie.nonzero().squeeze(1)[:ties_left]
                ties_left -= take.numel()
                drop.view(-1)[take] = True
                _apply(linear, ~drop)
    else:
        raise UserError(f"scope {scope!r} is unknown; use 'layer' or 'global'")
    return sparsity_report(model, skip=skip)


@torch.no_grad()
def prune_wanda(model: nn.Module, batches: Sequence[torch.Tensor], sparsity: float = 0.5, n_m: tuple | None = None,
                skip: Sequence[str] = ("lm_head",), progress: bool = False) -> dict:
    """Wanda, block by block: each block's input norms come from the already pruned blocks before it.

    Per output row the round(sparsity * in) lowest |W| * ||X_j|| go; with n_m=(2, 4), 2 of every 4 instead.
    """
    _check_sparsity(sparsity)
    freeze(model)
    for i, block, inputs in for_each_block(model, batches, progress, desc="wanda"):
        names = [n for n in linear_names(block, skip=()) if not f"blocks.{i}.{n}".endswith(tuple(skip))]
        stats = collect_block_stats(block, i, inputs, names, hessian=False).stats
        for name in names:
            linear = block.get_submodule(name)
            score = wanda_score(linear.weight, stats[name].l2)
            _apply(linear, n_m_mask(score, *n_m) if n_m else unstructured_mask(score, sparsity, per_row=True))
    return sparsity_report(model, skip=skip)


@torch.no_grad()
def prune_n_m(model: nn.Module, n: int = 2, m: int = 4, batches: Sequence[torch.Tensor] | None = None,
              skip: Sequence[str] = ("lm_head",), progress: bool = False) -> dict:
    """n:m semi-structured pruning of every linear (but `skip`): by Wanda score when `batches` are given,
    else by magnitude."""
    freeze(model)
    if batches is not None:
        return prune_wanda(model, batches, n_m=(n, m), skip=skip, progress=progress)
    for _, linear in tqdm(_linears(model, skip), desc=f"{n}:{m}", unit="layer", disable=not progress):
        _apply(linear, n_m_mask(linear.weight.abs(), n, m))
    return sparsity_report(model, skip=skip)


def is_n_m_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Has every group of m consecutive inputs at least m - n zeros?"""
    out, n_in = weight.shape
    return n_in % m == 0 and bool(((weight.reshape(out, n_in // m, m) == 0).sum(-1) >= m - n).all())


def sparsity_report(model: nn.Module, skip: Sequence[str] = ()) -> dict:
    """{"layers": {name: fraction of zeros}, "zeros": n, "params": n, "sparsity": zeros / params, "2:4": bool}."""
    layers, zeros, total, all_2_4 = {}, 0, 0, True
    for name, linear in _linears(model, skip):
        w = linear.weight
        z = int((w == 0).sum())
        layers[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
        all_2_4 = all_2_4 and is_n_m_sparse(w)
    return {"layers": layers, "zeros": zeros, "params": total, "sparsity": zeros / max(total, 1),
            "2:4": all_2_4 and bool(layers)}


def semi_structured_support(device: str | torch.device | None = None) -> tuple[bool, str]:
    """Can this PyTorch run 2:4 sparse matmuls on `device` (default: cuda if present, else cpu)? (ok, why)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.float16
    w = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=dtype).repeat(64, 16).to(device)  # (64, 64), 2:4
    try:
        from torch.sparse import to_sparse_semi_structured

        sparse = to_sparse_semi_structured(w)
        x = torch.ones(64, 64, dtype=dtype, device=device)
        ok = torch.allclose(torch.mm(sparse, x).float(), (w @ x).float())
    except Exception as e:  # no kernel for this device, dtype or GPU generation
        return False, f"no 2:4 sparse kernel on {device}: {type(e).__name__}: {str(e).splitlines()[0]}"
    return ok, (f"torch.sparse.to_sparse_semi_structured works on {device}" if ok
                else f"2:4 sparse matmul on {device} gave wrong numbers")
