"""Lab: sharding, the reference solution: the ring collectives and Megatron-LM's two linear layers, simulated
over a list of devices in one process.

llmlab's own versions (printed after this file) run one process per rank over torch.distributed: `Comm`'s
ring reduce-scatter and all-gather over isend/irecv, each rank stepping the same loop, and
`ColumnParallelLinear` / `RowParallelLinear` with the collectives inside autograd functions. A list of shards
in one process cannot call them, so this file is the same algorithms with the p ranks' loops written as one:
at each ring step, every device r does what rank r would, in order. Sends never collide within a step (device
r sends one chunk and adds into another), so updating in place is safe.
"""

import torch
import torch.nn.functional as F

from llmlab.train.collectives import Comm
from llmlab.train.sharded import ColumnParallelLinear, RowParallelLinear


def reduce_scatter(xs: list[torch.Tensor], send, dim: int = 0) -> list[torch.Tensor]:
    p = len(xs)
    chunks = [list(x.chunk(p, dim=dim)) for x in xs]  # chunks[r][i]: device r's chunk i
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s - 1) % p, (r + 1) % p
            chunks[right][i] = chunks[right][i] + send(r, right, chunks[r][i])
    return [chunks[r][r].clone() for r in range(p)]


def all_gather(xs: list[torch.Tensor], send, dim: int = 0) -> list[torch.Tensor]:
    p = len(xs)
    pieces = [{r: x} for r, x in enumerate(xs)]  # pieces[r]: what device r holds, by owner
    for s in range(p - 1):
        for r in range(p):
            i, right = (r - s) % p, (r + 1) % p
            pieces[right][i] = send(r, right, pieces[r][i])
    return [torch.cat([pieces[r][i] for i in range(p)], dim=dim) for r in range(p)]


def all_reduce(xs: list[torch.Tensor], send) -> list[torch.Tensor]:
    return all_gather(reduce_scatter(xs, send), send)


def column_parallel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: int, send,
                    gather: bool = True) -> list[torch.Tensor]:
    weights = weight.chunk(p, dim=0)  # (out / p, in) each
    biases = bias.chunk(p) if bias is not None else [None] * p
    ys = [F.linear(x, w, b) for w, b in zip(weights, biases, strict=True)]  # (N, out / p) on device r
    return all_gather(ys, send, dim=-1) if gather else ys


def row_parallel(xs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None, send
                 ) -> list[torch.Tensor]:
    weights = weight.chunk(len(xs), dim=1)  # (out, in / p) each
    ys = all_reduce([F.linear(x, w) for x, w in zip(xs, weights, strict=True)], send)  # (N, out) everywhere
    return [y + bias for y in ys] if bias is not None else ys


LLMLAB_CODE = [Comm._ring_reduce_scatter, Comm._ring_all_gather, Comm.all_reduce, ColumnParallelLinear,
               RowParallelLinear]  # printed by `llmlab labs solution sharding`
