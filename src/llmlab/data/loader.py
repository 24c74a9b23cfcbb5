"""Batches for training and evaluation: windows from memory-mapped shards, and epochs of small datasets.

Pretraining samples random windows (inputs idx, targets shifted by one) from the
shards without reading them into memory. The sampler's state is a plain dict
(numpy's PCG64 state), so a checkpoint stores it as JSON and a resumed run
draws exactly the windows the uninterrupted run would have drawn. On several
processes every one draws the same global batch from the same stream and reads
only its own rows, so N processes train on exactly what one process would.
Fine-tuning
data is small: `EpochBatches` serves it epoch after epoch, reshuffled per epoch,
and a count of batches served is all a resumed run needs.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.common.errors import UserError


def read_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{data_dir}: no manifest.json; prepare the data first with `llmlab data prepare`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: corrupt manifest ({e.msg}); run `llmlab data prepare` again") from None
    if manifest.get("format") != "llmlab-shards":
        raise UserError(f"{path}: not an llmlab shard manifest")
    return manifest


def open_split(data_dir: str | Path, split: str) -> list[np.memmap]:
    manifest = read_manifest(data_dir)
    shards = []
    for entry in manifest[split]["files"]:
        path = Path(data_dir) / entry["file"]
        if not path.is_file():
            raise UserError(f"{path}: shard listed in manifest.json is missing; run `llmlab data prepare` again")
        if entry["tokens"]:
            shards.append(np.memmap(path, dtype=manifest["dtype"], mode="r"))
    return shards


class WindowSampler:
    """Random (idx, targets) windows of seq_len tokens, each from one shard, reproducible by state.

    `batch_size` is the global batch. Process `rank` of `world_size` gets rows rank*b .. (rank+1)*b - 1 of
    it (b = batch_size / world_size) and reads only those from the shards; the stream, and so the state, is
    the same on every process, which is why a run may resume on another number of processes.
    """

    def __init__(self, data_dir: str | Path, split: str, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(f"batch_size {batch_size} does not split into {world_size} equal parts "
                             f"(or rank {rank} is not one of them)")
        per_rank = batch_size // world_size
        self.rows = range(rank * per_rank, (rank + 1) * per_rank)
        self.shards = [s for s in open_split(data_dir, split) if len(s) > seq_len]
        if not self.shards:
            raise UserError(f"{data_dir}: the {split} split has no shard longer than seq_len={seq_len} tokens; "
                            "give more text or lower --seq-len")
        self.batch_size, self.seq_len = batch_size, seq_len
        sizes = np.array([len(s) - seq_len for s in self.shards], dtype=np.float64)
        self.shard_weights = sizes / sizes.sum()  # pick shards by how many windows they hold
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = self.batch_size, self.seq_len
        which = self.rng.choice(len(self.shards), size=B, p=self.shard_weights)
        rows = []
        for i, s in enumerate(which):
            start = int(self.rng.integers(0, len(self.shards[s]) - T))  # drawn for every row: one stream
            if i in self.rows:
                rows.append(np.asarray(self.shards[s][start:start + T + 1], dtype=np.int64))
        batch = torch.from_numpy(np.stack(rows))  # (B / world_size, T+1)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def sequential_windows(data_dir: str | Path, split: str, batch_size: int, seq_len: int,
                       max_tokens: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every token of a split predicted exactly once (but the first of each shard), in order: for evaluation.

    Windows overlap by one token, so targets tile the stream; the last window may be shorter. With
    `max_tokens`, a subset of windows spread evenly over the whole split, so a quick estimate is not
    biased towards whichever documents happen to come first.
    """
    shards = open_split(data_dir, split)
    windows = [(s, start) for s, shard in enumerate(shards) for start in range(0, len(shard) - 1, seq_len)]
    if max_tokens is not None and len(windows) * seq_len > max_tokens:
        keep = np.linspace(0, len(windows) - 1, max(1, max_tokens // seq_len)).round().astype(int)
        windows = [windows[i] for i in sorted(set(keep.tolist()))]
    for i in range(0, len(windows), batch_size):
        group = [torch.from_numpy(np.asarray(shards[s][start:start + seq_len + 1], dtype=np.int64))
                 for s, start in windows[i:i + batch_size]]
        T = max(len(w) for w in group) - 1
        idx = torch.zeros(len(group), T, dtype=torch.long)
        targets = torch.full((len(group), T), IGNORE_INDEX, dtype=torch.long)  # padding has no target
        for j, w in enumerate(group):
            idx[j, :len(w) - 1], targets[j, :len(w) - 1] = w[:-1], w[1:]
        yield idx, targets


class EpochBatches:
    """Endless batches from `make_epoch(epoch)`, a list of batches reshuffled per epoch (by seed + epoch, say).

    `position` counts batches served: a run resumed after `step` optimizer steps of `grad_accum` batches
    sets `position = step * grad_accum` and continues exactly where the original run was.
    """

    def __init__(self, make_epoch: Callable[[int], list], position: int = 0):
        self.make_epoch, self.position = make_epoch, position
        self.epoch, self.batches = 0, make_epoch(0)
        if not self.batches:
            raise UserError("no batches: the dataset is empty")

    def __call__(self):
        epoch, i = divmod(self.position, len(self.batches))
        if epoch != self.epoch:
            self.epoch, self.batches = epoch, self.make_epoch(epoch)
        self.position += 1
        return self.batches[i]
