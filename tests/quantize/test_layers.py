"""Int8Linear / Int4Linear: storage round trips, kernel choice, fast path == reference, folding buffers, autograd.

Tolerance of fast vs reference: PyTorch's x86 integer kernels are vectorised for bfloat16 only, so the
fast path rounds x and the scales to bf16 (8 significant bits), accumulates in float32 and rounds the
output to bf16. Each of the three roundings is at most 2^-9 relative; summed over random signs they stay
well under 1% of the output's largest value, which is the bound used here (float32 would be ~1e-6).
"""

import pytest
import torch
import torch.nn as nn

from llmlab.quantize.layers import GEMM_MIN_ROWS, Int4Linear, Int8Linear, IntLinear, set_fast
from llmlab.quantize.linear import QuantizedLinear
from llmlab.quantize.rtn import dequantize_weight, quantize_weight

CONFIGS = [  # (class, from_linear keywords, expected kernel on the CPU)
    (Int8Linear, {}, "_weight_int8pack_mm"),
    (Int8Linear, {"symmetric": False}, "_weight_int8pack_mm + zero-point term"),
    (Int8Linear, {"per_tensor": True}, "_weight_int8pack_mm"),
    (Int8Linear, {"group_size": 32}, "dequantize"),
    (Int4Linear, {"group_size": 32}, "_weight_int4pack_mm_for_cpu"),
    (Int4Linear, {"group_size": 128}, "_weight_int4pack_mm_for_cpu"),  # 96 wide: padded to 128
    (Int4Linear, {"group_size": 64, "symmetric": False}, "_weight_int4pack_mm_for_cpu"),
    (Int4Linear, {}, "_weight_int4pack_mm_for_cpu"),  # per channel: groups of 32 with one scale
    (Int4Linear, {"group_size": 16}, "dequantize"),  # below the kernels' smallest group
]


def close_to_bf16(y, ref):
    torch.testing.assert_close(y.float(), ref.float(), atol=0.01 * ref.abs().max().item(), rtol=0.01)


def linear(in_features=96, out_features=48, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(torch.rand_like(lin.weight) * 3)  # uneven magnitudes
    return lin


@pytest.mark.parametrize("cls,kw,kernel", CONFIGS)
def test_fast_equals_reference_and_the_right_kernel_runs(cls, kw, kernel):
    lin = linear()
    q = cls.from_linear(lin, **kw)
    assert isinstance(q, QuantizedLinear) and q.kernel == kernel
    for rows in (5, GEMM_MIN_ROWS):  # the tile kernel (decoding), dequantise + GEMM (prefill)
        x = torch.randn(2, rows, 96)
        with torch.no_grad():
            q.fast = True
            y = q(x)
            q.fast = False
            ref = q(x)
        torch.testing.assert_close(ref, nn.functional.linear(x, q.dequantize(), lin.bias))  # the readable path
        if kernel == "dequantize":
            torch.testing.assert_close(y, ref)
        else:
            close_to_bf16(y, ref)
    q.fast = True
    with torch.no_grad():  # bf16 in, bf16 out, on either path
        yb = q(x.bfloat16())
        assert yb.dtype == torch.bfloat16
        close_to_bf16(yb, ref)
    err = (q.dequantize() - lin.weight).norm() / lin.weight.norm()
    assert err < (0.01 if cls is Int8Linear else 0.15)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
@pytest.mark.parametrize("symmetric", [True, False])
def test_from_codes_stores_exactly_the_codes(cls, symmetric):
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    codes, scales, zeros = quantize_weight(w, cls.bits, 64, symmetric)
    q = cls.from_codes(codes, scales, zeros)
    assert torch.equal(q.codes(), codes) and q.group_size == 64 and q.symmetric == symmetric
    torch.testing.assert_close(q.dequantize(), dequantize_weight(codes, scales, zeros))
    storage = {Int8Linear: (torch.int8, (32, 128)), Int4Linear: (torch.uint8, (32, 64))}[cls]
    assert (q.qweight.dtype, tuple(q.qweight.shape)) == storage
    assert set(q.state_dict()) == {"qweight", "scales"} | ({"zeros"} if not symmetric else set())
    lo, hi = (-8, 8) if cls is Int4Linear else (-128, 128)
    with pytest.raises(Exception, match="codes"):
        cls.from_codes(torch.full((32, 128), hi if symmetric else lo, dtype=torch.int32), scales, zeros)


def test_padding_rule_for_a_group_size_that_does_not_divide():
    lin = linear(in_features=96)
    q = Int4Linear.from_linear(lin, group_size=64)  # 96 -> 128 columns, two groups, the second half padding
    assert q.padded_in == 128 and q.scales.shape == (48, 2) and q.qweight.shape == (48, 64)
    assert bool((q.codes()[:, 96:] == 0).all()) and q.dequantize().shape == (48, 96)
    direct = Int4Linear.from_codes(*quantize_weight(torch.nn.functional.pad(lin.weight, (0, 32)), 4, 64),
                                   in_features=96)
    torch.testing.assert_close(direct.dequantize(), q.dequantize())


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_input_scale_and_perm_fold_back_into_the_original_weight(cls):
    torch.manual_seed(0)
    w, bias = torch.randn(32, 64), torch.randn(32)
    s = torch.rand(64) + 0.5
    perm = torch.randperm(64)
    stored = (w * s)[:, perm]  # Q[:, j] = (W * s)[:, perm[j]]
    codes, scales, zeros = quantize_weight(stored, cls.bits, 32)
    q = cls.from_codes(codes, scales, zeros, bias=bias, input_scale=s, perm=perm)
    expected = torch.empty_like(w)
    expected[:, perm] = dequantize_weight(codes, scales)
    expected = expected / s
    torch.testing.assert_close(q.dequantize(), expected)
    assert (q.dequantize() - w).abs().max() < (0.05 if cls is Int8Linear else 0.6)
    x = torch.randn(GEMM_MIN_ROWS, 64)
    with torch.no_grad():
        close_to_bf16(q(x[:3]), x[:3] @ expected.T + bias)
        close_to_bf16(q(x), x @ expected.T + bias)
    cfg = q.config()
    assert cfg["input_scale"] and cfg["perm"] and cfg["bias"] and cfg["class"] == cls.__name__
    empty = cls(**{k: v for k, v in cfg.items() if k != "class"})
    empty.load_state_dict(q.state_dict())
    torch.testing.assert_close(empty.dequantize(), expected)


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_gradients_reach_the_input_not_the_codes(cls):
    q = cls.from_linear(linear(bias=True), group_size=32 if cls is Int4Linear else None)
    for fast, rows in [(True, 3), (True, GEMM_MIN_ROWS), (False, 3)]:
        q.fast = fast
        x = torch.randn(2, rows, 96, requires_grad=True)
        q(x).sum().backward()
        torch.testing.assert_close(x.grad, torch.ones(2, rows, 48) @ q.dequantize())
    assert not any(p.requires_grad for p in q.parameters())


def test_cache_follows_load_state_dict_and_set_fast():
    a, b = Int4Linear.from_linear(linear(seed=0), 32), Int4Linear.from_linear(linear(seed=1), 32)
    x = torch.randn(4, 96)
    with torch.no_grad():
        ya = a(x)
        assert a.cache_bytes() > 0
        a.load_state_dict(b.state_dict())
        close_to_bf16(a(x), b(x))
        assert not torch.allclose(a(x), ya)
    model = nn.Sequential(a, nn.ReLU(), Int8Linear.from_linear(linear(48, 16), None))
    set_fast(model, False)
    assert all(m.kernel == "dequantize" for m in model.modules() if isinstance(m, IntLinear))


def test_lora_trains_on_an_int4_base():
    from llmlab.finetune.lora import LoRALinear, apply_lora  # finetune sits above quantize: tests only
    from llmlab.models import Transformer, get_preset
    from llmlab.quantize.model import quantize_model

    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=32))
    quantize_model(model, "int4", group_size=32)
    assert all(m.kernel == "_weight_int4pack_mm_for_cpu" for m in model.modules() if isinstance(m, Int4Linear))
    apply_lora(model, rank=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"])
    assert isinstance(model.blocks[0].attn.q_proj, LoRALinear)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 128, (4, 16))
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert model.blocks[0].attn.q_proj.lora_B.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls,kw", [(Int8Linear, {}), (Int4Linear, {"group_size": 32}),
                                    (Int4Linear, {"group_size": 128})])
def test_cuda_kernels_match_reference(cls, kw):
    q = cls.from_linear(linear(in_features=256, out_features=64), **kw).cuda()
    x = torch.randn(3, 256, device="cuda")
    with torch.no_grad():
        y = q(x)
        q.fast = False
        ref = q(x)
    close_to_bf16(y, ref)
