"""Decoder variants chosen by ModelConfig: positions (learned, sinusoidal, RoPE, ALiBi, none), Post-LN and
QK-norm, each against an independent reference (PyTorch's own Transformer layer, transformers' Bloom slopes,
Qwen3, the textbook formula), plus the readable/fused attention paths and the KV cache on every variant."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.models import KVCache, ModelConfig, Transformer
from llmlab.models.gpt import Block
from llmlab.models.layers import SinusoidalPositions, alibi_slopes

transformers = pytest.importorskip("transformers")

VARIANTS = {
    "sinusoidal": dict(pos="sinusoidal"), "alibi": dict(pos="alibi"), "nope": dict(pos="none"),
    "post-ln": dict(norm_placement="post"), "qk-norm-head": dict(qk_norm="head"), "qk-norm-full": dict(qk_norm="full"),
    "alibi-6-heads-post-ln": dict(pos="alibi", n_head=6, n_kv_head=3, n_embd=48, norm_placement="post"),
    "moe-qk-norm": dict(n_expert=4, expert_top_k=2, qk_norm="head"),
}


def _config(**kw) -> ModelConfig:
    base = dict(vocab_size=97, seq_len=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, pos="rope", norm="rmsnorm",
                mlp="swiglu", bias=False)
    return ModelConfig(**{**base, **kw})


def test_sinusoidal_table_is_the_papers_formula():
    C = 16
    table = SinusoidalPositions(_config(n_embd=C, n_head=4, n_kv_head=4))(torch.arange(50)[None])[0]  # (T, C)
    for p in (0, 1, 7, 49):
        for i in range(C // 2):
            angle = p / 10000 ** (2 * i / C)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


@pytest.mark.parametrize("n_head", [1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 32])
def test_alibi_slopes_match_bloom(n_head):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    alibi = build_alibi_tensor(torch.ones(1, 3), n_head, torch.float32)  # (H, 1, 3): slope * key position
    torch.testing.assert_close(alibi_slopes(n_head), alibi[:, 0, 1])
    if n_head == 8:
        assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]  # the paper's 1/2 ... 1/256


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_block_equals_torch_transformer_layer(placement):
    """PyTorch's nn.TransformerEncoderLayer with a causal mask: norm_first=True is Pre-LN, False is Post-LN."""
    torch.manual_seed(0)
    C, H = 32, 4
    config = ModelConfig(vocab_size=10, seq_len=32, n_layer=1, n_head=H, n_embd=C, pos="none", norm="layernorm",
                         mlp="gelu", bias=True, norm_placement=placement)
    block = Block(config).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ref = torch.nn.TransformerEncoderLayer(C, H, dim_feedforward=4 * C, dropout=0.0, batch_first=True,
                                           norm_first=placement == "pre", layer_norm_eps=config.norm_eps,
                                           activation=lambda x: F.gelu(x, approximate="tanh")).eval()
    a = block.attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ref.self_attn.out_proj.weight.copy_(a.o_proj.weight)
        ref.self_attn.out_proj.bias.copy_(a.o_proj.bias)
        for ours, theirs in ((block.mlp.up_proj, ref.linear1), (block.mlp.down_proj, ref.linear2),
                             (block.attn_norm, ref.norm1), (block.mlp_norm, ref.norm2)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    x = torch.randn(2, 11, C)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(11)
    with torch.no_grad():
        torch.testing.assert_close(block(x, None, None, None, 0), ref(x, src_mask=causal, is_causal=True),
                                   atol=1e-5, rtol=1e-5)


def test_post_ln_model_has_no_final_norm():
    model = Transformer(_config(norm_placement="post"))
    assert isinstance(model.norm_f, torch.nn.Identity)
    assert not any("norm_f" in name for name in model.state_dict())


def test_qk_norm_per_head_matches_qwen3():
    hf_config = transformers.Qwen3Config(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                         tie_word_embeddings=False, attention_bias=True)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(0, 0.2).add_(1.0 if name.endswith("weight") else 0.0)
    from llmlab.models.hf import config_from_hf, state_dict_from_hf

    config = config_from_hf(hf.config.to_dict())
    assert config.qk_norm == "head" and config.o_bias
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config), strict=True)
    idx = torch.randint(0, 97, (2, 21))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("pos", ["none", "sinusoidal"])
def test_positions_reach_the_logits_or_not(pos):
    """NoPE has no positions at all: moving every position by 5 changes nothing; sinusoidal positions move it."""
    torch.manual_seed(0)
    model = Transformer(_config(pos=pos)).eval()
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        plain = model(idx)
        shifted = model(idx, positions=torch.arange(5, 17)[None])
    assert not any(n.startswith("pos_emb") for n in model.state_dict())  # nothing stored either way
    assert bool((plain - shifted).abs().max() > 1e-3) == (pos == "sinusoidal")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_agrees_across_paths_cache_and_padding(name):
    torch.manual_seed(0)
    model = Transformer(_config(**VARIANTS[name])).eval()
    idx = torch.randint(0, 97, (2, 20))
    seq = idx[:1, :12]
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), seq], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 12, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        fused = model(idx)
        for impl in ("explicit", "sdpa"):
            model.set_attention(impl)
            torch.testing.assert_close(model(idx), fused, atol=1e-5, rtol=0)
            cache = KVCache.for_model(model, batch_size=2)
            pieces = [model(idx[:, :7], kv_cache=cache)] + [model(idx[:, t:t + 1], kv_cache=cache)
                                                            for t in range(7, 20)]
            torch.testing.assert_close(torch.cat(pieces, dim=1), fused, atol=1e-5, rtol=0)
            batched = model(padded, positions=(mask.cumsum(-1) - 1).clamp(min=0), attn_mask=mask)
            torch.testing.assert_close(batched[:, 4:], model(seq), atol=1e-5, rtol=0)


def test_alibi_refuses_a_mask_without_key_positions():
    model = Transformer(_config(pos="alibi")).eval()
    with pytest.raises(ValueError, match="ALiBi"):
        model(torch.zeros(1, 3, dtype=torch.long), attn_mask=torch.ones(1, 3, 3, dtype=torch.bool))


@pytest.mark.parametrize("field, value", [("pos", "absolute"), ("norm_placement", "sandwich"), ("qk_norm", "yes")])
def test_unknown_choice_is_one_line_error(field, value):
    with pytest.raises(UserError, match=field):
        _config(**{field: value})


@pytest.mark.parametrize("kw", [dict(n_expert=4), dict(norm_placement="post"), dict(qk_norm="head"),
                                dict(pos="alibi"), dict(pos="sinusoidal"), dict(pos="none")])
def test_gguf_export_refuses_what_llama_cpp_cannot_express(kw):
    from llmlab.quantize.gguf_export import gguf_arch

    with pytest.raises(UserError, match="GGUF export"):
        gguf_arch(_config(**kw))
    assert gguf_arch(_config()) == "llama"
