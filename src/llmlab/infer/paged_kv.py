"""A paged key/value cache (Kwon et al. 2023, "PagedAttention"): fixed-size blocks from one preallocated pool.

A sequence's keys and values do not live in one (max_len,) slab sized for the worst case. They live in
blocks of `block_size` positions, handed out one at a time as the sequence grows, and a block table per
sequence (a list of block numbers) says where position p is: block table[p // block_size], slot
p % block_size. Memory is then spent on tokens that exist, and a finished sequence's blocks go straight
to the next one.

Layout: `k` and `v` are each (n_layer, Hkv, n_blocks * block_size, D); block b owns the slots
b * block_size .. (b + 1) * block_size - 1 of every layer. Heads come first so that gathering any list of
slots (`index_select` on dim 2 of one layer) gives (Hkv, N, D) with each head's keys contiguous, which is
what attention reads. Block 0 is never handed out: the padding of a batch gathers from it and is masked.

Prefix sharing: a *full* block's contents depend only on the tokens up to its end, so two requests whose
prompts start alike (a system prompt) can use the same block. `BlockAllocator` keys every full block by
(id of the content before it, its block_size tokens); a new request walks its prompt block by block and
takes each block it finds with a reference count + 1. Shared blocks are full and never written again, so no
copy-on-write is needed. A freed block keeps its key until it is handed out again, so a system prompt
survives between requests that do not overlap in time (least recently freed blocks are reused first).

The model reads the pool through a `PagedStep`: one forward's view, with `KVCache`'s interface (`pos`,
`update`, `advance`), so `Transformer.forward` runs on it unchanged (models/ needs no change). For decoding,
each row's keys are gathered right-aligned into a padded (B, Hkv, S, D): the newest token of every row sits
at S - 1, where the model's causal mask expects the queries, and `key_mask` (B, S) hides the left padding.
For prefill, chunks of several prompts are packed into one row with a (1, T, S) mask (see `PagedStep`).
Two paths give the same numbers: a readable one that walks each sequence's block table in Python, and the
fast one, a single `index_select` per layer over slot numbers computed with tensor ops (no Python loop per
sequence or layer).

Not here: scheduling, sampling, swapping blocks to another device (preemption recomputes instead).
"""

from collections import OrderedDict

import torch

NULL_BLOCK = 0  # never allocated: padding positions gather its slot 0 and are masked out

PrefixKey = tuple[int, tuple[int, ...]]  # (content id of the prefix before the block, the block's tokens)


class BlockAllocator:
    """Reference-counted blocks with a free list and a table of full blocks by content, for prefix sharing.

    blocks 1..n_blocks-1 are usable. allocate() -> a block with refcount 1; retain(b) -> +1; release(b) -> -1,
    back on the free list at 0. register/lookup map (parent content id, tokens) -> block; content id 0 is
    the empty prefix. Example, block_size 2, prompt [5, 6, 7, 8, 9]: blocks for [5, 6] (parent 0) and
    [7, 8] (parent = id of [5, 6]) can be shared; [9] is partial and private.
    """

    def __init__(self, n_blocks: int):
        if n_blocks < 2:
            raise ValueError(f"kv_blocks must be at least 2 (block 0 is reserved), got {n_blocks}")
        self.n_blocks = n_blocks
        self.refs = [0] * n_blocks
        # ordered: released blocks go to the end, allocate takes the front, so cached prefixes live longest
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(1, n_blocks))
        self.by_key: dict[PrefixKey, int] = {}
        self.key_of: dict[int, PrefixKey] = {}
        self.content_id: dict[int, int] = {}
        self._next_id = 1

    @property
    def n_free(self) -> int:
        return len(self.free)

    @property
    def n_used(self) -> int:
        return self.n_blocks - 1 - len(self.free)

    def allocate(self) -> int | None:
        """A fresh block (refcount 1), or None when none is free. Its old cached contents are forgotten."""
        if not self.free:
            return None
        block, _ = self.free.popitem(last=False)
        self._forget(block)
        self.refs[block] = 1
        return block

    def retain(self, block: int) -> None:
        if self.refs[block] == 0:
            del self.free[block]
        self.refs[block] += 1

    def release(self, block: int) -> None:
        if self.refs[block] <= 0:
            raise RuntimeError(f"block {block} released more often than it was taken")
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self.free[block] = None

    def lookup(self, parent: int, tokens: tuple[int, ...]) -> int | None:
        return self.by_key.get((parent, tokens))

    def register(self, block: int, parent: int, tokens: tuple[int, ...]) -> int:
        """Record a now-full block's contents; return the content id its successors chain from.

        If the same contents are already cached in another block, that block stays the shared one and its id
        is returned (this block stays private).
        """
        key = (parent, tokens)
        existing = self.by_key.get(key)
        if existing is not None:
            return self.content_id[existing]
        self._forget(block)
        self.by_key[key], self.key_of[block] = block, key
        self.content_id[block] = self._next_id
        self._next_id += 1
        return self.content_id[block]

    def _forget(self, block: int) -> None:
        key = self.key_of.pop(block, None)
        if key is not None:
            del self.by_key[key]
            del self.content_id[block]


class PagedKVCache:
    """The pool: k, v each (n_layer, Hkv, n_blocks * block_size, D), plus its allocator."""

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        shape = (n_layer, n_kv_head, n_blocks * block_size, head_dim)
        # empty, not zeros: every slot is written before it is read, and untouched pages cost no memory yet;
        # only the null block is read unwritten, and a masked key must still be finite (NaN * 0 is NaN)
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.k[:, :, :block_size].zero_()
        self.v[:, :, :block_size].zero_()
        self.block_size = block_size
        self.allocator = BlockAllocator(n_blocks)

    @classmethod
    def for_model(cls, model: torch.nn.Module, n_blocks: int, block_size: int) -> "PagedKVCache":
        c, w = model.config, model.tok_emb.weight
        return cls(c.n_layer, c.n_kv_head, c.head_dim, n_blocks, block_size, w.dtype, w.device)

    @staticmethod
    def bytes_per_token(model: torch.nn.Module) -> int:
        c = model.config
        return 2 * c.n_layer * c.n_kv_head * c.head_dim * model.tok_emb.weight.element_size()

    def gather_reference(self, layer: int, table: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Readable path: one sequence's first `length` keys and values, block by block -> each (Hkv, length, D)."""
        bs, ks, vs = self.block_size, [], []
        for i, block in enumerate(table):
            n = min(bs, length - i * bs)
            if n <= 0:
                break
            ks.append(self.k[layer, :, block * bs:block * bs + n])
            vs.append(self.v[layer, :, block * bs:block * bs + n])
        return torch.cat(ks, dim=1), torch.cat(vs, dim=1)

    def step(self, tables: list[list[int]], starts: list[int], counts: list[int], packed: bool = False,
             reference: bool = False) -> "PagedStep":
        """The view for one forward: sequence b feeds counts[b] new tokens at positions starts[b] onwards."""
        return PagedStep(self, tables, starts, counts, packed, reference)


class PagedStep:
    """One forward's window on the pool, with `KVCache`'s interface, so `Transformer.forward` runs on it.

    Give the model `positions` and `attn_mask=key_mask`; `pos` = S - T tells it where the queries start
    among the S keys it gets back from `update`. Two layouts of the keys:
    - padded (decode; every sequence feeds the same T): row b holds its L_b = starts[b] + T keys
      right-aligned in S = max L_b columns, the newest at S - 1; key_mask (B, S) hides the left padding.
    - packed (prefill chunks of different lengths, one forward): a single row holding every sequence's
      cached keys, then all new tokens in order, which are also the queries; key_mask (1, T, S) lets a
      query see only its own sequence's keys, and the model's causal mask orders the new ones.
      Example: cached [a0 a1 | b0], new [a2 | b1 b2] -> keys a0 a1 b0 a2 b1 b2; b2 sees b0, b1, b2.
    """

    def __init__(self, cache: PagedKVCache, tables: list[list[int]], starts: list[int], counts: list[int],
                 packed: bool, reference: bool):
        if not packed and len(set(counts)) > 1:
            raise ValueError(f"a padded step feeds the same number of tokens per sequence, got {counts}")
        for table, begin, n in zip(tables, starts, counts, strict=True):
            if len(table) * cache.block_size < begin + n:
                raise ValueError(f"a block table of {len(table)} holds no blocks for positions up to {begin + n}")
        self.cache, self.tables, self.starts, self.counts = cache, tables, starts, counts
        self.packed, self.reference = packed, reference
        device, n = cache.k.device, len(tables)
        start, count = torch.tensor(starts, device=device), torch.tensor(counts, device=device)  # (n,)
        if packed:  # key j belongs to sequence owner[j], at position pos[j]
            # the keys are 2n runs: run r < n is sequence r's cached keys, run n + r its new ones
            C, T = int(start.sum()), int(count.sum())
            lengths = torch.cat([start, count])  # (2n,)
            run = torch.arange(2 * n, device=device).repeat_interleave(lengths)  # (S,) the run of each key
            first = torch.cumsum(lengths, 0) - lengths  # (2n,) index of each run's first key
            base = torch.cat([torch.zeros_like(start), start])  # (2n,) position of each run's first key
            pos = (torch.arange(C + T, device=device) - first[run] + base[run])[None]  # (1, S)
            owner = (run % n)[None]  # (1, S)
            new_owner = owner[:, C:]  # (1, T)
            self.key_mask = (new_owner[:, :, None] == owner[:, None, :]) if n > 1 else None  # (1, T, S)
        else:
            T = counts[0]
            lengths = start + T  # (n,)
            S = int(lengths.max())
            owner = torch.arange(n, device=device)[:, None].expand(n, S)  # (B, S)
            pos = torch.arange(S, device=device)[None, :] - (S - lengths)[:, None]  # (B, S): < 0 is padding
            self.key_mask = None if bool((pos >= 0).all()) else pos >= 0  # (B, S)
        S = pos.shape[1]
        self.pos, self.T, self.shape = S - T, T, tuple(pos.shape)
        self.positions = pos[:, S - T:]  # (rows, T)
        self.key_positions = pos.clamp(min=0)  # (rows, S): each key's position in its sequence (ALiBi reads it)
        bs, width = cache.block_size, max(len(t) for t in tables)
        table = torch.tensor([t + [NULL_BLOCK] * (width - len(t)) for t in tables], device=device)  # (n, width)
        p = pos.clamp(min=0)
        slots = table[owner, p // bs] * bs + p % bs  # (rows, S)
        self.read = torch.where(pos >= 0, slots, 0).flatten()  # (rows*S,) padding reads the null block
        self.write = slots[:, S - T:].flatten()  # (rows*T,) the new tokens' slots

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (rows, Hkv, T, D) into their blocks; return the keys and values (rows, Hkv, S, D)."""
        B, Hkv, T, D = k.shape
        kc, vc = self.cache.k[layer], self.cache.v[layer]  # (Hkv, slots, D)
        kc.index_copy_(1, self.write, k.transpose(0, 1).reshape(Hkv, B * T, D))
        vc.index_copy_(1, self.write, v.transpose(0, 1).reshape(Hkv, B * T, D))
        if self.reference:
            return self._gather_reference(layer)
        S = self.shape[1]
        keys = kc.index_select(1, self.read).view(Hkv, B, S, D).transpose(0, 1)  # (B, Hkv, S, D)
        values = vc.index_select(1, self.read).view(Hkv, B, S, D).transpose(0, 1)  # (B, Hkv, S, D)
        return keys, values

    def _gather_reference(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk each sequence's block table; then left-pad the rows (padded) or put old before new (packed)."""
        per_seq = [self.cache.gather_reference(layer, table, start + n)  # each (Hkv, L, D)
                   for table, start, n in zip(self.tables, self.starts, self.counts, strict=True)]
        if self.packed:
            def old_then_new(parts: list[torch.Tensor]) -> torch.Tensor:
                cached = [x[:, :start] for x, start in zip(parts, self.starts, strict=True)]
                fresh = [x[:, start:] for x, start in zip(parts, self.starts, strict=True)]
                return torch.cat(cached + fresh, dim=1)[None]  # (1, Hkv, S, D)

            return old_then_new([k for k, _ in per_seq]), old_then_new([v for _, v in per_seq])
        S = self.shape[1]
        pad = torch.nn.functional.pad
        keys = torch.stack([pad(k, (0, 0, S - k.shape[1], 0)) for k, _ in per_seq])  # (B, Hkv, S, D)
        values = torch.stack([pad(v, (0, 0, S - v.shape[1], 0)) for _, v in per_seq])
        return keys, values

    def advance(self, T: int) -> None:
        """The engine moves each sequence on itself (rows advance by different amounts)."""
