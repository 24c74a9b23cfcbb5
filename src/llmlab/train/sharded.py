"""Tensor-parallel linear layers written out: the collectives in Megatron-LM's MLP, forward and backward.

A linear layer y = x W^T (W: out x in) can be split over p ranks two ways (Shoeybi et al. 2019, Megatron-LM):

- **column-parallel**: rank r holds rows r of W's output features, W_r (out/p x in), and computes its slice
  of y from the whole x. Forward needs no communication; backward, each rank has only its part of dL/dx,
  so the parts are summed with an all-reduce (Megatron's "f": identity forward, all-reduce backward).
- **row-parallel**: rank r holds the input columns W_r (out x in/p) and a slice x_r of the input, and
  computes a partial y_r = x_r W_r^T; y is the sum, one all-reduce forward ("g": all-reduce forward,
  identity backward). Its bias is added once, after the sum.

A 2-layer MLP puts a column-parallel layer first and a row-parallel one second: the hidden activation stays
split (the GELU is elementwise), so one all-reduce forward and one backward per MLP. Sequence parallelism
(Korthikanti et al. 2022) splits the tokens outside the MLP over the ranks too, and swaps each all-reduce
for its two halves: an all-gather of the tokens before the first layer (backward: reduce-scatter) and a
reduce-scatter after the second (backward: all-gather). Same bytes, activations p times smaller.

Every collective goes through a `llmlab.train.collectives.Comm`, which logs its bytes. `mlp_equivalence` is
the lab's worker: it checks a sharded MLP against the whole one, outputs and gradients, on every rank.
What this file does not do: attention, or the `torch.distributed.tensor` plans that `--strategy tp` uses.
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmlab.train.collectives import Comm


class _CopyToParallel(torch.autograd.Function):
    """Megatron's f: identity forward; backward, sum each rank's part of the input gradient."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.all_reduce(grad), None


class _ReduceFromParallel(torch.autograd.Function):
    """Megatron's g: sum the partial outputs forward; identity backward (every rank needs all of dL/dy)."""

    @staticmethod
    def forward(ctx, x, comm):
        return comm.all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _GatherTokens(torch.autograd.Function):
    """Sequence parallel in: all-gather the token shards (dim 0) forward, reduce-scatter backward."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.all_gather(x, dim=0)

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.reduce_scatter(grad, dim=0), None


class _ScatterTokens(torch.autograd.Function):
    """Sequence parallel out: reduce-scatter the partial outputs over tokens forward, all-gather backward."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.reduce_scatter(x, dim=0)

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.all_gather(grad, dim=0), None


def _shard(t: torch.Tensor, dim: int, rank: int, world: int) -> torch.Tensor:
    if t.shape[dim] % world:
        raise ValueError(f"a dimension of size {t.shape[dim]} does not split over {world} ranks")
    return t.detach().chunk(world, dim=dim)[rank].clone()


class ColumnParallelLinear(nn.Module):
    """Rank r's slice of `full`'s output features: weight (out/p, in), bias (out/p,)."""

    def __init__(self, full: nn.Linear, comm: Comm, sequence_parallel: bool = False):
        super().__init__()
        self.comm, self.sequence_parallel = comm, sequence_parallel
        self.weight = nn.Parameter(_shard(full.weight, 0, comm.rank, comm.world))
        self.bias = nn.Parameter(_shard(full.bias, 0, comm.rank, comm.world)) if full.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, in) every token -- or (N/p, in), this rank's tokens, with sequence parallelism
        x = _GatherTokens.apply(x, self.comm) if self.sequence_parallel else _CopyToParallel.apply(x, self.comm)
        return F.linear(x, self.weight, self.bias)  # (N, out/p)


class RowParallelLinear(nn.Module):
    """Rank r's slice of `full`'s input features: weight (out, in/p); the bias (out,) is added after the sum."""

    def __init__(self, full: nn.Linear, comm: Comm, sequence_parallel: bool = False):
        super().__init__()
        self.comm, self.sequence_parallel = comm, sequence_parallel
        self.weight = nn.Parameter(_shard(full.weight, 1, comm.rank, comm.world))
        self.bias = nn.Parameter(full.bias.detach().clone()) if full.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        partial = F.linear(x, self.weight)  # (N, in/p) -> (N, out), this rank's share of the sum
        reduce = _ScatterTokens if self.sequence_parallel else _ReduceFromParallel
        y = reduce.apply(partial, self.comm)  # (N, out), or (N/p, out) with sequence parallelism
        return y + self.bias if self.bias is not None else y


class MLP(nn.Module):
    """The unsharded reference: fc (C -> hidden), GELU, proj (hidden -> C)."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.fc, self.proj = nn.Linear(n_embd, hidden), nn.Linear(hidden, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class ParallelMLP(nn.Module):
    """`mlp` split over the ranks: column-parallel fc, then row-parallel proj, the hidden layer never gathered.

    With `sequence_parallel`, the input and output are this rank's token shard (N/p, C), not all tokens;
    the proj bias then sees only those tokens, so its gradient must be summed over ranks before a step
    (as Megatron does for every parameter outside the sharded matmuls).
    """

    def __init__(self, mlp: MLP, comm: Comm, sequence_parallel: bool = False):
        super().__init__()
        self.fc = ColumnParallelLinear(mlp.fc, comm, sequence_parallel)
        self.proj = RowParallelLinear(mlp.proj, comm, sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))  # hidden: (N, hidden/p) on each rank


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


def mlp_equivalence(rank: int, world: int, n_tokens: int, n_embd: int, hidden: int, sequence_parallel: bool,
                    impl: str = "torch", seed: int = 0) -> dict:
    """On each rank: the sharded MLP's output and gradients against the whole MLP's, and the collectives used.

    Every rank builds the same whole MLP and input from `seed`, runs the reference itself, then the sharded
    forward and backward on loss = sum(y * G) for a fixed random G (so dL/dy = G). Returns the largest
    absolute difference per quantity (for this rank's slice of it), the communication log and the seconds
    of the sharded forward + backward.
    """
    torch.manual_seed(seed)
    mlp = MLP(n_embd, hidden)
    x = torch.randn(n_tokens, n_embd)  # (N, C)
    upstream = torch.randn(n_tokens, n_embd)  # dL/dy, (N, C)

    x_full = x.clone().requires_grad_(True)
    (mlp(x_full) * upstream).sum().backward()
    ref_y = mlp(x).detach()

    comm = Comm(impl)
    par = ParallelMLP(mlp, comm, sequence_parallel)
    tokens = slice(None)
    if sequence_parallel:
        if n_tokens % world:
            raise ValueError(f"n_tokens={n_tokens} does not split over {world} ranks")
        per = n_tokens // world
        tokens = slice(rank * per, (rank + 1) * per)
    x_par = x[tokens].clone().requires_grad_(True)  # (N, C), or (N/p, C) this rank's tokens
    t0 = time.perf_counter()
    y = par(x_par)
    (y * upstream[tokens]).sum().backward()
    seconds = time.perf_counter() - t0

    proj_bias_grad = par.proj.bias.grad
    if sequence_parallel:  # each rank saw only its tokens: the whole gradient is the sum over ranks
        proj_bias_grad = Comm("torch").all_reduce(proj_bias_grad)
    cols = slice(rank * hidden // world, (rank + 1) * hidden // world)
    diffs = {
        "y": _max_diff(y, ref_y[tokens]),
        "dx": _max_diff(x_par.grad, x_full.grad[tokens]),
        "fc.weight": _max_diff(par.fc.weight.grad, mlp.fc.weight.grad[cols]),
        "fc.bias": _max_diff(par.fc.bias.grad, mlp.fc.bias.grad[cols]),
        "proj.weight": _max_diff(par.proj.weight.grad, mlp.proj.weight.grad[:, cols]),
        "proj.bias": _max_diff(proj_bias_grad, mlp.proj.bias.grad),
    }
    return {"rank": rank, "diffs": diffs, "seconds": seconds,
            "records": [vars(r) for r in comm.records]}


def mlp_equivalence_modes(rank: int, world: int, n_tokens: int, n_embd: int, hidden: int, seed: int = 0) -> list:
    """`mlp_equivalence` for tensor and sequence parallelism, each through torch's collectives and the ring."""
    return [{"sequence_parallel": sp, "impl": impl,
             **mlp_equivalence(rank, world, n_tokens, n_embd, hidden, sp, impl, seed)}
            for sp in (False, True) for impl in ("torch", "ring")]


def collective_volume(rank: int, world: int, numel: int, repeats: int = 3) -> list[dict]:
    """Each collective on `numel` float32 values, by torch and by the hand ring: results equal, bytes sent.

    Returns one row per (op, impl): bytes this rank sent, the formula's figure, the largest difference from
    torch's result, and the fastest of `repeats` timings.
    """
    torch.manual_seed(rank)
    x = torch.randn(numel)
    rows, results = [], {}
    for op in ("all_reduce", "all_gather", "reduce_scatter"):
        for impl in ("torch", "ring"):
            comm, best = Comm(impl), float("inf")
            for _ in range(repeats):
                comm.records.clear()
                t0 = time.perf_counter()
                out = getattr(comm, op)(x)
                best = min(best, time.perf_counter() - t0)
            results[op, impl] = out
            rec = comm.records[-1]
            rows.append({"op": op, "impl": impl, "world": world, "nbytes": rec.nbytes, "sent": rec.sent,
                         "formula": rec.formula, "seconds": best,
                         "max_diff_vs_torch": _max_diff(out, results[op, "torch"])})
    return rows
