"""Calibration: token windows from text, and what each linear layer's inputs look like on them.

GPTQ, AWQ, SmoothQuant and Wanda all ask the same question of a few hundred calibration
sequences: what reaches each `nn.Linear`? They need running sums, never the activations themselves:

    InputStats of a layer with input x (N tokens, in channels):
        xtx      = sum_t x_t^T x_t            (in, in)   -> hessian = 2 X^T X / N   (GPTQ's H, AWQ's loss)
        absmax   = max_t |x_t|                (in,)      (SmoothQuant)
        abs_sum  = sum_t |x_t|                (in,)      -> mean_abs                (AWQ's activation scale)
        sq_sum   = sum_t x_t^2                (in,)      -> l2 = ||X_j||_2          (Wanda's score)

Layers that receive the very same input tensor (q/k/v after the attention norm, gate/up after the MLP
norm) share one accumulator, so X^T X is computed once per input, not once per layer.

Two ways to run the model over the batches:
- whole model (`collect_model_stats`): one forward per batch with hooks on every linear; the stats
  describe the float model;
- block by block (`for_each_block`): the inputs of block 0 are captured once, then each block is
  run on them, handed to the caller (who may quantise or prune it), and run again to produce the
  next block's inputs. Later blocks thus see what earlier, already compressed, blocks produce, as
  GPTQ and Wanda do. Memory: one (B, T, C) tensor per batch for the current block's inputs.

Not here: the algorithms themselves (gptq.py, awq.py, prune.py).

    batches = calibration_batches(tokenizer, n=128, seq_len=512)   # 16 tensors of (8, 512)
    stats = collect_model_stats(model, batches, hessian=True)      # {"blocks.0.attn.q_proj": InputStats}
"""

import os
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from llmlab.common.errors import UserError
from llmlab.data.sources import Document, default_corpus, is_validation, read_documents
from llmlab.models.swap import find_modules

Source = str | os.PathLike | Sequence[str] | Sequence[Document] | None
BlockInput = tuple[torch.Tensor, tuple | None, torch.Tensor | None]  # (x (B, T, C), rope (cos, sin), mask)


def _documents(source: Source) -> list[Document]:
    if source is None:
        return default_corpus()
    if isinstance(source, (str, os.PathLike)):
        return read_documents([str(source)])
    items = list(source)
    if items and all(isinstance(d, tuple) and len(d) == 2 for d in items):
        return items
    return read_documents([str(p) for p in items])


def calibration_batches(tokenizer, source: Source = None, n: int = 128, seq_len: int = 512, seed: int = 0,
                        batch_size: int = 8, val_fraction: float = 0.05) -> list[torch.Tensor]:
    """n windows of seq_len token ids, cut from shuffled documents -> a list of (batch_size, seq_len) tensors.

    source: None (Python's stdlib, `default_corpus()`), a file or folder (.txt/.py/.jsonl/.parquet as
    `llmlab.data.sources` reads them), a list of those, or a list of (name, text) documents.
    Documents are shuffled with `seed`, tokenised one at a time (joined by EOS) until n * seq_len tokens
    are there, and the stream is cut into n consecutive windows. Documents of the data split's validation
    set (`val_fraction`, the same stable hash training uses) are left out, so perplexity on them stays
    held out; a corpus that is all validation (one small file) is used whole.
    """
    for name, value in (("n", n), ("seq_len", seq_len), ("batch_size", batch_size)):
        if value < 1:
            raise UserError(f"calibration: {name} must be at least 1, got {value}")
    docs = _documents(source)
    docs = [d for d in docs if not is_validation(d[0], val_fraction)] or docs
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    sep = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    need, stream = n * seq_len, []
    for i in order:
        stream += tokenizer.encode(docs[i][1]) + sep
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise UserError(f"calibration: the text has {len(stream):,} tokens but n={n} x seq_len={seq_len} needs "
                        f"{need:,}; lower n or seq_len, or give more text")
    ids = torch.tensor(stream[:need], dtype=torch.long).view(n, seq_len)  # (n, seq_len)
    return list(ids.split(batch_size))


def calibration_info(batches: Sequence[torch.Tensor]) -> dict:
    """What a quantisation record says about its calibration: {"sequences": n, "seq_len": T}."""
    return {"sequences": sum(int(b.shape[0]) for b in batches), "seq_len": int(batches[0].shape[1])}


class InputStats:
    """Running sums over every token a linear layer received (see the module docstring)."""

    def __init__(self, dim: int, hessian: bool, device: torch.device):
        self.n = 0
        self.xtx = torch.zeros(dim, dim, dtype=torch.float64, device=device) if hessian else None
        self.absmax = torch.zeros(dim, device=device)
        self.abs_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sq_sum = torch.zeros(dim, dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()  # (N, in)
        self.n += x.shape[0]
        if self.xtx is not None:
            self.xtx += (x.T @ x).double()  # a float32 matmul per batch, summed in float64
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.abs_sum += x.abs().sum(0).double()
        self.sq_sum += x.pow(2).sum(0).double()

    @property
    def hessian(self) -> torch.Tensor:
        """H = 2 X^T X / N (in, in) float32: the curvature of ||X W^T - X Q^T||^2 / N in each row of W."""
        if self.xtx is None:
            raise ValueError("these statistics were collected with hessian=False")
        return (2 * self.xtx / max(self.n, 1)).float()

    @property
    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(self.n, 1)).float()

    @property
    def l2(self) -> torch.Tensor:
        """||X_j||_2 over all tokens, per input channel."""
        return self.sq_sum.sqrt().float()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early, once the inputs wanted have been seen."""


class InputCollector:
    """Forward pre-hooks that feed each named linear's input into its `InputStats`, as a context manager.

    `stats[name]` after the run; `groups`: the names in the order they first ran, those that got the same
    input tensor together ([["attn.q_proj", "attn.k_proj", "attn.v_proj"], ["attn.o_proj"], ...]).
    `stop_after`: raise `_StopForward` once that layer's input is recorded (the rest of the pass is waste).
    """

    def __init__(self, root: nn.Module, names: Sequence[str], hessian: bool = True, stop_after: str | None = None):
        self.root, self.names, self.hessian, self.stop_after = root, list(names), hessian, stop_after
        self.stats: dict[str, InputStats] = {}
        self.groups: list[list[str]] = []
        self._seen: list[tuple[torch.Tensor, InputStats, list[str]]] = []  # this pass's inputs (strong refs)
        self._handles: list = []

    def __enter__(self) -> "InputCollector":
        self._handles.append(self.root.register_forward_pre_hook(lambda mod, args: self._seen.clear()))
        for name in self.names:
            self._handles.append(self.root.get_submodule(name).register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0]
            for t, st, group in self._seen:
                if t is x:  # same tensor as a layer before it in this pass: its sums already hold x
                    if name not in self.stats:
                        self.stats[name] = st
                        group.append(name)
                    break
            else:
                if name not in self.stats:
                    self.stats[name] = InputStats(x.shape[-1], self.hessian, x.device)
                    self.groups.append([name])
                st = self.stats[name]
                st.add(x)
                self._seen.append((x, st, next(g for g in self.groups if name in g)))
            if name == self.stop_after:
                raise _StopForward
        return hook


def linear_names(module: nn.Module, skip: Sequence[str] = ("lm_head",)) -> list[str]:
    return find_modules(module, (nn.Linear,), skip=skip)


@torch.no_grad()
def collect_model_stats(model: nn.Module, batches: Sequence[torch.Tensor], names: Sequence[str] | None = None,
                        hessian: bool = False, progress: bool = False) -> dict[str, InputStats]:
    """Input statistics of every named linear (default: all but lm_head) over whole-model forwards of `batches`.

    Memory: the sums only; with hessian=True an (in, in) float64 matrix per distinct input.
    """
    device = next(model.parameters()).device
    names = linear_names(model) if names is None else list(names)
    was_training = model.training
    model.eval()
    try:
        with InputCollector(model, names, hessian) as col:
            for idx in tqdm(batches, desc="calibration", unit="batch", disable=not progress):
                model(idx.to(device), last_only=True)
    finally:
        model.train(was_training)
    return col.stats


@torch.no_grad()
def capture_block_inputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> list[BlockInput]:
    """What block 0 receives for each batch: (x (B, T, C), rope tables, mask). Stops each forward there."""
    if not hasattr(model, "blocks") or len(model.blocks) == 0:
        raise ValueError("block-by-block calibration needs a model with `blocks` (llmlab's Transformer)")
    device = next(model.parameters()).device
    captured: list[BlockInput] = []

    def hook(module, args):
        x, rope, mask = args[:3]
        captured.append((x.detach(), rope, mask))
        raise _StopForward

    handle = model.blocks[0].register_forward_pre_hook(hook)
    try:
        for idx in batches:
            try:
                model(idx.to(device))
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_block(block: nn.Module, layer: int, inputs: Sequence[BlockInput]) -> None:
    """Run `block` over every captured input for the hooks' sake; a pass cut short by a hook is fine."""
    for x, rope, mask in inputs:
        try:
            block(x, rope, mask, None, layer)
        except _StopForward:
            pass


@torch.no_grad()
def collect_block_stats(block: nn.Module, layer: int, inputs: Sequence[BlockInput], names: Sequence[str],
                        hessian: bool = True) -> InputCollector:
    """Stats of the named linears of one block over its captured inputs, stopping after the last of them."""
    order = input_groups(block, layer, inputs, names)
    last = [n for g in order for n in g if n in names][-1]
    with InputCollector(block, names, hessian, stop_after=last) as col:
        run_block(block, layer, inputs)
    return col


@torch.no_grad()
def input_groups(block: nn.Module, layer: int, inputs: Sequence[BlockInput],
                 names: Sequence[str] | None = None) -> list[list[str]]:
    """The block's linears in the order they run, grouped by shared input, found on a 4-token slice.

    Llama block -> [["attn.q_proj", "attn.k_proj", "attn.v_proj"], ["attn.o_proj"],
                    ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    """
    names = linear_names(block, skip=()) if names is None else list(names)
    x, rope, mask = inputs[0]
    T = min(4, x.shape[1])
    small_rope = None if rope is None else tuple(r[:1, ..., :T, :] for r in rope)
    small_mask = None if mask is None else mask[:1, ..., :T, :T]
    with InputCollector(block, names, hessian=False) as col:
        run_block(block, layer, [(x[:1, :T], small_rope, small_mask)])
    return col.groups


def for_each_block(model: nn.Module, batches: Sequence[torch.Tensor], progress: bool = False,
                   desc: str = "blocks") -> Iterator[tuple[int, nn.Module, list[BlockInput]]]:
    """Yield (layer, block, its inputs) block by block; each block's outputs, computed after the caller has
    changed it (quantised, pruned), become the next block's inputs.

        for i, block, inputs in for_each_block(model, batches):
            col = collect_block_stats(block, i, inputs, names)   # then compress the block in place
    """
    was_training = model.training
    model.eval()
    try:
        inputs = capture_block_inputs(model, batches)
        n = len(model.blocks)
        for i, block in enumerate(tqdm(model.blocks, desc=desc, unit="block", disable=not progress)):
            yield i, block, inputs
            if i + 1 < n:
                with torch.no_grad():
                    inputs = [(block(x, rope, mask, None, i), rope, mask) for x, rope, mask in inputs]
    finally:
        model.train(was_training)
