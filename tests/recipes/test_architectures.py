"""The encoder recipes on tiny budgets: MLM and span-corruption pretraining, and the translation comparison."""

import json
import math

import pytest
import torch

import llmlab
from llmlab.common.errors import UserError
from llmlab.models.bert import Bert
from llmlab.models.t5 import T5
from llmlab.recipes.architectures import MLMArgs, SpanArgs, TranslateArgs, mlm, span, translate

TINY = dict(max_chars=60_000, vocab_size=300, seq_len=32, n_layer=1, n_head=2, n_embd=32, batch_size=8,
            max_steps=6, warmup_steps=2, eval_batches=2, device="cpu", progress=False)


def test_mlm_trains_saves_and_reopens(tmp_path, corpus_dir):
    summary = mlm(MLMArgs(out=str(tmp_path / "mlm"), corpus=[str(corpus_dir)], **TINY))
    assert summary["steps"] == 6 and 0 <= summary["heldout_accuracy"] <= 1
    assert summary["final_train_loss"] < summary["model"].config.vocab_size  # finite
    assert summary["recent_train_loss"] == pytest.approx(summary["final_train_loss"])  # 6 steps: the last tenth is 1
    loaded = llmlab.load(tmp_path / "mlm")
    assert isinstance(loaded.model, Bert)
    ids = torch.tensor([[loaded.tokenizer.special_tokens["<|cls|>"], 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids), summary["model"].eval()(ids))
    assert (tmp_path / "mlm" / "loss.png").is_file()


def test_mlm_learns_beyond_chance(tmp_path, corpus_dir):
    args = dict(TINY, max_steps=150, n_embd=64, lr=3e-3, warmup_steps=20, eval_batches=8)
    summary = mlm(MLMArgs(out=str(tmp_path / "mlm"), corpus=[str(corpus_dir)], **args))
    uniform = math.log(summary["model"].config.vocab_size)  # 5.7 nats: a model that learned nothing
    assert summary["heldout_loss"] < uniform - 0.7 and summary["heldout_accuracy"] > 0.08, summary


def test_span_corruption_trains_and_reopens(tmp_path, corpus_dir):
    summary = span(SpanArgs(out=str(tmp_path / "span"), corpus=[str(corpus_dir)], **TINY))
    loaded = llmlab.load(tmp_path / "span")
    assert isinstance(loaded.model, T5) and summary["objective"] == "span_corruption"
    src, dec = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[0, 9]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(src, dec), summary["model"].eval()(src, dec))


def test_translate_compares_three_models(tmp_path):
    pytest.importorskip("num2words")
    out = tmp_path / "tr"
    summary = translate(TranslateArgs(out=str(out), max_number=60, vocab_size=300, n_embd=32, n_head=2,
                                      enc_layers=1, dec_layers=1, decoder_only_layers=2, batch_size=8, max_steps=8,
                                      classify_steps=4, warmup_steps=2, device="cpu", progress=False))
    assert set(summary["models"]) == {"encoder-decoder", "decoder-only"}
    for r in summary["models"].values():
        assert 0 <= r["bleu"] <= 100 and 0 <= r["exact_match"] <= 1
    assert 0 <= summary["encoder_parity"]["accuracy"] <= 1
    for name in ("report.md", "summary.json", "cross_attention.png", "decoder_self_attention.png", "loss_curves.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["test_pairs"] == 12
    assert isinstance(llmlab.load(out / "encoder_decoder").model, T5)
    assert isinstance(llmlab.load(out / "encoder").model, Bert)
    assert llmlab.load(out / "decoder_only").generate("seven", 4, temperature=0) is not None


def test_bad_arguments(tmp_path, corpus_dir):
    with pytest.raises(UserError, match="seq-len"):
        mlm(MLMArgs(out=str(tmp_path / "x"), corpus=[str(corpus_dir)], **dict(TINY, seq_len=100_000)))
    with pytest.raises(UserError):
        translate(TranslateArgs(out=str(tmp_path / "y"), max_number=3))
