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

The model reads the pool through a `PagedStep`: one forward over every sequence that moves on this step,
their new tokens side by side in one row (B = 1, N tokens), so the weights are read once per step however
the tokens are split between decoding and prefill (the linear layers do not care which sequence a token is
in). Attention does care, and the model hands it to the cache (`attend`), which runs it in two groups:
- decode: sequences feeding one token each, as a padded batch (B_d, H, 1, D) over their own keys; row b's
  keys are its blocks, left-aligned in S = (most blocks) * block_size columns, and a mask hides the slots
  past its newest token (the rest of its last block, and the null blocks padding shorter tables);
- prefill: chunks of several prompts, packed in one row: all their blocks one after another, each query
  allowed its own sequence's keys up to its own position (a (1, 1, T, S) mask).
Example, block_size 2: a decodes its position 2 (blocks [3, 4]), b prefills positions 1..2 (blocks [5, 6]):
tokens [a2 b1 b2]; the decode group reads blocks 3 4 for a (slot 3 masked), the prefill group blocks 5 6
for b, where b1 sees positions 0..1 and b2 sees 0..2.
Reading whole blocks (`index_select` of block numbers on a (Hkv, n_blocks, block_size, D) view) copies
block_size positions per index; the readable path walks each sequence's block table in Python and must
give the same keys. A masked slot still enters the softmax's sums with weight 0, so it must be finite
(NaN * 0 is NaN): `allocate` zeroes a block when it hands it out.

Not here: scheduling, sampling, swapping blocks to another device (preemption recomputes instead).
"""

from collections import OrderedDict
from collections.abc import Callable

import torch

from llmlab.models.layers import alibi_bias, alibi_slopes

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
    """The pool: k, v each (n_layer, Hkv, n_blocks * block_size, D), plus its allocator.

    alibi_slopes (H,): set for a model with ALiBi positions; each attention group gets its own bias from it.
    """

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 alibi_slopes: torch.Tensor | None = None):
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        shape = (n_layer, n_kv_head, n_blocks * block_size, head_dim)
        # empty, not zeros: untouched pages cost no memory yet; allocate() zeroes each block it hands out
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.allocator = BlockAllocator(n_blocks)
        self._zero(NULL_BLOCK)
        self.alibi_slopes = alibi_slopes

    @classmethod
    def for_model(cls, model: torch.nn.Module, n_blocks: int, block_size: int) -> "PagedKVCache":
        c, w = model.config, model.tok_emb.weight
        slopes = alibi_slopes(c.n_head).to(w.device) if c.pos == "alibi" else None
        return cls(c.n_layer, c.n_kv_head, c.head_dim, n_blocks, block_size, w.dtype, w.device, slopes)

    @staticmethod
    def bytes_per_token(model: torch.nn.Module) -> int:
        c = model.config
        return 2 * c.n_layer * c.n_kv_head * c.head_dim * model.tok_emb.weight.element_size()

    def allocate(self) -> int | None:
        """A fresh block from the allocator with zeroed slots (its unwritten tail is read, masked), or None."""
        block = self.allocator.allocate()
        if block is not None:
            self._zero(block)
        return block

    def _zero(self, block: int) -> None:
        bs = self.block_size
        self.k[:, :, block * bs:(block + 1) * bs].zero_()
        self.v[:, :, block * bs:(block + 1) * bs].zero_()

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

    def step(self, tables: list[list[int]], starts: list[int], counts: list[int], n_decode: int = 0,
             reference: bool = False) -> "PagedStep":
        """The view for one forward: sequence b feeds counts[b] new tokens at positions starts[b] onwards;
        the first n_decode sequences (one token each) form the decode group, the rest the prefill group."""
        return PagedStep(self, tables, starts, counts, n_decode, reference)


Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class PagedStep:
    """One forward's window on the pool: N new tokens of several sequences in one row, attention per group.

    The model runs on idx (1, N) with `positions` (1, N); its attention layers call `attend`. `pos` is only
    there for the model's context check (pos + N <= seq_len): it is set so that the check tests the
    furthest position any sequence reaches. `key_positions` is what the model's own ALiBi bias reads: the
    queries' positions, so that unused bias stays (1, H, N, N) small (`attend` builds the real ones).
    """

    def __init__(self, cache: PagedKVCache, tables: list[list[int]], starts: list[int], counts: list[int],
                 n_decode: int, reference: bool):
        if not 0 <= n_decode <= len(tables) or any(n != 1 for n in counts[:n_decode]):
            raise ValueError(f"the first {n_decode} sequences decode one token each, got counts {counts}")
        if min(counts, default=1) < 1:
            raise ValueError(f"every sequence feeds at least one token, got counts {counts}")
        bs = cache.block_size
        for table, begin, n in zip(tables, starts, counts, strict=True):
            if len(table) * bs < begin + n:
                raise ValueError(f"a block table of {len(table)} holds no blocks for positions up to {begin + n}")
        self.cache, self.tables, self.starts, self.counts = cache, tables, starts, counts
        self.n_decode, self.reference = n_decode, reference
        device, n = cache.k.device, len(tables)
        width = max(-(-(s + c) // bs) for s, c in zip(starts, counts, strict=True))  # most blocks any row reads
        table = torch.tensor([t[:width] + [NULL_BLOCK] * (width - len(t)) for t in tables], device=device)  # (n, W)
        start, count = torch.tensor(starts, device=device), torch.tensor(counts, device=device)  # (n,)
        owner = torch.arange(n, device=device).repeat_interleave(count)  # (N,) each new token's sequence
        first = torch.cumsum(count, 0) - count  # (n,) index of each sequence's first new token
        pos = start[owner] + torch.arange(len(owner), device=device) - first[owner]  # (N,)
        self.positions = pos[None]  # (1, N)
        self.key_positions = self.positions
        self.pos = int(pos.max()) + 1 - len(owner)
        self.write = table[owner, pos // bs] * bs + pos % bs  # (N,) the new tokens' slots
        d = n_decode
        # decode group: row b reads its blocks table[b, :Wd]; key j of a row is at position j
        self.decode_width = -(-(int(start[:d].max()) + 1) // bs) if d else 0
        self.decode_blocks = table[:d, :self.decode_width].flatten()  # (d * Wd,)
        key_pos = torch.arange(self.decode_width * bs, device=device)  # (S_d,)
        self.decode_q_pos, self.decode_k_pos = pos[:d, None], key_pos[None].expand(d, -1)  # (d, 1), (d, S_d)
        self.decode_mask = (key_pos[None] <= pos[:d, None])[:, None, None]  # (d, 1, 1, S_d)
        # prefill group: every chunk's blocks in one row; key (block i of sequence b, slot o) is at i * bs + o
        used = -(-(start[d:] + count[d:]) // bs)  # (n - d,) blocks each prefilling sequence reads
        k_owner = torch.arange(d, n, device=device).repeat_interleave(used)  # (blocks,)
        k_index = torch.arange(len(k_owner), device=device) - (torch.cumsum(used, 0) - used).repeat_interleave(used)
        self.prefill_blocks = table[k_owner, k_index]  # (blocks,)
        k_pos = (k_index[:, None] * bs + torch.arange(bs, device=device)).flatten()  # (S_p,)
        k_owner = k_owner.repeat_interleave(bs)  # (S_p,)
        q_owner, q_pos = owner[d:], pos[d:]  # (T_p,)
        self.prefill_q_pos, self.prefill_k_pos = q_pos[None], k_pos[None]  # (1, T_p), (1, S_p)
        allowed = (q_owner[:, None] == k_owner[None]) & (k_pos[None] <= q_pos[:, None])  # (T_p, S_p)
        self.prefill_mask = allowed[None, None]  # (1, 1, T_p, S_p)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: Attend) -> torch.Tensor:
        """Write this step's k, v (1, Hkv, N, D) into their slots, then attention(q, keys, values, mask, bias)
        over each group's keys; q (1, H, N, D) -> (1, H, N, D)."""
        kc, vc = self.cache.k[layer], self.cache.v[layer]  # (Hkv, slots, D)
        kc.index_copy_(1, self.write, k[0])
        vc.index_copy_(1, self.write, v[0])
        slopes, d, out = self.cache.alibi_slopes, self.n_decode, []
        if d:
            keys, values = self._gather(layer, self.decode_blocks, decode=True)  # (d, Hkv, S_d, D)
            bias = alibi_bias(slopes, self.decode_q_pos, self.decode_k_pos) if slopes is not None else None
            y = attention(q[0, :, :d, None].transpose(0, 1), keys, values, self.decode_mask, bias)  # (d, H, 1, D)
            out.append(y[:, :, 0].transpose(0, 1)[None])  # (1, H, d, D)
        if d < len(self.tables):
            keys, values = self._gather(layer, self.prefill_blocks, decode=False)  # (1, Hkv, S_p, D)
            bias = alibi_bias(slopes, self.prefill_q_pos, self.prefill_k_pos) if slopes is not None else None
            out.append(attention(q[:, :, d:], keys, values, self.prefill_mask, bias))  # (1, H, T_p, D)
        return torch.cat(out, dim=2) if len(out) > 1 else out[0]

    def _gather(self, layer: int, blocks: torch.Tensor, decode: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The group's keys and values: (d, Hkv, S_d, D) for decode, (1, Hkv, S_p, D) for prefill."""
        if self.reference:
            return self._gather_reference(layer, decode)
        bs, rows = self.cache.block_size, self.n_decode if decode else 1
        out = []
        for pool in (self.cache.k[layer], self.cache.v[layer]):
            Hkv, _, D = pool.shape
            picked = pool.view(Hkv, -1, bs, D).index_select(1, blocks)  # (Hkv, blocks, bs, D)
            out.append(picked.view(Hkv, rows, -1, D).transpose(0, 1))  # (rows, Hkv, S, D)
        return out[0], out[1]

    def _gather_reference(self, layer: int, decode: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk each sequence's block table; pad each to whole blocks with zeros (masked), then stack the
        decode rows or put the prefill sequences one after another."""
        bs, d, pad = self.cache.block_size, self.n_decode, torch.nn.functional.pad
        rows = range(d) if decode else range(d, len(self.tables))
        width = self.decode_width * bs if decode else None
        ks, vs = [], []
        for b in rows:
            length = self.starts[b] + self.counts[b]
            k, v = self.cache.gather_reference(layer, self.tables[b], length)  # (Hkv, L, D)
            room = (width or -(-length // bs) * bs) - length
            ks.append(pad(k, (0, 0, 0, room)))
            vs.append(pad(v, (0, 0, 0, room)))
        if decode:
            return torch.stack(ks), torch.stack(vs)  # (d, Hkv, S_d, D)
        return torch.cat(ks, dim=1)[None], torch.cat(vs, dim=1)[None]  # (1, Hkv, S_p, D)

    def advance(self, T: int) -> None:
        """The engine moves each sequence on itself (rows advance by different amounts)."""
