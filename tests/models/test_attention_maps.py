"""Attention maps equal transformers' `output_attentions` (eager attention) and plot to a PNG grid."""

import pytest
import torch

from llmlab.models import Transformer
from llmlab.models.attention_maps import attention_maps, plot_attention_maps
from llmlab.models.hf import config_from_hf, state_dict_from_hf

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("family", ["llama", "bloom"])
def test_maps_equal_transformers_attentions(family):
    kwargs = dict(vocab_size=97, hidden_size=32, tie_word_embeddings=False)
    if family == "llama":
        kwargs.update(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48)
    else:
        kwargs.update(n_layer=3, n_head=4)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(family, **kwargs),
                                                       attn_implementation="eager").eval()
    config = config_from_hf(hf.config.to_dict())
    model = Transformer(config).eval()
    model.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    idx = torch.randint(0, 97, (2, 13))
    with torch.no_grad():
        expected = hf(idx, output_attentions=True).attentions  # per layer (B, H, T, T)
    maps = attention_maps(model, idx)
    assert list(maps) == [f"blocks.{i}.attn" for i in range(3)]
    for ours, theirs in zip(maps.values(), expected, strict=True):
        torch.testing.assert_close(ours, theirs[0], atol=1e-5, rtol=0)
    # the model is left as it was: fused attention, nothing kept
    assert all(b.attn.impl == "sdpa" and not b.attn.keep_weights and b.attn.last_weights is None
               for b in model.blocks)


def test_plot_writes_a_png(tmp_path):
    torch.manual_seed(0)
    model = Transformer(config_from_hf(dict(model_type="llama", vocab_size=50, hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=2, num_attention_heads=2))).eval()
    maps = attention_maps(model, torch.randint(0, 50, (1, 6)))
    plot_attention_maps(maps, tmp_path / "a.png", tokens=list("abcdef"), title="test")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_model_without_attention_is_refused():
    with pytest.raises(ValueError, match="no attention"):
        attention_maps(torch.nn.Linear(2, 2), torch.zeros(1, 2))
