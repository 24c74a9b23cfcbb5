"""llmlab's decoder against transformers' GPT-2, Llama and Qwen2, built from random weights (no download)."""

import pytest
import torch

from llmlab.models import Transformer
from llmlab.models.hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf

transformers = pytest.importorskip("transformers")

HF_CONFIGS = {
    "gpt2": dict(model_type="gpt2", vocab_size=97, n_positions=64, n_layer=2, n_head=4, n_embd=32),
    "llama": dict(model_type="llama", vocab_size=101, max_position_embeddings=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=72,
                  rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False),
    "llama-tied-llama3-rope": dict(model_type="llama", vocab_size=101, max_position_embeddings=64,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                   hidden_size=32, intermediate_size=64, tie_word_embeddings=True,
                                   rope_theta=500000.0,
                                   rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                     high_freq_factor=4.0, original_max_position_embeddings=16)),
    "qwen2": dict(model_type="qwen2", vocab_size=89, max_position_embeddings=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=48,
                  tie_word_embeddings=True, use_sliding_window=False),
}


def _hf_model(name: str):
    kwargs = dict(HF_CONFIGS[name])
    model_type = kwargs.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # random biases and norm weights, so a wrong mapping cannot hide behind zeros and ones
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or "ln_" in n:
                p.normal_(0, 0.1).add_(1.0 if n.endswith("weight") else 0.0)
    return model


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_logits_match_transformers(name):
    hf = _hf_model(name)
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config), strict=True)
    idx = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        for impl in ("sdpa", "explicit"):
            ours.set_attention(impl)
            torch.testing.assert_close(ours(idx), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_round_trip_to_hf(name):
    """Our weights exported back to HF's names load strictly into the HF model and give its logits."""
    hf = _hf_model(name)
    config = config_from_hf(hf.config.to_dict())
    ours = Transformer(config).eval()
    ours.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    exported = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf2 = transformers.AutoModelForCausalLM.from_config(exported).eval()
    hf2.load_state_dict(state_dict_to_hf(ours.state_dict(), config), strict=False)
    idx = torch.randint(0, config.vocab_size, (1, 17))
    with torch.no_grad():
        torch.testing.assert_close(hf2(idx).logits, ours(idx), atol=1e-4, rtol=0)


def test_unsupported_architecture_names_the_field():
    from llmlab.common.errors import UserError

    with pytest.raises(UserError, match="model_type='bert'"):
        config_from_hf({"model_type": "bert"})
    with pytest.raises(UserError, match="hidden_act"):
        config_from_hf({**HF_CONFIGS["llama"], "hidden_act": "gelu"})
