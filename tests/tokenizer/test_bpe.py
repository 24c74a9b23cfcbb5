"""The BPE building blocks and the two trainers: golden values, and fast == reference."""

from hypothesis import given, settings
from hypothesis import strategies as st

from llmlab.tokenizer import bpe
from llmlab.tokenizer.patterns import GPT2, GPT4
from llmlab.tokenizer.pretokenize import count_chunks


def test_merge_and_stats_golden():
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert bpe.merge([5, 5, 5, 5, 5], (5, 5), 6) == [6, 6, 5]
    assert bpe.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.best_pair({(3, 1): 2, (1, 2): 2, (2, 3): 1}) == (1, 2)


def test_minbpe_wikipedia_example():
    # Wikipedia's BPE example. After "aa" (256), (256, 'a') and ('a', 'b') tie at 2:
    # the smaller pair wins, so 'ab' (257), then (aa)(ab) (258).
    merges = bpe.train_reference({b"aaabdaaabac": 1}, 3)
    assert merges == [(97, 97), (97, 98), (256, 257)]
    assert bpe.train_fast({b"aaabdaaabac": 1}, 3) == merges


def _chunks(text, pattern=GPT4):
    return count_chunks([text], [], pattern, num_workers=1)


def test_fast_equals_reference_on_varied_corpora(text):
    corpora = [text[:20_000], "aaaaaaaaaa bbbbbbbb aaaa abab abab ababab", "🙂🙂🙂 日本語日本語 العربية العربية " * 20,
               " \n\n   \t\t\n" * 50 + "x = 1\n" * 30]
    for t in corpora:
        for pattern in (GPT2, GPT4):
            chunks = _chunks(t, pattern)
            assert bpe.train_fast(chunks, 300) == bpe.train_reference(chunks, 300)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab c\n1é🙂"), max_size=200), st.integers(1, 40))
def test_fast_equals_reference_property(t, n):
    chunks = _chunks(t)
    assert bpe.train_fast(chunks, n) == bpe.train_reference(chunks, n)


def test_training_is_deterministic_regardless_of_chunk_order(text):
    chunks = _chunks(text[:10_000])
    reversed_chunks = dict(reversed(list(chunks.items())))
    assert bpe.train_fast(chunks, 200) == bpe.train_fast(reversed_chunks, 200)


def test_encode_chunk_applies_lowest_rank_first():
    ranks = {(2, 3): (0, 5), (1, 5): (1, 6), (1, 2): (2, 4)}
    assert bpe.encode_chunk([1, 2, 3], ranks) == [6]
    assert bpe.encode_chunk([1, 2, 1, 2], ranks) == [4, 4]
