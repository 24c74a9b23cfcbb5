"""The tiny VLM: masks, the decoder run block by block, both fusions' defining properties, save/load, bad input."""

import pytest
import torch
import torch.nn.functional as F

import llmlab
from llmlab.common import checkpoint
from llmlab.common.constants import IGNORE_INDEX
from llmlab.common.errors import UserError
from llmlab.models.config import ModelConfig
from llmlab.models.gpt import Transformer
from llmlab.multimodal import shapes
from llmlab.multimodal.vit import ViTConfig
from llmlab.multimodal.vlm import (
    VLM,
    GatedCrossAttention,
    PretrainedVLM,
    VLMConfig,
    decoder_logits,
    generate,
    make_batch,
    prefix_lm_mask,
    save_vlm,
    vlm_loss,
)
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train("\n".join(shapes.all_texts()), 320, special_tokens=["<|endoftext|>", "<|pad|>"])


def decoder_config(vocab: int, **kw) -> dict:
    return ModelConfig(vocab_size=vocab, seq_len=64, n_layer=2, n_head=4, n_embd=32, pos="rope", norm="rmsnorm",
                       mlp="swiglu", bias=False, **kw).to_dict()


def tiny_vlm(tok, fusion="early", **kw) -> VLM:
    torch.manual_seed(0)
    vision = ViTConfig(image_size=64, patch_size=16, n_layer=1, n_head=2, n_embd=16, pos="sincos2d").to_dict()
    return VLM(VLMConfig(fusion=fusion, vision=vision, decoder=decoder_config(tok.vocab_size), **kw)).eval()


def reference_mask(prefix: list[int], lengths: list[int], T: int) -> torch.Tensor:
    out = torch.zeros(len(prefix), 1, T, T, dtype=torch.bool)
    for b, (p, n) in enumerate(zip(prefix, lengths, strict=True)):
        for q in range(T):
            for k in range(T):
                out[b, 0, q, k] = (q < n and k < n and (k < p or k <= q)) or q == k
    return out


def test_prefix_lm_mask():
    got = prefix_lm_mask(torch.tensor([2, 0, 4]), torch.tensor([4, 3, 5]), 5)
    assert torch.equal(got, reference_mask([2, 0, 4], [4, 3, 5], 5))
    assert got[0, 0].int().tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0],
                                        [0, 0, 0, 0, 1]]


def test_decoder_logits_equals_transformer_forward():
    torch.manual_seed(0)
    for pos in ("rope", "learned"):
        model = Transformer(ModelConfig(vocab_size=50, seq_len=16, n_layer=2, n_head=2, n_embd=16, pos=pos)).eval()
        idx = torch.randint(0, 50, (2, 9))
        with torch.no_grad():
            torch.testing.assert_close(decoder_logits(model, model.tok_emb(idx), None), model(idx))
            mask = prefix_lm_mask(torch.zeros(2, dtype=torch.long), torch.tensor([9, 9]), 9)
            torch.testing.assert_close(decoder_logits(model, model.tok_emb(idx), mask), model(idx), atol=1e-5,
                                       rtol=0)


def test_early_fusion_is_a_prefix_lm(tok):
    model = tiny_vlm(tok, "early")
    idx, _, images, prompt_lens, lengths = make_batch(tok, shapes.pixels([shapes.scenes(1, 0)[0].render()]),
                                                      ["what color is the circle?"], ["red"])
    features = model.image_features(images)
    P = int(prompt_lens[0])
    with torch.no_grad():
        base = model(idx, prompt_lens, lengths, features)
        late_prompt = idx.clone()
        late_prompt[0, P - 2] = (late_prompt[0, P - 2] + 1) % tok.vocab_size
        changed = model(late_prompt, prompt_lens, lengths, features)
        assert (changed[0, 0] - base[0, 0]).abs().max() > 1e-4  # the first prompt token sees a later one
        answer = idx.clone()
        answer[0, P + 1] = (answer[0, P + 1] + 1) % tok.vocab_size
        torch.testing.assert_close(model(answer, prompt_lens, lengths, features)[0, :P + 1], base[0, :P + 1])
        other = model.image_features(torch.flip(images, dims=[-1]) * 0.5)
        assert (model(idx, prompt_lens, lengths, other) - base).abs().max() > 1e-4  # the image is read


def test_late_fusion_starts_as_the_decoder(tok):
    model = tiny_vlm(tok, "late")
    assert sorted(model.cross) == ["1"]  # the upper half of two blocks
    idx, _, images, prompt_lens, lengths = make_batch(tok, shapes.pixels([s.render() for s in shapes.scenes(2, 0)]),
                                                      ["caption", "how many shapes are there?"], ["a", "two"])
    features = model.image_features(images)
    with torch.no_grad():
        got = model(idx, prompt_lens, lengths, features)
        alone = model.decoder(idx, attn_mask=torch.arange(idx.shape[1])[None] < lengths[:, None])
        for b in range(2):  # tanh(0) = 0: the image changes nothing until training opens the gates
            torch.testing.assert_close(got[b, :lengths[b]], alone[b, :lengths[b]], atol=1e-5, rtol=0)
        model.cross["1"].attn_gate.fill_(1.0)
        assert (model(idx, prompt_lens, lengths, features) - got).abs().max() > 1e-4


def test_cross_attention_paths_agree():
    torch.manual_seed(0)
    layer = GatedCrossAttention(ModelConfig(vocab_size=10, n_layer=1, n_head=4, n_embd=32, norm="rmsnorm",
                                            mlp="swiglu", bias=False))
    with torch.no_grad():
        layer.attn_gate.fill_(0.7)
        x, image = torch.randn(2, 5, 32), torch.randn(2, 16, 32)
        fast = layer(x, image)
        layer.keep_weights = True
        torch.testing.assert_close(layer(x, image), fast, atol=1e-5, rtol=0)
    assert layer.last_weights.shape == (2, 4, 5, 16)
    torch.testing.assert_close(layer.last_weights.sum(-1), torch.ones(2, 4, 5))


def test_batch_targets_and_loss(tok):
    model = tiny_vlm(tok, "early")
    batch = make_batch(tok, torch.zeros(2, 3, 64, 64), ["caption", "how many shapes are there?"],
                       ["a red circle", "one"])
    idx, targets, _, prompt_lens, lengths = batch
    for b in range(2):
        P, n = int(prompt_lens[b]), int(lengths[b])
        assert tok.decode(idx[b, :P].tolist()).endswith("\n") and idx[b, n - 1] == tok.eos_id
        assert torch.equal(targets[b, P - 1:n - 1], idx[b, P:n])  # next token, on the answer and end of text
        assert (targets[b, :P - 1] == IGNORE_INDEX).all() and (targets[b, n - 1:] == IGNORE_INDEX).all()
    full = model(idx, prompt_lens, lengths, model.image_features(batch[2]))  # (B, L, V)
    keep = targets != IGNORE_INDEX
    torch.testing.assert_close(vlm_loss(model, batch), F.cross_entropy(full[keep], targets[keep]), atol=1e-5, rtol=0)
    assert tok.decode(idx[0, prompt_lens[0]:lengths[0] - 1].tolist()) == "a red circle"


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_save_and_llmlab_load(tmp_path, tok, fusion):
    model = tiny_vlm(tok, fusion)
    if fusion == "late":
        with torch.no_grad():
            model.cross["1"].attn_gate.fill_(0.5)
    scene = shapes.scenes(1, 5)[0]
    want = generate(model, tok, shapes.pixels([scene.render()] * 2), ["caption", "what color is the circle?"])
    save_vlm(tmp_path / "run" / "checkpoint", model, tok, {"run": {}})
    loaded = llmlab.load(tmp_path / "run")
    assert isinstance(loaded, PretrainedVLM)
    scene.render().save(tmp_path / "img.png")
    assert loaded.describe(tmp_path / "img.png") == want[0]
    assert loaded.describe(scene.render(), "what color is the circle?") == want[1]
    with pytest.raises(UserError, match="no such image"):
        loaded.describe(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read"):
        loaded.describe(tmp_path / "bad.png")
    with pytest.raises(UserError, match="empty"):
        loaded.describe(scene.render(), "  ")
    with pytest.raises(UserError, match="one prompt per image"):
        generate(model, tok, shapes.pixels([scene.render()]), ["caption", "caption"])


def test_frozen_base_decoder_is_not_saved(tmp_path, tok):
    torch.manual_seed(1)
    base = Transformer(ModelConfig.from_dict(decoder_config(tok.vocab_size)))
    checkpoint.save_checkpoint(tmp_path / "base", base, {}, tokenizer=tok)
    torch.manual_seed(0)
    vision = ViTConfig(image_size=64, patch_size=16, n_layer=1, n_head=2, n_embd=16).to_dict()
    config = VLMConfig(fusion="late", vision=vision, decoder=base.config.to_dict(), decoder_base=str(tmp_path / "base"))
    model = VLM(config, base)
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.cross.parameters()) and model.projector.up_proj.weight.requires_grad
    save_vlm(tmp_path / "vlm", model, tok, {})
    saved = __import__("safetensors.torch").torch.load_file(tmp_path / "vlm" / checkpoint.WEIGHTS_FILE)
    assert not any(k.startswith("decoder.") for k in saved) and any(k.startswith("cross.") for k in saved)
    loaded = llmlab.load(tmp_path / "vlm")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k


def test_bad_config():
    with pytest.raises(UserError, match="fusion"):
        VLMConfig(fusion="middle", decoder={"n_layer": 2})
    with pytest.raises(UserError, match="cross_layers"):
        VLMConfig(fusion="late", decoder={"n_layer": 2}, cross_layers=[2])
    with pytest.raises(UserError, match="token_merge"):
        VLMConfig(vision={"image_size": 64, "patch_size": 8}, decoder={"n_layer": 2}, token_merge=3)
    with pytest.raises(UserError, match="unknown field"):
        VLMConfig.from_dict({"fusions": "early"})
