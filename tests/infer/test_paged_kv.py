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
def test_packed_prefill_and_padded_decode_through_block_tables_equal_plain_forward(model, reference):
    lengths = [5, 13, 9, 2]
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 101, (L,), generator=g).tolist() for L in lengths]
    cache = PagedKVCache.for_model(model, n_blocks=20, block_size=4)
    tables = _scrambled_tables(cache, lengths)
    plain = [model(torch.tensor([s]))[0] for s in seqs]  # (L, V) each: the reference, no cache at all
    # prefill in two packed forwards of uneven chunks: the first 3 (or fewer) tokens, then the rest but one
    for lo, hi in ((lambda L: 0, lambda L: min(3, L - 1)), (lambda L: min(3, L - 1), lambda L: L - 1)):
        live = [b for b, L in enumerate(lengths) if hi(L) > lo(L)]
        view = cache.step([tables[b] for b in live], [lo(lengths[b]) for b in live],
                          [hi(lengths[b]) - lo(lengths[b]) for b in live], packed=True, reference=reference)
        idx = torch.tensor([[t for b in live for t in seqs[b][lo(lengths[b]):hi(lengths[b])]]])  # (1, T)
        logits = model(idx, kv_cache=view, positions=view.positions, attn_mask=view.key_mask)[0]  # (T, V)
        expected = torch.cat([plain[b][lo(lengths[b]):hi(lengths[b])] for b in live])
        torch.testing.assert_close(logits, expected, rtol=1e-10, atol=1e-10)
    view = cache.step(tables, [L - 1 for L in lengths], [1] * len(lengths), reference=reference)
    assert view.key_mask is not None and view.key_mask.sum(1).tolist() == lengths
    last = torch.tensor([[s[-1]] for s in seqs])  # (B, 1)
    logits = model(last, kv_cache=view, positions=view.positions, attn_mask=view.key_mask)[:, -1]  # (B, V)
    torch.testing.assert_close(logits, torch.stack([p[-1] for p in plain]), rtol=1e-10, atol=1e-10)


def test_packed_layout_worked_example():
    cache = PagedKVCache(n_layer=1, n_kv_head=1, head_dim=2, n_blocks=5, block_size=2)
    view = cache.step([[1, 2], [3, 4]], [2, 1], [1, 1 + 1], packed=True)  # cached a0 a1 | b0, new a2 | b1 b2
    assert view.positions.tolist() == [[2, 1, 2]] and view.pos == 3
    assert view.read.tolist() == [2, 3, 6, 4, 7, 8]  # a0 a1 b0 a2 b1 b2: block * 2 + offset
    assert view.key_mask[0].int().tolist() == [[1, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 1], [0, 0, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match="same number"):
        cache.step([[1], [3]], [0, 0], [1, 2])
    with pytest.raises(ValueError, match="blocks for"):
        cache.step([[1, 2], [3]], [2, 1], [1, 2], packed=True)


@torch.inference_mode()
def test_readable_and_fast_gather_agree():
    cache = PagedKVCache(n_layer=2, n_kv_head=3, head_dim=8, n_blocks=12, block_size=4)
    lengths = [3, 10, 7]
    tables = _scrambled_tables(cache, lengths, seed=3)
    cache.k.normal_()
    cache.v.normal_()
    k_new, v_new = torch.randn(3, 3, 1, 8), torch.randn(3, 3, 1, 8)  # (B, Hkv, T, D)
    starts = [L - 1 for L in lengths]
    fast = cache.step(tables, starts, [1] * 3).update(1, k_new, v_new)
    slow = cache.step(tables, starts, [1] * 3, reference=True).update(1, k_new, v_new)
    mask = cache.step(tables, starts, [1] * 3).key_mask[:, None, :, None]  # (B, 1, S, 1)
    for f, s in zip(fast, slow, strict=True):
        assert f.shape == (3, 3, 10, 8)
        torch.testing.assert_close(f * mask, s * mask, rtol=0, atol=0)
    for b, (table, L) in enumerate(zip(tables, lengths, strict=True)):  # the newest key sits last, the prompt before it
        k, _ = cache.gather_reference(1, table, L)
        torch.testing.assert_close(fast[0][b, :, 10 - L:], k, rtol=0, atol=0)
        torch.testing.assert_close(k[:, -1], k_new[b, :, 0], rtol=0, atol=0)
