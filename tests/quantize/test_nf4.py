"""NF4 + double quantisation against the published code table and bitsandbytes' bytes; QLoRA trains."""

import pytest
import torch

from llmlab.models import Transformer, get_preset
from llmlab.quantize import QuantizedLinear, dequantize_model, quantize_model_nf4
from llmlab.quantize.nf4 import DYNAMIC_CODE, NF4_CODE, NF4Linear, build_nf4_code, dequantize_nf4, quantize_nf4


def test_code_tables():
    torch.testing.assert_close(build_nf4_code(), NF4_CODE, atol=2e-6, rtol=0)
    assert NF4_CODE[7] == 0 and NF4_CODE[0] == -1 and NF4_CODE[-1] == 1
    assert DYNAMIC_CODE.shape == (256,) and DYNAMIC_CODE.max() == 1.0 and bool((DYNAMIC_CODE.diff() >= 0).all())


def test_round_trip_error_bound():
    torch.manual_seed(0)
    w = torch.randn(96, 128)
    q = quantize_nf4(w)
    assert q["packed"].dtype == torch.uint8 and q["packed"].numel() == w.numel() // 2
    back = dequantize_nf4(q, w.shape)
    absmax = w.view(-1, 64).abs().amax(1, keepdim=True)
    max_gap = NF4_CODE.diff().max() / 2  # half the widest gap between code values
    err = (back - w).view(-1, 64).abs()
    assert bool((err <= absmax * max_gap * 1.02 + 1e-6).all())  # 2% slack for the 8-bit absmax
    assert (back - w).pow(2).mean() / w.pow(2).mean() < 0.015  # ~1% relative error, as in QLoRA


def test_matches_bitsandbytes():
    try:
        import bitsandbytes.functional as bnbf
        w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
        packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
        expected = bnbf.dequantize_4bit(packed, state)
    except Exception as e:  # not installed, or no kernel for this CPU
        pytest.skip(f"bitsandbytes does not run here: {e}")
    q = quantize_nf4(w)
    assert torch.equal(q["packed"], packed.view(-1))
    assert torch.equal(q["qabsmax"], state.absmax)
    torch.testing.assert_close(q["absmax2"], state.state2.absmax)
    torch.testing.assert_close(DYNAMIC_CODE, state.state2.code)
    torch.testing.assert_close(dequantize_nf4(q, w.shape), expected, atol=1e-6, rtol=0)


def test_nf4_linear_gradients_and_qlora():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    q = NF4Linear(lin)
    x = torch.randn(2, 5, 64, requires_grad=True)
    y = q(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, q.dequantize(), lin.bias))
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 5, 32) @ q.dequantize())
    # a bf16 input (autocast, or a bf16 model) against the float32 bias the layer was built with
    xb = x.detach().bfloat16()
    yb = q(xb)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb, torch.nn.functional.linear(xb, q.dequantize(torch.bfloat16), lin.bias.bfloat16()))


def test_quantized_layers_are_recognised_by_type_and_dequantize_back():
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=32))
    idx = torch.randint(0, 128, (1, 16))
    report = quantize_model_nf4(model)
    quantized = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 2 * 7 and all(isinstance(m, NF4Linear) for m in quantized)  # q k v o gate up down
    assert report["params"] == sum(m.in_features * m.out_features for m in quantized)
    with torch.no_grad():
        before = model(idx)
        dequantize_model(model)
        assert not any(isinstance(m, QuantizedLinear) for m in model.modules())
        torch.testing.assert_close(model(idx), before, atol=1e-5, rtol=0)
