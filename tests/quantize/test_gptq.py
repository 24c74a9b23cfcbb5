"""GPTQ: equal to RTN when H = I, a hand-worked 3-column example, and less output error than RTN on
correlated inputs (with and without act-order); whole-model quantisation on a tiny Llama."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.models import Transformer, get_preset
from llmlab.quantize.gptq import gptq_quantize_model, gptq_quantize_weight
from llmlab.quantize.layers import Int4Linear
from llmlab.quantize.model import prepare_quantized
from llmlab.quantize.rtn import dequantize_weight, qrange, quantize_weight


def correlated_inputs(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(n, dim) inputs mixed through a random matrix, with a few channels much larger: like LLM activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim**0.5 + torch.eye(dim)
    x = torch.randn(n, dim, generator=g) @ mix
    x[:, :4] *= 8
    return x


def output_error(x, w, codes, scales, zeros) -> float:
    return float((x @ w.T - x @ dequantize_weight(codes, scales, zeros).T).norm())


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [16, None])
@pytest.mark.parametrize("act_order", [False, True])
def test_identity_hessian_equals_rtn(symmetric, group_size, act_order):
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(1))
    codes, scales, zeros, _ = gptq_quantize_weight(w, torch.eye(64), 4, group_size, symmetric, act_order)
    ref = quantize_weight(w, 4, group_size=group_size, symmetric=symmetric)
    assert torch.equal(codes, ref[0].to(torch.int32))
    torch.testing.assert_close(scales, ref[1], rtol=0, atol=0)
    if symmetric:
        assert zeros is None and ref[2] is None
    else:
        torch.testing.assert_close(zeros, ref[2], rtol=0, atol=0)


def test_hand_worked_example():
    """w = [0.6, -0.4, 1.0], int2 symmetric (codes -1..1), scale = 1.0 from the row's absmax.

    RTN rounds to [1, 0, 1]. GPTQ rounds 0.6 -> 1 (error -0.4), and since inputs 0 and 1 are correlated
    (H_01 = 0.5) moves w_1 by -(-0.4) * Hinv_01 / Hinv_00 = -0.2, to -0.6, which rounds to -1: [1, -1, 1].
    The output error e H e^T drops from 0.48 to 0.28.
    """
    w = torch.tensor([[0.6, -0.4, 1.0]])
    H = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    codes, scales, zeros, _ = gptq_quantize_weight(w, H, bits=2, group_size=None, percdamp=0.0)
    assert codes.tolist() == [[1, -1, 1]] and scales.tolist() == [[1.0]] and zeros is None
    rtn = quantize_weight(w, 2, group_size=None)[0]
    assert rtn.tolist() == [[1, 0, 1]]
    for c, expected in ((rtn, 0.48), (codes, 0.28)):
        e = w - c.float()
        assert abs(float(e @ H @ e.T) - expected) < 1e-6


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_beats_rtn_on_correlated_inputs(symmetric, act_order):
    x = correlated_inputs(2048, 128)
    w = torch.randn(96, 128, generator=torch.Generator().manual_seed(2)) * 0.05
    H = 2 * x.T @ x / x.shape[0]
    codes, scales, zeros, loss = gptq_quantize_weight(w, H, 4, 32, symmetric, act_order)
    lo, hi = qrange(4, symmetric)
    assert codes.dtype == torch.int32 and int(codes.min()) >= lo and int(codes.max()) <= hi
    assert scales.shape == (96, 4) and (zeros is None) == symmetric and loss > 0
    rtn = output_error(x, w, *quantize_weight(w, 4, group_size=32, symmetric=symmetric))
    gptq = output_error(x, w, codes, scales, zeros)
    assert gptq < 0.85 * rtn, (gptq, rtn)


def test_dead_inputs_and_bad_group():
    w = torch.randn(8, 32)
    H = torch.eye(32)
    H[3, 3] = 0  # an input channel that never fired
    codes, scales, zeros, _ = gptq_quantize_weight(w, H, 4, 16)
    assert (codes[:, 3] == 0).all()
    with pytest.raises(UserError, match="group_size"):
        gptq_quantize_weight(w, torch.eye(32), 4, 0)


def test_group_not_dividing_pads_like_int4linear():
    """SmolLM2's 576 inputs in groups of 128: zero-padded to 640, as Int4Linear.from_linear stores them."""
    w = torch.randn(16, 40)
    codes, scales, zeros, _ = gptq_quantize_weight(w, torch.eye(40), 4, 16, symmetric=False)
    ref = Int4Linear.from_linear(_linear_with(w), 16, symmetric=False)
    assert codes.shape == (16, 48) and scales.shape == (16, 3)
    assert torch.equal(codes, ref.codes()) and torch.equal(scales, ref.scales)
    layer = Int4Linear.from_codes(codes, scales, zeros, in_features=40)
    torch.testing.assert_close(layer.dequantize(), ref.dequantize())


def _linear_with(w: torch.Tensor) -> torch.nn.Linear:
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(w)
    return linear


def test_quantize_model_tiny_llama():
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", seq_len=64)).eval()
    g = torch.Generator().manual_seed(0)
    calib = list(torch.randint(0, 4096, (16, 64), generator=g).split(8))  # 1024 tokens: H of down_proj (512) full rank
    held_out = torch.randint(0, 4096, (4, 64), generator=g)
    with torch.no_grad():
        ref = model(held_out)
        rtn_model = Transformer(model.config).eval()
        rtn_model.load_state_dict(model.state_dict())
        for name, m in rtn_model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.startswith("blocks."):
                m.weight.copy_(dequantize_weight(*quantize_weight(m.weight, 3, group_size=32)))
        rtn_err = (rtn_model(held_out) - ref).pow(2).mean()
    record = gptq_quantize_model(model, calib, bits=3, group_size=32, act_order=True)
    assert isinstance(model.blocks[0].attn.q_proj, Int4Linear) and isinstance(model.lm_head, torch.nn.Linear)
    assert len(record["layers"]) == 4 * 7 and record["method"] == "gptq" and record["calibration"]["sequences"] == 16
    with torch.no_grad():
        out = model(held_out)
        gptq_err = (out - ref).pow(2).mean()
    assert gptq_err < rtn_err, (gptq_err, rtn_err)
    fresh = prepare_quantized(Transformer(model.config).eval(), record)  # what llmlab.load does
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(held_out), out)


@pytest.mark.slow
def test_smollm2_gptq_and_awq_beat_rtn():
    """SmolLM2-135M, INT4 g128 with zero points, 16 x 512 calibration tokens: held-out loss float < GPTQ, AWQ < RTN."""
    import copy

    import llmlab
    from llmlab.data.sources import default_corpus, split_documents
    from llmlab.eval.loss import mean_heldout_loss
    from llmlab.models.swap import find_modules, replace_module
    from llmlab.quantize import dequantize_model
    from llmlab.quantize.awq import awq_quantize_model
    from llmlab.quantize.calibration import calibration_batches

    lm = llmlab.load("smollm2-135m-instruct")
    calib = calibration_batches(lm.tokenizer, n=16, seq_len=512)
    _, val_docs = split_documents(default_corpus(), 0.05)
    held = [(w[:, :-1], w[:, 1:]) for w in calibration_batches(lm.tokenizer, val_docs, 8, 513, val_fraction=0.0)]

    def loss(model):
        return mean_heldout_loss(dequantize_model(copy.deepcopy(model)), held)

    rtn = copy.deepcopy(lm.model)
    for name in find_modules(rtn, (torch.nn.Linear,), skip=("lm_head",)):
        replace_module(rtn, name, Int4Linear.from_linear(rtn.get_submodule(name), 128, symmetric=False))
    gptq, awq = copy.deepcopy(lm.model), copy.deepcopy(lm.model)
    gptq_quantize_model(gptq, calib, 4, 128, symmetric=False)
    awq_quantize_model(awq, calib, 4, 128, symmetric=False)
    base, l_rtn, l_gptq, l_awq = loss(lm.model), loss(rtn), loss(gptq), loss(awq)
    assert base < l_gptq < l_rtn and base < l_awq < l_rtn, (base, l_rtn, l_gptq, l_awq)
