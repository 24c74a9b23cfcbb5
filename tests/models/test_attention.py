"""The explicit attention path equals the fused one, with and without masks and the KV cache."""

import pytest
import torch

from llmlab.models import KVCache, Transformer, get_preset
from llmlab.models.gpt import count_parameters, flops_per_token
from llmlab.models.layers import explicit_attention


@pytest.fixture(params=["gpt2-tiny", "llama-tiny"])
def model(request):
    torch.manual_seed(0)
    return Transformer(get_preset(request.param, vocab_size=97, seq_len=64)).eval()


def test_explicit_attention_matches_sdpa_kernel():
    q, k, v = (torch.randn(2, 3, 7, 16) for _ in range(3))
    ours, weights = explicit_attention(q, k, v, mask=None)
    torch.testing.assert_close(ours, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 7))
    assert weights[0, 0].triu(1).abs().max() == 0  # nothing attends to the future


def test_both_paths_give_the_same_logits(model):
    idx = torch.randint(0, 97, (3, 30))
    with torch.no_grad():
        fused = model(idx)
        model.set_attention("explicit")
        explicit = model(idx)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_kv_cache_matches_full_forward(model, impl):
    model.set_attention(impl)
    idx = torch.randint(0, 97, (2, 25))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_model(model, batch_size=2)
        pieces = [model(idx[:, :10], kv_cache=cache)] + [model(idx[:, t:t + 1], kv_cache=cache) for t in range(10, 25)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    assert cache.pos == 25


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_left_padding_with_mask_and_positions_matches_unpadded(model, impl):
    model.set_attention(impl)
    seq = torch.randint(0, 97, (1, 12))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), seq], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.bool), torch.ones(1, 12, dtype=torch.bool)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(seq)
        batched = model(padded, positions=positions, attn_mask=mask)
    torch.testing.assert_close(batched[:, 5:], alone, atol=1e-5, rtol=0)
    assert torch.isfinite(batched).all()  # padding rows see themselves, not NaN


def test_too_long_sequence_is_refused(model):
    with pytest.raises(ValueError, match="context window"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_parameter_count_and_flops_match_gpt2_124m():
    config = get_preset("gpt2")
    with torch.device("meta"):  # shapes only, no memory or init time
        model = Transformer(config)
    assert count_parameters(model) == 124_439_808  # the figure transformers reports for gpt2
    n_matmul = 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 50257
    assert flops_per_token(config) == 6 * n_matmul + 12 * 12 * 768 * 1024
