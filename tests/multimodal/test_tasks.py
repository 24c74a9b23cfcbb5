"""Training batches carry the right answers, labels match the scenes, attention maps are distributions."""

import torch

from llmlab.common.constants import IGNORE_INDEX
from llmlab.models.config import ModelConfig
from llmlab.multimodal import shapes, tasks
from llmlab.multimodal.vit import ViTConfig
from llmlab.multimodal.vlm import VLM, VLMConfig
from llmlab.tokenizer import Tokenizer


def test_vlm_batches_decode_to_captions_and_answers():
    tok = Tokenizer.train("\n".join(shapes.all_texts()), 320, special_tokens=["<|endoftext|>", "<|pad|>"])
    idx, targets, images, prompt_lens, lengths = tasks.vlm_batches(tok, 16, seed=3, caption_share=0.5)()
    scenes = shapes.scenes(16, 3)  # the same stream the batches draw from
    assert torch.equal(images, shapes.pixels([s.render() for s in scenes]))
    kinds = set()
    for b, scene in enumerate(scenes):
        prompt = tok.decode(idx[b, :prompt_lens[b]].tolist()).strip()
        answer = tok.decode([t for t in targets[b].tolist() if t not in (IGNORE_INDEX, tok.eos_id)])
        assert (prompt, answer) == (shapes.CAPTION_PROMPT, scene.caption) or (prompt, answer) in scene.questions()
        kinds.add(prompt == shapes.CAPTION_PROMPT)
    assert kinds == {True, False}


def test_class_batches_label_the_scene():
    images, labels = tasks.class_batches("color+shape", 8, seed=1)()
    scenes = shapes.scenes(8, 1, n_shapes=(1,))
    assert torch.equal(images, shapes.pixels([s.render() for s in scenes]))
    assert [tasks.LABELS["color+shape"][0][i] for i in labels] == [s.caption for s in scenes]


def test_patch_attention_is_a_distribution_over_patches():
    tok = Tokenizer.train("\n".join(shapes.all_texts()), 320, special_tokens=["<|endoftext|>", "<|pad|>"])
    vision = ViTConfig(image_size=64, patch_size=8, n_layer=1, n_head=2, n_embd=16).to_dict()
    decoder = ModelConfig(vocab_size=tok.vocab_size, seq_len=64, n_layer=2, n_head=2, n_embd=32).to_dict()
    scene = shapes.scenes(1, 0)[0]
    for fusion, keep_cls in (("early", True), ("late", True), ("late", False)):
        torch.manual_seed(0)
        model = VLM(VLMConfig(fusion=fusion, vision=vision, decoder=decoder, keep_cls=keep_cls))
        grid = tasks.patch_attention(model, tok, scene, scene.caption)
        assert grid.shape == (4, 4) and (grid >= 0).all()
        if keep_cls or fusion == "early":  # [CLS] or text keys take the rest of the attention
            assert 0 < float(grid.sum()) < 1
        else:  # cross-attention over the patches alone
            assert abs(float(grid.sum()) - 1) < 1e-5
