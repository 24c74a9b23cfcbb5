"""Hand-written backward passes against torch.autograd: each piece alone (autograd differentiating the same
forward), and the whole block against an independent torch.nn.functional forward, over shapes, seeds and dtypes."""

import pytest
import torch

from llmlab.fundamentals import backprop as bp

SHAPES = [  # (B, T, n_embd, n_head, vocab, seq_len)
    (2, 8, 16, 2, 30, 8),
    (3, 12, 32, 4, 50, 16),
    (1, 1, 8, 1, 5, 4),  # a single position: attention sees only itself
    (4, 5, 24, 3, 7, 10),  # tiny vocabulary: tokens repeat, their embedding gradients add up
]


def batch(B, T, V, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_block_gradients_equal_autograd_float32(shape, seed):
    B, T, C, H, V, L = shape
    params = bp.init_params(V, C, L, seed=seed, std=0.3)  # large weights: attention far from uniform
    idx, targets = batch(B, T, V, seed)
    loss_m, manual = bp.forward_backward(params, idx, targets, H)
    loss_a, auto = bp.autograd_grads(params, idx, targets, H)
    assert loss_m == pytest.approx(loss_a, rel=1e-5)
    assert set(manual) == set(params)
    for name in params:
        assert manual[name].shape == params[name].shape
        torch.testing.assert_close(manual[name], auto[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("shape", SHAPES[:2])
def test_block_gradients_equal_autograd_float64(shape):
    B, T, C, H, V, L = shape
    params = bp.init_params(V, C, L, seed=5, std=0.3, dtype=torch.float64)
    check = bp.compare_with_autograd(params, *batch(B, T, V, 5), H)
    assert check.worst < 1e-12  # differences are float rounding only
    assert min(check.max_abs_grad.values()) > 1e-4  # every tensor gets a real gradient


def test_unused_positions_and_tokens_get_zero_gradient():
    params = bp.init_params(20, 16, 12, seed=0)
    idx = torch.tensor([[1, 2, 3, 1]])
    _, grads = bp.forward_backward(params, idx, torch.tensor([[2, 3, 1, 2]]), 2)
    assert grads["pos_emb"][4:].abs().max() == 0
    unused = torch.ones(20, dtype=torch.bool)
    unused[[1, 2, 3]] = False
    assert grads["tok_emb"][unused].abs().max() == 0


def piece_check(forward, backward, inputs, seed=0):
    """Differentiate `forward` with autograd against a random upstream gradient; return (manual, autograd)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    out, cache = forward(*leaves)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    auto = torch.autograd.grad(out, leaves, dout)
    with torch.no_grad():
        _, cache = forward(*inputs)
        manual = backward(dout, cache)
    return manual if isinstance(manual, tuple) else (manual,), auto


def test_layernorm_backward():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 3, 8, generator=g) * 3 + 1, torch.randn(8, generator=g), torch.randn(8, generator=g)
    manual, auto = piece_check(bp.layernorm_forward, bp.layernorm_backward, [x, w, b])
    for m, a in zip(manual, auto, strict=True):
        torch.testing.assert_close(m, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bp.layernorm_forward(x, w, b)[0], torch.nn.functional.layer_norm(x, (8,), w, b))


def test_gelu_backward():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    manual, auto = piece_check(bp.gelu_forward, bp.gelu_backward, [x])
    torch.testing.assert_close(manual[0], auto[0])
    torch.testing.assert_close(bp.gelu_forward(x)[0], torch.nn.functional.gelu(x))


def test_attention_backward_and_forward():
    g = torch.Generator().manual_seed(1)
    C, H = 12, 3
    inputs = [torch.randn(2, 5, C, generator=g, dtype=torch.float64), torch.randn(C, 3 * C, generator=g,
              dtype=torch.float64) * 0.5, torch.randn(3 * C, generator=g, dtype=torch.float64),
              torch.randn(C, C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)]
    manual, auto = piece_check(lambda *t: bp.attention_forward(*t, H), bp.attention_backward, inputs)
    for m, a in zip(manual, auto, strict=True):
        torch.testing.assert_close(m, a)
    x, w_qkv, b_qkv, w_o, b_o = inputs
    q, k, v = (x @ w_qkv + b_qkv).split(C, dim=-1)
    q, k, v = (t.view(2, 5, H, C // H).transpose(1, 2) for t in (q, k, v))
    y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 5, C)
    torch.testing.assert_close(bp.attention_forward(*inputs, H)[0], y @ w_o + b_o)


def test_cross_entropy_backward():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 9, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (2, 4), generator=g)
    loss = torch.nn.functional.cross_entropy(logits.reshape(8, 9), targets.reshape(8))
    loss.backward()
    ours, cache = bp.cross_entropy_forward(logits.detach(), targets)
    assert ours.item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(bp.cross_entropy_backward(cache), logits.grad)


def test_manual_training_lowers_the_loss():
    text = torch.tensor(list(b"the cat sat on the mat. " * 20))
    g = torch.Generator().manual_seed(0)

    def next_batch():
        starts = torch.randint(0, len(text) - 17, (8,), generator=g).tolist()
        return torch.stack([text[s:s + 16] for s in starts]), torch.stack([text[s + 1:s + 17] for s in starts])

    params = bp.init_params(256, 32, 16, seed=0)
    losses = bp.train_manual(params, next_batch, 4, steps=60, lr=1e-2)
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_bad_input():
    params = bp.init_params(10, 16, 4)
    with pytest.raises(ValueError, match="longer than pos_emb"):
        bp.forward_backward(params, torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="not divisible"):
        bp.forward_backward(params, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 3)
