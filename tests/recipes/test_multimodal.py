"""`llmlab multimodal train|ask|compare|vit|clip` end to end on tiny budgets, and their one-line errors."""

import json

import pytest
import torch

import llmlab
from llmlab.common import checkpoint
from llmlab.common.errors import UserError
from llmlab.models import ModelConfig, Transformer
from llmlab.multimodal import shapes, tasks
from llmlab.multimodal.vit import ViT, ViTConfig
from llmlab.recipes.multimodal import AskArgs, CLIPArgs, CompareArgs, TrainArgs, ViTArgs, ask, clip, compare, train, vit
from llmlab.tokenizer import Tokenizer

TINY = dict(max_steps=3, vision_steps=2, batch_size=4, eval_images=3, patch_size=16, vision_layers=1, vision_width=16,
            n_layer=2, n_embd=32, n_head=2, device="cpu", progress=False)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_train_saves_what_llmlab_load_reopens(tmp_path, fusion, capsys):
    out = tmp_path / "run"
    result = train(TrainArgs(out=str(out), fusion=fusion, **TINY))
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "loss.png").is_file() and summary["steps"] == 3 and summary["vision_steps"] == 2
    assert summary["n_trained"] == summary["n_params"]  # from scratch: everything trains
    loaded = llmlab.load(out)
    # the saved model scores what the run reported: same held-out images, same greedy answers
    again = tasks.score_vlm(loaded.model, loaded.tokenizer, 3)
    assert {k: again[k] for k in ("caption_em_1", "caption_em_2", "vqa_accuracy")} == \
        {k: summary[k] for k in ("caption_em_1", "caption_em_2", "vqa_accuracy")}
    scene = shapes.scenes(1, 99, "test")[0]
    scene.render().save(tmp_path / "shape.png")
    said = ask(AskArgs(model=str(out), image=str(tmp_path / "shape.png"), question=["how", "many shapes are there?"]))
    assert capsys.readouterr().out.strip() == said
    assert said == loaded.describe(scene.render(), "how many shapes are there?")
    assert result["tokenizer"].encode(said) == loaded.tokenizer.encode(said)
    assert ask(AskArgs(model=str(out), image=str(tmp_path / "shape.png"))) == loaded.describe(tmp_path / "shape.png")


def test_ask_question_is_optional_on_the_command_line():
    import argparse

    from llmlab.common.config import add_dataclass_arguments

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, AskArgs)
    assert parser.parse_args(["--model", "m", "--image", "x.png"]).question == []
    assert parser.parse_args(["--model", "m", "--image", "x.png", "what", "color?"]).question == ["what", "color?"]


def test_compare_writes_report(tmp_path):
    summary = compare(CompareArgs(out=str(tmp_path), **TINY))
    assert set(summary) == {"early", "late"} and "gates" in summary["late"]
    assert summary["late"]["n_params"] > summary["early"]["n_params"]  # the cross-attention layers
    for name in ("report.md", "samples.png", "attention_0.png", "early/summary.json", "late/checkpoint/llmlab.json"):
        assert (tmp_path / name).is_file(), name
    assert "| early |" in (tmp_path / "report.md").read_text()


def test_vit_pretrains_then_finetunes(tmp_path):
    summary = vit(ViTArgs(out=str(tmp_path), steps=3, finetune_steps=2, batch_size=4, n_layer=1, n_embd=16,
                          n_head=2, device="cpu", progress=False))
    for key in ("accuracy", "finetuned_accuracy", "scratch_accuracy"):
        assert 0.0 <= summary[key] <= 1.0
    meta = checkpoint.read_meta(tmp_path / "finetuned")
    assert meta["classes"] == tasks.LABELS["color+shape"][0]
    model = ViT(ViTConfig.from_dict(meta["model"]))
    checkpoint.load_weights(model, tmp_path / "finetuned")
    assert tasks.accuracy(model, "color+shape") == pytest.approx(summary["finetuned_accuracy"])
    # llmlab.load reopens both classifiers with their own label names, scoring what the run reported
    test = shapes.scenes(300, 1234, "test", (1,))
    for folder, label_set, key in (("pretrained", "shape", "accuracy"), ("finetuned", "color+shape",
                                                                         "finetuned_accuracy")):
        loaded = llmlab.load(tmp_path / folder)
        classes, label = tasks.LABELS[label_set]
        assert loaded.classes == classes
        predicted, probs = loaded.classify([s.render() for s in test])
        assert probs.shape == (300, len(classes)) and torch.allclose(probs.sum(-1), torch.ones(300))
        accuracy = sum(p == label(s) for p, s in zip(predicted, test, strict=True)) / len(test)
        assert accuracy == pytest.approx(summary[key])
    path = tmp_path / "one.png"
    test[0].render().save(path)
    assert loaded.classify(path)[0] == loaded.classify([test[0].render()])[0]
    with pytest.raises(UserError, match="no such image file"):
        loaded.classify(tmp_path / "missing.png")


def test_clip_zero_shot(tmp_path):
    summary = clip(CLIPArgs(out=str(tmp_path), max_steps=3, batch_size=6, n_layer=1, n_embd=16, embed_dim=8,
                            device="cpu", progress=False))
    assert set(summary["zero_shot_accuracy"]) == {"color+shape", "shape", "color"}
    assert summary["chance"]["shape"] == pytest.approx(1 / 3)
    assert (tmp_path / "checkpoint" / checkpoint.WEIGHTS_FILE).is_file() and (tmp_path / "report.md").is_file()
    loaded = llmlab.load(tmp_path)  # the run folder opens its checkpoint
    test = shapes.scenes(300, 1234, "test", (1,))
    labels = tasks.LABELS["color+shape"][0]
    predicted, probs = loaded.classify([s.render() for s in test], labels)
    assert probs.shape == (300, len(labels))
    accuracy = sum(p == s.caption for p, s in zip(predicted, test, strict=True)) / len(test)
    assert accuracy == pytest.approx(summary["zero_shot_accuracy"]["color+shape"])
    image, text = loaded.embed_images(test[0].render()), loaded.embed_texts([test[0].caption, "a blue square"])
    assert image.shape == (1, 8) and text.shape == (2, 8)
    assert torch.allclose(image.norm(dim=-1), torch.ones(1)) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    with pytest.raises(UserError, match="at least one label"):
        loaded.classify(test[0].render(), [])


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="--max-steps"):
        train(TrainArgs(out=str(tmp_path / "a"), **{**TINY, "max_steps": 0}))
    with pytest.raises(UserError, match="--caption-share"):
        train(TrainArgs(out=str(tmp_path / "a"), caption_share=1.5, **TINY))
    with pytest.raises(UserError, match="--vision-steps"):
        train(TrainArgs(out=str(tmp_path / "a"), **{**TINY, "vision_steps": -1}))
    with pytest.raises(UserError, match="--new-labels"):
        vit(ViTArgs(out=str(tmp_path / "v"), labels="shape", new_labels="shape"))
    with pytest.raises(UserError, match="--batch-size"):
        clip(CLIPArgs(out=str(tmp_path / "c"), batch_size=500))
    plain = tmp_path / "plain"
    tok = Tokenizer.train("\n".join(shapes.all_texts()), 300)
    checkpoint.save_checkpoint(plain, Transformer(ModelConfig(vocab_size=300, seq_len=16, n_layer=1, n_head=2,
                                                              n_embd=16)), {}, tokenizer=tok)
    with pytest.raises(UserError, match="not a vision-language model"):
        ask(AskArgs(model=str(plain), image="x.png"))
