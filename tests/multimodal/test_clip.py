"""CLIP-style training: the loss equals transformers' CLIP loss, zero-shot is a cosine argmax, batches are
true negatives, a few steps on one batch fit it, bad input."""

import pytest
import torch
import torch.nn.functional as F

from llmlab.common.errors import UserError
from llmlab.multimodal import shapes
from llmlab.multimodal.clip import CLIP, CLIPConfig, clip_loss, distinct_scenes, tokenize, zero_shot
from llmlab.multimodal.vit import ViTConfig
from llmlab.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train("\n".join(shapes.all_texts()), 320, special_tokens=["<|endoftext|>", "<|pad|>"])


def tiny(tok) -> CLIP:
    torch.manual_seed(0)
    vision = ViTConfig(image_size=64, patch_size=16, n_layer=1, n_head=2, n_embd=32, pos="sincos2d").to_dict()
    text = dict(vocab_size=tok.vocab_size, seq_len=16, n_layer=1, n_head=2, n_embd=32, pad_id=tok.pad_id)
    return CLIP(CLIPConfig(vision=vision, text=text, embed_dim=16))


def test_loss_equals_transformers():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    logits_per_image = torch.randn(7, 7) * 5
    torch.testing.assert_close(clip_loss(logits_per_image), image_text_contrastive_loss(logits_per_image.T))


def test_logits_are_scaled_cosines(tok):
    model = tiny(tok).eval()
    scenes = shapes.scenes(4, 0)
    images = shapes.pixels([s.render() for s in scenes])
    idx, mask = tokenize(tok, [s.caption for s in scenes], 16)
    with torch.no_grad():
        logits = model(images, idx, mask)
        img = F.normalize(model.vision_proj(model.vision.encode(images)[:, 0]), dim=-1)
        hidden = model.text.encode(idx, mask)
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        txt = F.normalize(model.text_proj(mean), dim=-1)
    torch.testing.assert_close(logits, (1 / 0.07) * img @ txt.T, atol=1e-4, rtol=1e-5)
    probs = zero_shot(model, tok, images, [[s.caption] for s in scenes])
    torch.testing.assert_close(probs, logits.softmax(-1), atol=1e-5, rtol=1e-4)


def test_a_batch_is_learned(tok):
    model = tiny(tok)
    batch = distinct_scenes(shapes.scene_stream(0, "train"), 8)
    assert len({s.caption for s in batch}) == 8
    images = shapes.pixels([s.render() for s in batch])
    idx, mask = tokenize(tok, [s.caption for s in batch], 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(70):
        loss = clip_loss(model(images, idx, mask))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]  # from ~log(8) = 2.08: it tells the eight pairs apart


def test_bad_input(tok):
    with pytest.raises(UserError, match="different captions"):
        distinct_scenes(shapes.scene_stream(0, "train", (1,)), 19, max_tries=500)  # only 18 one-shape captions
    with pytest.raises(UserError, match="no texts"):
        tokenize(tok, [], 16)
    with pytest.raises(UserError, match="unknown field"):
        CLIPConfig.from_dict({"embed": 3})
