"""Paged KV cache: the allocator's counts, prefix keys, and attention through block tables equal to a plain forward."""

import random

import pytest
import torch

from llmlab.infer.paged_kv import NULL_BLOCK, BlockAllocator, PagedKVCache
from llmlab.models import Transformer, get_preset


def test_allocator_refcounts_and_free_list():
    a = BlockAllocator(4)
    got = [a.allocate() for _ in range(3)]
    assert sorted(got) == [1, 2, 3] and NULL_BLOCK not in got
    assert a.allocate() is None and a.n_free == 0 and a.n_used == 3
    a.retain(got[0])
    a.release(got[0])
    assert a.n_free == 0  # still held once
    a.release(got[0])
    assert a.n_free == 1 and a.allocate() == got[0]
    for b in got:
        a.release(b)
    assert a.n_used == 0
    with pytest.raises(RuntimeError, match="released more often"):
        a.release(got[1])
    with pytest.raises(ValueError):
        BlockAllocator(1)


def test_prefix_keys_chain_and_survive_until_reuse():
    a = BlockAllocator(4)
    b1, b2 = a.allocate(), a.allocate()
    c1 = a.register(b1, 0, (5, 6))
    c2 = a.register(b2, c1, (7, 8))
    assert a.lookup(0, (5, 6)) == b1 and a.lookup(c1, (7, 8)) == b2
    assert a.lookup(0, (7, 8)) is None  # the same tokens after another prefix are other contents
    b3 = a.allocate()
    assert a.register(b3, 0, (5, 6)) == c1 and a.lookup(0, (5, 6)) == b1  # duplicate stays private
    a.release(b1)
    assert a.lookup(0, (5, 6)) == b1  # freed, but its contents are still findable
    a.retain(b1)  # a prefix hit on a free block takes it off the free list
    assert a.n_free == 0
    a.release(b1)
    a.release(b3)
    assert a.allocate() == b1  # least recently freed first
    assert a.lookup(0, (5, 6)) is None and a.lookup(c1, (7, 8)) == b2 and c2 == a.content_id[b2]


@pytest.fixture(scope="module", params=["llama-tiny", "gpt2-tiny"])
def model(request):
    torch.manual_seed(0)
    return Transformer(get_preset(request.param, vocab_size=101, seq_len=64, n_layer=2, n_embd=64,
                                  init_std=0.3)).eval().double()


def _scrambled_tables(cache: PagedKVCache, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Allocate every block, shuffle, and hand each sequence a non-contiguous run of them."""
    blocks = [cache.allocator.allocate() for _ in range(cache.allocator.n_blocks - 1)]
    random.Random(seed).shuffle(blocks)
    tables = []
    for L in lengths:
        n = -(-L // cache.block_size)
        tables.append(blocks[:n])
        blocks = blocks[n:]
    return tables


@pytest.mark.parametrize("reference", [False, True])
@torch.inference_mode()
def test_prefill_chunks_and_decoding_in_one_forward_equal_plain_forward(model, reference):
    """Uneven prefill chunks, then a step that mixes decoders and prefill, then all decode, through
    scrambled (non-contiguous) block tables: every token's logits equal a forward without any cache."""
    lengths = [5, 13, 9, 2]
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 101, (L,), generator=g).tolist() for L in lengths]
    cache = PagedKVCache.for_model(model, n_blocks=20, block_size=4)
    tables = _scrambled_tables(cache, lengths)
    plain = [model(torch.tensor([s]))[0] for s in seqs]  # (L, V) each: the reference, no cache at all
    done = [0] * len(lengths)  # tokens of each sequence in the cache
    # (sequence, new tokens) per step; decoders (one token each, prompt otherwise all in) first
    steps = [([], [(0, 3), (1, 3), (2, 3), (3, 1)]),
             ([3], [(0, 1), (1, 9), (2, 5)]),
             ([0, 1, 2], [])]
    for decoders, chunks in steps:
        order = [(b, 1) for b in decoders] + chunks
        view = cache.step([tables[b] for b, _ in order], [done[b] for b, _ in order], [n for _, n in order],
                          n_decode=len(decoders), reference=reference)
        idx = torch.tensor([[t for b, n in order for t in seqs[b][done[b]:done[b] + n]]])  # (1, N)
        logits = model(idx, kv_cache=view, positions=view.positions)[0]  # (N, V)
        expected = torch.cat([plain[b][done[b]:done[b] + n] for b, n in order])
        torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
        for b, n in order:
            done[b] += n
    assert done == lengths


def test_layout_worked_example():
    cache = PagedKVCache(n_layer=1, n_kv_head=1, head_dim=2, n_blocks=7, block_size=2)
    # a decodes position 2 (blocks 3 4); b prefills positions 1..2 (blocks 5 6); c prefills 0 (block 1)
    view = cache.step([[3, 4], [5, 6], [1]], [2, 1, 0], [1, 2, 1], n_decode=1)
    assert view.positions.tolist() == [[2, 1, 2, 0]] and view.pos + 4 == 3  # pos + N: the furthest position + 1
    assert view.write.tolist() == [8, 11, 12, 2]  # block * 2 + offset
    assert view.decode_blocks.tolist() == [3, 4] and view.decode_mask.flatten().int().tolist() == [1, 1, 1, 0]
    assert view.prefill_blocks.tolist() == [5, 6, 1]  # keys b0 b1 b2 (b3) c0 (c1)
    assert view.prefill_mask[0, 0].int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]]
    with pytest.raises(ValueError, match="decode one token"):
        cache.step([[1], [3]], [0, 0], [2, 1], n_decode=1)
    with pytest.raises(ValueError, match="blocks for"):
        cache.step([[1, 2], [3]], [2, 1], [1, 2], n_decode=1)


@torch.inference_mode()
def test_readable_and_fast_gather_agree():
    cache = PagedKVCache(n_layer=2, n_kv_head=3, head_dim=8, n_blocks=12, block_size=4)
    lengths = [3, 10, 7, 6]
    tables = _scrambled_tables(cache, lengths, seed=3)
    cache.k.normal_()
    cache.v.normal_()
    starts, counts = [2, 9, 3, 0], [1, 1, 4, 6]  # two decoders, two prefill chunks
    q = torch.randn(1, 3, sum(counts), 8)  # (1, H, N, D)
    k_new, v_new = torch.randn(1, 3, sum(counts), 8), torch.randn(1, 3, sum(counts), 8)  # (1, Hkv, N, D)
    seen = {}
    for reference in (False, True):
        groups = []

        def attention(q, k, v, mask, bias, groups=groups):
            read = mask.any(-2)[..., None]  # (B, 1, S, 1): keys some query may see; the others are set to 0
            groups.append((k * read, v * read, mask))
            return q

        view = cache.step(tables, starts, counts, n_decode=2, reference=reference)
        torch.testing.assert_close(view.attend(1, q, k_new, v_new, attention), q, rtol=0, atol=0)
        seen[reference] = groups
    for fast, slow in zip(seen[False], seen[True], strict=True):
        for f, s in zip(fast, slow, strict=True):
            torch.testing.assert_close(f, s, rtol=0, atol=0)
    (dec_k, _, dec_mask), (pre_k, _, _) = seen[False]
    assert dec_k.shape == (2, 3, 12, 8) and dec_mask.sum((1, 2, 3)).tolist() == [3, 10]
    assert pre_k.shape == (1, 3, 8 + 8, 8)  # two blocks for positions 0..6, two for 0..5
    for b, (table, L) in enumerate(zip(tables[:2], lengths[:2], strict=True)):  # the newest key sits at L - 1
        k, _ = cache.gather_reference(1, table, L)
        torch.testing.assert_close(dec_k[b, :, :L], k, rtol=0, atol=0)
        torch.testing.assert_close(k[:, -1], k_new[0, :, b], rtol=0, atol=0)


def test_allocated_blocks_are_zeroed():
    cache = PagedKVCache(n_layer=1, n_kv_head=1, head_dim=2, n_blocks=3, block_size=2)
    cache.k.fill_(float("nan"))
    cache.v.fill_(float("nan"))
    block = cache.allocate()
    slots = slice(block * 2, block * 2 + 2)
    assert bool((cache.k[:, :, slots] == 0).all() & (cache.v[:, :, slots] == 0).all())
    cache.allocate()
    assert cache.allocate() is None
