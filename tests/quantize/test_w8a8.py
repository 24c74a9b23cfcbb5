"""W8A8: per-token activation quantisation, the integer matmul against its float reference, SmoothQuant."""

import pytest
import torch
import torch.nn as nn

from llmlab.common.errors import UserError
from llmlab.quantize.w8a8 import W8A8Linear, quantize_activations, smooth_scales


def test_activation_quantisation_golden():
    xq, sx = quantize_activations(torch.tensor([[0.5, -1.27, 0.0], [0.0, 0.0, 0.0]]))
    torch.testing.assert_close(sx, torch.tensor([[0.01], [1.0]]))
    assert xq.dtype == torch.int8 and xq.tolist() == [[50, -127, 0], [0, 0, 0]]


def test_smooth_scales_golden_and_errors():
    w = torch.tensor([[1.0, -0.5], [0.2, 1.0]])  # column maxima 1, 1
    torch.testing.assert_close(smooth_scales(torch.tensor([100.0, 1.0]), w), torch.tensor([10.0, 1.0]))
    torch.testing.assert_close(smooth_scales(torch.tensor([100.0, 1.0]), w, alpha=1.0), torch.tensor([100.0, 1.0]))
    with pytest.raises(UserError, match="alpha"):
        smooth_scales(torch.ones(2), w, alpha=1.5)
    with pytest.raises(UserError, match="act_absmax"):
        smooth_scales(torch.ones(3), w)


def test_integer_path_equals_reference():
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = W8A8Linear.from_linear(lin)
    assert q.kernel.startswith("_int_mm")
    x = torch.randn(2, 7, 64)
    with torch.no_grad():
        y = q(x)
        q.fast = False
        ref = q(x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)  # int32 sums are exact; only float order differs
    xq, sx = quantize_activations(x.reshape(-1, 64))
    by_hand = (xq.long() @ q.qweight.long().T).float() * sx * q.scales[:, 0] + lin.bias
    torch.testing.assert_close(y.reshape(-1, 48), by_hand)
    with torch.no_grad():
        assert (y - lin(x)).abs().max() < 0.02 * lin(x).abs().max()  # close to float


def test_smoothquant_tames_an_outlier_channel():
    torch.manual_seed(0)
    lin = nn.Linear(256, 64, bias=False)
    x = torch.randn(32, 256)
    x[:, 7] *= 80.0  # one outlier channel, as in LLM activations
    exact = lin(x).detach()
    plain = W8A8Linear.from_linear(lin)
    smooth = W8A8Linear.from_linear(lin, act_absmax=x.abs().amax(0))
    with torch.no_grad():
        err_plain = (plain(x) - exact).pow(2).mean()
        err_smooth = (smooth(x) - exact).pow(2).mean()
        torch.testing.assert_close(smooth.dequantize(), lin.weight, atol=0.01, rtol=0)  # W * s / s
        smooth.fast = False
        torch.testing.assert_close(smooth(x), W8A8Linear.from_linear(lin, x.abs().amax(0))(x), atol=1e-4, rtol=1e-4)
    assert smooth.input_scale is not None and err_smooth < err_plain / 4, (err_plain, err_smooth)


def test_gradient_passes_straight_through():
    q = W8A8Linear.from_linear(nn.Linear(32, 16))
    x = torch.randn(3, 32, requires_grad=True)
    q(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3, 16) @ q.dequantize())
