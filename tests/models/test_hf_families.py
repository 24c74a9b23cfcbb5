"""Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE and Bloom: checkpoints written by transformers (random weights, built
here, non-default shapes) open with `llmlab.load` and give transformers' logits; exports load back into it."""

import pytest
import torch

import llmlab
from llmlab.infer.generate import generate, generate_batch
from llmlab.models import Transformer
from llmlab.models.hf import config_from_hf, hf_family, state_dict_from_hf
from llmlab.models.pretrained import save_pretrained

transformers = pytest.importorskip("transformers")

ROPE = dict(vocab_size=113, max_position_embeddings=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, hidden_size=32, tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
FAMILIES = {  # GQA and untied heads everywhere; each family's own options away from their defaults
    "mixtral": dict(ROPE, intermediate_size=40, num_local_experts=5, num_experts_per_tok=2, rope_theta=5e5),
    "qwen2_moe": dict(ROPE, intermediate_size=48, moe_intermediate_size=24, shared_expert_intermediate_size=40,
                      num_experts=6, num_experts_per_tok=3, norm_topk_prob=True, use_sliding_window=False),
    "qwen3_moe": dict(ROPE, intermediate_size=48, moe_intermediate_size=24, num_experts=6, num_experts_per_tok=2,
                      head_dim=12, attention_bias=True, norm_topk_prob=False),
    "olmoe": dict(ROPE, intermediate_size=24, num_experts=6, num_experts_per_tok=3, norm_topk_prob=True),
    "bloom": dict(vocab_size=113, hidden_size=48, n_layer=2, n_head=6, tie_word_embeddings=False, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2),  # 6 heads: ALiBi's slopes for a head count not a power of 2
}


def _hf_model(family: str):
    config = transformers.AutoConfig.for_model(family, **FAMILIES[family])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random norms, biases and routers: a wrong mapping cannot hide behind 1, 0 or a tie
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.normal_(0, 0.1).add_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith(("mlp.gate.weight", "shared_expert_gate.weight")):
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def saved(request, tmp_path_factory):
    family = request.param
    hf = _hf_model(family)
    folder = tmp_path_factory.mktemp(family)
    hf.save_pretrained(folder)
    return family, hf, folder


def test_load_gives_transformers_logits(saved):
    family, hf, folder = saved
    model = llmlab.load(folder).model
    assert hf_family(model.config) == family
    idx = torch.randint(3, 113, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        for attention in ("sdpa", "explicit"):
            for experts in ("batched", "loop"):
                model.set_attention(attention)
                model.set_moe(experts)
                torch.testing.assert_close(model(idx), expected, atol=1e-4, rtol=0)


def test_in_memory_state_dict_converts_too(saved):
    """transformers 5 holds all experts in one tensor in memory; the converter splits it."""
    family, hf, _ = saved
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config), strict=True)
    idx = torch.randint(3, 113, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=0)


def test_export_loads_back_into_transformers(saved, tmp_path):
    family, hf, folder = saved
    model = llmlab.load(folder).model
    save_pretrained(model, tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(again) is type(hf)
    idx = torch.randint(3, 113, (1, 25))
    with torch.no_grad():
        torch.testing.assert_close(again(idx).logits, hf(idx).logits, atol=1e-4, rtol=0)


def test_left_padded_batch_matches_transformers(saved):
    """Padding on the left with a key mask: ALiBi counts key positions along the mask, as Bloom does."""
    family, hf, folder = saved
    model = llmlab.load(folder).model
    idx = torch.randint(3, 113, (2, 16), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, :5] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(idx, attention_mask=mask).logits
        ours = model(idx, positions=positions, attn_mask=mask.bool())
    real = mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["bloom", "mixtral"])
def test_greedy_generation_matches_transformers(family):
    """KV-cached decoding, one prompt and a left-padded batch, against transformers' greedy generate."""
    hf = _hf_model(family)
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    prompts = [[5, 17, 42, 9, 77, 3], [8, 8, 91]]
    for prompt in prompts:
        with torch.no_grad():
            expected = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
        assert generate(ours, prompt, 12, temperature=0.0) == expected[0, len(prompt):].tolist()
    batch = generate_batch(ours, prompts, 12, temperature=0.0)
    assert batch == [generate(ours, p, 12, temperature=0.0) for p in prompts]


def test_unsupported_options_name_the_field():
    from llmlab.common.errors import UserError

    with pytest.raises(UserError, match="mlp_only_layers"):
        config_from_hf({**FAMILIES["qwen2_moe"], "model_type": "qwen2_moe", "mlp_only_layers": [0]})
    with pytest.raises(UserError, match="clip_qkv"):
        config_from_hf({**FAMILIES["olmoe"], "model_type": "olmoe", "clip_qkv": 8.0})
    with pytest.raises(UserError, match="apply_residual_connection_post_layernorm"):
        config_from_hf({**FAMILIES["bloom"], "model_type": "bloom", "apply_residual_connection_post_layernorm": True})
