"""AWQ: lower output error than RTN on a layer with large input channels; folding is exact in float;
whole-model quantisation on a tiny Llama with outlier channels beats RTN."""

import json

import torch

from llmlab.models import Transformer, get_preset
from llmlab.quantize.awq import (
    awq_quantize_model,
    awq_scale_block,
    awq_search_clip,
    awq_search_scale,
    clip_weight,
    fake_quant,
    output_error,
)
from llmlab.quantize.calibration import collect_block_stats, for_each_block, linear_names
from llmlab.quantize.layers import Int4Linear
from llmlab.quantize.model import prepare_quantized
from llmlab.quantize.rtn import fake_quantize


def outlier_inputs(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    x[:, :4] *= 30  # a few channels with large activations, as in LLMs
    return x


def test_beats_rtn_on_large_input_channels():
    x = outlier_inputs(2048, 256)
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    H = 2 * x.T @ x / x.shape[0]
    s, alpha, errors = awq_search_scale([w], H, x.abs().mean(0), bits=4, group_size=128)
    assert len(errors) == 21 and alpha > 0 and min(errors) < errors[0]  # errors[0]: alpha = 0, plain RTN
    awq_w = fake_quantize(w * s, 4, 128) / s
    rtn = float((x @ w.T - x @ fake_quantize(w, 4, 128).T).norm())
    awq = float((x @ w.T - x @ awq_w.T).norm())
    assert awq < 0.9 * rtn, (awq, rtn)
    # the H-based objective is the token-summed output error
    direct = float((x @ w.T - x @ awq_w.T).pow(2).sum())
    assert abs(output_error(w, awq_w, H) * x.shape[0] / 2 - direct) / direct < 1e-3


def test_clip_search_never_worse_than_no_clip():
    x = outlier_inputs(1024, 128)
    w = torch.randn(32, 128)
    w[:, 5] *= 6  # one large weight column makes absmax scales coarse
    H = 2 * x.T @ x / x.shape[0]
    max_val = awq_search_clip(w, H, bits=4, group_size=64, symmetric=True)
    assert max_val.shape == (32, 2) and (max_val <= w.abs().view(32, 2, 64).amax(-1) + 1e-6).all()
    clipped = clip_weight(w, max_val, 64)
    err_clip = output_error(w, fake_quantize(clipped, 4, 64), H)
    err_plain = output_error(w, fake_quantize(w, 4, 64), H)
    assert err_clip <= err_plain


def test_clip_with_padded_last_group():
    """576 inputs in groups of 128 (SmolLM2): 5 groups, the last one 64 wide; each clip hits its own columns."""
    w = torch.randn(8, 576)
    max_val = torch.full((8, 5), 10.0)
    max_val[:, 4] = 0.1  # clip only the short last group
    clipped = clip_weight(w, max_val, 128)
    assert torch.equal(clipped[:, :512], w[:, :512]) and clipped[:, 512:].abs().max() <= 0.1
    x = outlier_inputs(1024, 576)
    H = 2 * x.T @ x / x.shape[0]
    best = clip_weight(w, awq_search_clip(w, H, 4, 128, False), 128)
    assert output_error(w, fake_quant(best, 4, 128, False), H) <= output_error(w, fake_quant(w, 4, 128, False), H)


def llama_with_outliers(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(get_preset("llama-tiny", seq_len=64)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn_norm.weight[:4] *= 20
            block.mlp_norm.weight[4:8] *= 20
    return model


def calib_batches(seed: int = 0) -> list[torch.Tensor]:
    return list(torch.randint(0, 4096, (16, 64), generator=torch.Generator().manual_seed(seed)).split(8))


def test_folding_is_exact_in_float():
    model = llama_with_outliers()
    x = torch.randint(0, 4096, (2, 64))
    with torch.no_grad():
        before = model(x)
    norm_before = model.blocks[0].attn_norm.weight.clone()
    folds = {}
    for i, block, inputs in for_each_block(model, calib_batches()):
        col = collect_block_stats(block, i, inputs, linear_names(block, skip=()))
        info = awq_scale_block(block, col.stats, col.groups, bits=4, group_size=32)
        folds.update({name: meta["fold"] for name, meta in info.items()})
    assert not torch.equal(model.blocks[0].attn_norm.weight, norm_before)  # something was folded
    assert folds["attn.q_proj"] == "attn_norm" and folds["mlp.gate_proj"] == "mlp_norm"
    assert folds["mlp.down_proj"] == "mlp.up_proj"
    assert folds["attn.o_proj"] == "input_scale"  # grouped-query attention: v's rows serve several heads
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_quantize_model_beats_rtn():
    model = llama_with_outliers()
    held_out = torch.randint(0, 4096, (4, 64), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(held_out)
        rtn_model = llama_with_outliers()
        for name, m in rtn_model.named_modules():
            if isinstance(m, torch.nn.Linear) and name.startswith("blocks."):
                m.weight.copy_(fake_quantize(m.weight, 4, 32))
        rtn_err = (rtn_model(held_out) - ref).pow(2).mean()
    record = awq_quantize_model(model, calib_batches(), bits=4, group_size=32)
    assert record["method"] == "awq" and len(record["layers"]) == 28
    assert record["layers"]["blocks.0.attn.o_proj"]["input_scale"]  # core's layer config: rebuilt with the buffer
    per_layer = record["per_layer"]
    assert not per_layer["blocks.0.attn.q_proj"]["clip"] and per_layer["blocks.0.attn.v_proj"]["clip"]
    assert isinstance(model.blocks[3].mlp.down_proj, Int4Linear)
    with torch.no_grad():
        awq = model(held_out)
        awq_err = (awq - ref).pow(2).mean()
    assert awq_err < rtn_err, (awq_err, rtn_err)
    # the record rebuilds the model for loading: a float model, prepare_quantized, load_state_dict -> same logits
    fresh = prepare_quantized(Transformer(model.config).eval(), json.loads(json.dumps(record)))
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(held_out), awq)
