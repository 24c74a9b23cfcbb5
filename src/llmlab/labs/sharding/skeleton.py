"""Lab: sharding. Fill in the bodies below, then run `llmlab labs check sharding` (or the notebook).

p "devices" are simulated in one process: a list of p tensors, entry r being what device r holds. Device r may
compute with its own entries only; anything from another device arrives through `send(src, dst, tensor)`,
which returns a copy on `dst` (gradients flow through it) and counts the bytes `src` sent.
"""

import torch
import torch.nn.functional as F  # noqa: F401  (F.linear)


def reduce_scatter(xs: list[torch.Tensor], send, dim: int = 0) -> list[torch.Tensor]:
    """Device r ends with chunk r of the sum xs[0] + ... + xs[p-1], cut into p equal chunks along `dim`.

    xs: p tensors of one shape whose size along `dim` p divides. The ring: each device cuts its tensor into
    p chunks; for step s = 0 .. p-2, device r sends its running sum of chunk (r - s - 1) % p to device
    (r + 1) % p, which adds it to its own copy of that chunk. After p - 1 steps device r's chunk r holds every
    device's part. Each device sends (p - 1) / p of one tensor's bytes. With p = 1 nothing is sent.
    Returns p new tensors; xs is left as it was.
    """
    raise NotImplementedError("TODO: chunk every tensor, then p - 1 ring steps of send and add")


def all_gather(xs: list[torch.Tensor], send, dim: int = 0) -> list[torch.Tensor]:
    """Every device ends with torch.cat(xs, dim): all the pieces in device order.

    The ring: device r starts with piece r; for step s = 0 .. p-2 device r sends piece (r - s) % p, the one it
    received last (its own at first), to device (r + 1) % p. Each device sends p - 1 pieces: (p - 1) / p of the
    gathered tensor's bytes. Returns p new tensors.
    """
    raise NotImplementedError("TODO: p - 1 ring steps passing one piece right, then concatenate in order")


def all_reduce(xs: list[torch.Tensor], send) -> list[torch.Tensor]:
    """Every device ends with the sum xs[0] + ... + xs[p-1] (p divides the size of dim 0).

    A reduce-scatter, then an all-gather of the reduced chunks: 2 (p - 1) / p of one tensor's bytes per
    device, the least any all-reduce sends. Returns p new tensors.
    """
    raise NotImplementedError("TODO: reduce_scatter, then all_gather")


def column_parallel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: int, send,
                    gather: bool = True) -> list[torch.Tensor]:
    """y = x W^T + b with W's output features split over p devices (Megatron-LM's column-parallel linear).

    x: (N, in), on every device. weight: (out, in), bias: (out,) or None; device r holds rows r of
    weight.chunk(p, dim=0) (and bias.chunk(p)[r]) and computes its slice of the output features, (N, out / p),
    with no communication. gather=True: all-gather the slices so every device has y (N, out); gather=False:
    return each device's own slice. Returns p tensors.
    """
    raise NotImplementedError("TODO: each device's shard of the weight, its output slice, then gather or not")


def row_parallel(xs: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None, send
                 ) -> list[torch.Tensor]:
    """y = x W^T + b with W's input features split over p = len(xs) devices (the row-parallel linear).

    xs[r]: (N, in / p), device r's slice of the input features (what a column-parallel layer before it left
    there); device r holds weight.chunk(p, dim=1)[r], (out, in / p), and computes a partial output (N, out).
    y is the sum of the partials: one all-reduce (so p divides N). The bias belongs to the sum, so it is
    added once. Returns p tensors, y (N, out) on every device.
    """
    raise NotImplementedError("TODO: partial outputs, all_reduce them, then add the bias")
