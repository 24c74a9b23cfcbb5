"""A random-weight LLaVA built by transformers opens with llmlab.load and gives the same logits and greedy ids."""

import json

import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.multimodal.hf_llava import PretrainedLlava, _normalise_key

transformers = pytest.importorskip("transformers")

IMAGE_TOKEN = 120


def tiny_llava(tmp_path, **overrides):
    vision = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                           num_attention_heads=4, image_size=32, patch_size=8, projection_dim=16)
    text = transformers.LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                                      projector_hidden_act="gelu", **overrides)
    torch.manual_seed(0)
    hf = transformers.LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # random norms and biases too, so a mapping mistake cannot hide behind ones and zeros
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias") or "class_embedding" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    return hf


def ids_with_image(n_image_tokens: int, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    rows = [torch.cat([torch.tensor([1]), torch.full((n_image_tokens,), IMAGE_TOKEN),
                       torch.randint(3, 100, (7,), generator=g)]) for _ in range(batch)]
    return torch.stack(rows)  # (B, 1 + N + 7)


@pytest.mark.parametrize("overrides", [{}, {"vision_feature_select_strategy": "full", "vision_feature_layer": -1},
                                       {"vision_feature_layer": [-3, -1]}])
def test_logits_equal_transformers(tmp_path, overrides):
    hf = tiny_llava(tmp_path, **overrides)
    ours = llmlab.load(tmp_path)
    assert isinstance(ours, PretrainedLlava)
    pixels = torch.randn(2, 3, 32, 32)
    idx = ids_with_image(ours.model.n_image_tokens)
    with torch.no_grad():
        want = hf(input_ids=idx, pixel_values=pixels).logits
        got = ours.model(idx, pixels)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_greedy_generation_equals_transformers(tmp_path):
    hf = tiny_llava(tmp_path)
    ours = llmlab.load(tmp_path)
    pixels = torch.randn(1, 3, 32, 32)
    idx = ids_with_image(ours.model.n_image_tokens, batch=1)
    with torch.no_grad():
        want = hf.generate(input_ids=idx, pixel_values=pixels, max_new_tokens=6, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, idx.shape[1]:].tolist()
    assert ours.model.generate(idx, pixels, 6) == want


def test_both_weight_layouts_normalise_to_one():
    assert _normalise_key("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == \
        _normalise_key("vision_tower.encoder.layers.0.mlp.fc1.weight") == "vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert _normalise_key("model.language_model.layers.1.mlp.up_proj.weight") == \
        _normalise_key("language_model.model.layers.1.mlp.up_proj.weight")
    assert _normalise_key("language_model.lm_head.weight") == _normalise_key("lm_head.weight") == "lm_head.weight"


def test_bad_input(tmp_path):
    tiny_llava(tmp_path)
    ours = llmlab.load(tmp_path)
    idx = ids_with_image(ours.model.n_image_tokens)
    with pytest.raises(UserError, match="image tokens"):
        ours.model(idx[:, :5], torch.randn(2, 3, 32, 32))  # too few image tokens for two images
    with pytest.raises(UserError, match="no pixels"):
        ours.model(idx)
    with pytest.raises(UserError, match="no tokenizer"):
        ours.describe(__import__("PIL.Image").Image.new("RGB", (32, 32)))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vision_config"]["hidden_act"] = "swish"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="hidden_act"):
        llmlab.load(tmp_path)
