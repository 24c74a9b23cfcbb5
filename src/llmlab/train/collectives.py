"""Collectives with every byte counted: torch.distributed's own, and ring versions written out by hand.

`Comm` is what the sharded layers (`train/sharded.py`) and DiLoCo (`train/diloco.py`) talk through. Each call
is logged as a `CommRecord`: the operation, the bytes of the whole tensor it moves (n), the bytes this rank
sent, and what the ring formula says it sends. Two implementations behind one interface:

- `impl="torch"`: `dist.all_reduce`, `all_gather_single`, `reduce_scatter_single`. The backend's algorithm
  is hidden (gloo and NCCL pick ring, tree or halving-doubling by size), so "sent" is the ring formula's figure.
- `impl="ring"`: the ring algorithms over point-to-point `isend`/`irecv`, so "sent" is measured. With
  p ranks and a tensor of n bytes cut into p chunks (formulas per rank; Patarasuk & Yuan 2009 prove that
  no all-reduce sends less than the first):

      all-reduce      2 (p-1)/p * n   a reduce-scatter, then an all-gather of the reduced chunks
      reduce-scatter    (p-1)/p * n   p-1 steps: pass one chunk right, add the one from the left
      all-gather        (p-1)/p * n   p-1 steps: pass one chunk right (n: bytes of the gathered output)

  The ring all-reduce can also send int8 (`compress="int8-tensor"`: one absmax scale per chunk sent, or
  `"int8-row"`: one per row; see `quantize_int8`). Each hop of the reduce-scatter sends a quantised partial
  sum, which the receiver dequantises and adds to its own float32 chunk; the all-gather sends each reduced
  chunk quantised once, and its owner keeps the dequantised copy too, so every rank ends with identical
  values. About a quarter of the float32 bytes (plus 4 bytes per scale), at an error of at most half a
  quantisation step per hop.

What it does not do: overlap communication with compute, or handle more than one process group at a time.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist

FORMULAS = {  # bytes one rank sends for a collective over n bytes on p ranks, ring algorithms
    "all_reduce": lambda n, p: 2 * (p - 1) / p * n,
    "all_gather": lambda n, p: (p - 1) / p * n,
    "reduce_scatter": lambda n, p: (p - 1) / p * n,
}
IMPLS = ("torch", "ring")
COMPRESSIONS = ("none", "int8-tensor", "int8-row")


@dataclass
class CommRecord:
    op: str
    shape: tuple[int, ...]
    nbytes: int  # the whole tensor reduced or gathered, at its own dtype
    sent: int  # bytes this rank sent (measured for the ring, the formula's figure for torch's)
    formula: float  # what the ring formula says this rank sends, at the uncompressed dtype
    compress: str = "none"


def quantize_int8(x: torch.Tensor, per: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax int8: (q, scale) with x ~ q * scale and |x - q * scale| <= scale / 2 elementwise.

    per="tensor": one scale; per="row": one per row (the last dimension is a row; 1-D tensors are one row).
    A zero row gets scale 1, so it stays zero rather than dividing by zero.
    Example: [0.5, -1.0, 0.25] -> q = [64, -127, 32], scale = 1/127.
    """
    if per not in ("tensor", "row"):
        raise ValueError(f"per must be 'tensor' or 'row', got {per!r}")
    x = x.float()
    per_row = per == "row" and x.dim() >= 2
    if x.numel() == 0:  # an empty chunk of a ring (fewer rows than ranks)
        return x.to(torch.int8), torch.ones((*x.shape[:-1], 1) if per_row else [1] * x.dim())
    amax = x.abs().amax(dim=-1, keepdim=True) if per_row else x.abs().amax().reshape([1] * x.dim())  # (..., 1)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.round(x / scale).clamp_(-127, 127).to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Comm:
    """Sum-collectives over the default process group, each call logged in `records`.

    `all_reduce(x)`, `all_gather(x, dim)` and `reduce_scatter(x, dim)` return new tensors and leave `x`
    alone; a world of one rank returns copies and logs nothing sent, so single-process code runs unchanged.
    """

    def __init__(self, impl: str = "torch"):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.records: list[CommRecord] = []

    def bytes_sent(self, op: str | None = None) -> int:
        return sum(r.sent for r in self.records if op is None or r.op == op)

    def _log(self, op: str, x: torch.Tensor, n: int, sent: int | None = None, compress: str = "none") -> None:
        formula = FORMULAS[op](n, self.world)
        self.records.append(CommRecord(op, tuple(x.shape), n, round(formula) if sent is None else sent, formula,
                                       compress))

    # --- the three collectives --------------------------------------------------------------------------

    def all_reduce(self, x: torch.Tensor, compress: str = "none") -> torch.Tensor:
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {COMPRESSIONS}, got {compress!r}")
        if compress != "none" and self.impl != "ring":
            raise ValueError("int8 compression needs impl='ring' (torch's all_reduce would overflow int8 sums)")
        if self.world == 1:
            return x.clone()
        if self.impl == "torch":
            out = x.clone()
            dist.all_reduce(out)
            self._log("all_reduce", x, _nbytes(x))
            return out
        chunks = list(x.detach().clone().tensor_split(self.world, dim=0))  # contiguous: split along dim 0
        sent = self._ring_reduce_scatter(chunks, compress)
        sent += self._ring_all_gather(chunks, compress)
        self._log("all_reduce", x, _nbytes(x), sent, compress)
        return torch.cat(chunks, dim=0)

    def all_gather(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Every rank's `x`, concatenated along `dim` in rank order."""
        if self.world == 1:
            return x.clone()
        x0 = x.detach().movedim(dim, 0).contiguous()  # rank chunks are then contiguous
        if self.impl == "torch":
            out = torch.empty((self.world * x0.shape[0], *x0.shape[1:]), dtype=x.dtype)
            dist.all_gather_single(out, x0)
            self._log("all_gather", out, _nbytes(out))
        else:
            chunks = [x0.clone() if r == self.rank else torch.empty_like(x0) for r in range(self.world)]
            sent = self._ring_all_gather(chunks, "none")
            out = torch.cat(chunks, dim=0)
            self._log("all_gather", out, _nbytes(out), sent)
        return out.movedim(0, dim)

    def reduce_scatter(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's slice (along `dim`, which the world size must divide) of the sum of every rank's `x`."""
        if x.shape[dim] % self.world:
            raise ValueError(f"reduce_scatter: dimension {dim} of size {x.shape[dim]} does not split into "
                             f"{self.world} equal parts")
        if self.world == 1:
            return x.clone()
        x0 = x.detach().movedim(dim, 0).contiguous()
        if self.impl == "torch":
            out = torch.empty((x0.shape[0] // self.world, *x0.shape[1:]), dtype=x.dtype)
            dist.reduce_scatter_single(out, x0)
            self._log("reduce_scatter", x, _nbytes(x))
        else:
            chunks = list(x0.clone().tensor_split(self.world, dim=0))
            sent = self._ring_reduce_scatter(chunks, "none")
            out = chunks[self.rank]
            self._log("reduce_scatter", x, _nbytes(x), sent)
        return out.movedim(0, dim)

    # --- the ring, by hand ------------------------------------------------------------------------------

    def _exchange(self, payload: list[torch.Tensor], received: list[torch.Tensor]) -> list[torch.Tensor]:
        """Send `payload` to the right neighbour while receiving into the buffers `received` from the left."""
        right, left = (self.rank + 1) % self.world, (self.rank - 1) % self.world
        works = [dist.isend(t.contiguous(), right) for t in payload if t.numel()]
        works += [dist.irecv(t, left) for t in received if t.numel()]
        for w in works:
            w.wait()
        return received

    def _pack(self, chunk: torch.Tensor, compress: str) -> list[torch.Tensor]:
        if compress == "none":
            return [chunk]
        return list(quantize_int8(chunk, "row" if compress == "int8-row" else "tensor"))

    def _like(self, chunk: torch.Tensor, compress: str) -> list[torch.Tensor]:
        """Empty buffers shaped like what `_pack(chunk)` sends: where to receive a neighbour's chunk."""
        if compress == "none":
            return [torch.empty_like(chunk)]
        per_row = compress == "int8-row" and chunk.dim() >= 2
        scale_shape = (*chunk.shape[:-1], 1) if per_row else [1] * chunk.dim()
        return [torch.empty_like(chunk, dtype=torch.int8), torch.empty(scale_shape)]

    def _unpack(self, parts: list[torch.Tensor], compress: str) -> torch.Tensor:
        return parts[0] if compress == "none" else dequantize_int8(*parts)

    def _ring_reduce_scatter(self, chunks: list[torch.Tensor], compress: str) -> int:
        """In place: afterwards chunks[rank] holds the sum over ranks of that chunk. Returns bytes sent.

        At step s, rank r sends chunk (r - s - 1) and adds the chunk (r - s - 2) arriving from rank r - 1;
        after p - 1 steps the chunk it last received, (r - p) = r, has every rank's contribution.
        """
        p, r, sent = self.world, self.rank, 0
        for s in range(p - 1):
            out_i, in_i = (r - s - 1) % p, (r - s - 2) % p
            payload = self._pack(chunks[out_i], compress)
            received = self._exchange(payload, self._like(chunks[in_i], compress))
            sent += sum(_nbytes(t) for t in payload if t.numel())
            chunks[in_i] = chunks[in_i] + self._unpack(received, compress).to(chunks[in_i].dtype)
        return sent

    def _ring_all_gather(self, chunks: list[torch.Tensor], compress: str) -> int:
        """In place: rank r's chunks[r] goes round the ring until every rank holds every chunk. Bytes sent.

        Compressed, each chunk is quantised once by its owner and passed on as the same bytes, and the owner
        keeps the dequantised values as well, so every rank ends with the same tensor.
        """
        p, r, sent = self.world, self.rank, 0
        packed = {r: self._pack(chunks[r], compress)}
        if compress != "none":
            chunks[r] = self._unpack(packed[r], compress).to(chunks[r].dtype)
        for s in range(p - 1):
            out_i, in_i = (r - s) % p, (r - s - 1) % p
            packed[in_i] = self._exchange(packed[out_i], self._like(chunks[in_i], compress))
            sent += sum(_nbytes(t) for t in packed[out_i] if t.numel())
            chunks[in_i] = self._unpack(packed[in_i], compress).to(chunks[in_i].dtype)
        return sent
