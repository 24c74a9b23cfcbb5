"""`llmlab fundamentals autograd|backprop|ngram` on small inputs: each writes its plot, report and JSON with sane
numbers, and a bad flag is a one-line UserError."""

import json
import math

import pytest

from llmlab.common.errors import UserError
from llmlab.recipes.fundamentals import AutogradArgs, BackpropArgs, NgramArgs, autograd, backprop, ngram


def outputs_exist(out, name):
    assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "report.md").read_text().startswith("# ")
    return json.loads((out / f"{name}.json").read_text())


def test_autograd(tmp_path):
    result = autograd(AutogradArgs(out=str(tmp_path), n_samples=30, hidden=[6], steps=15))
    saved = outputs_exist(tmp_path, "autograd")
    assert saved["final_loss"] == result["final_loss"] < saved["losses"][0]
    assert result["final_accuracy"] > 0.7
    assert result["max_abs_grad_diff_vs_torch"] < 1e-9


def test_backprop(tmp_path, corpus_dir):
    result = backprop(BackpropArgs(data=[str(corpus_dir)], out=str(tmp_path), n_embd=32, n_head=4, seq_len=32,
                                   batch_size=8, steps=25, lr=1e-2, max_chars=100_000))
    saved = outputs_exist(tmp_path, "backprop")
    assert saved["max_abs_diff_at_init"] < 1e-4 and saved["max_abs_diff_trained"] < 1e-4
    assert result["loss_manual"] == pytest.approx(result["loss_autograd"], rel=1e-5)
    assert result["loss_manual"] == pytest.approx(math.log(256), rel=0.1)  # near uniform over bytes at init
    assert sum(result["train_losses"][-5:]) / 5 < result["train_losses"][0] - 0.5


def test_ngram(tmp_path, corpus_dir):
    result = ngram(NgramArgs(data=[str(corpus_dir)], out=str(tmp_path), orders=[1, 2, 4], smoothing=["addk", "mkn"],
                             max_train_chars=40_000, max_val_chars=8_000, sample_chars=40, neural_steps=30,
                             neural_embd=32, neural_seq_len=32, batch_size=8, device="cpu"))
    saved = outputs_exist(tmp_path, "ngram")
    assert [(r["smoothing"], r["n"]) for r in saved["rows"]] == [("addk", 1), ("addk", 2), ("addk", 4), ("mkn", 1),
                                                                   ("mkn", 2), ("mkn", 4)]
    for r in result["rows"]:
        assert 1 < r["val_ppl"] < result["vocab_size"] and math.isfinite(r["val_bpc"])
    mkn = [r for r in result["rows"] if r["smoothing"] == "mkn"]
    assert mkn[2]["val_bpc"] < mkn[0]["val_bpc"]
    neural = result["neural"]
    assert neural["chars"] == result["val_chars"]  # scored on exactly the characters the n-grams predict
    assert 0 < neural["val_bpc"] < math.log2(result["vocab_size"] + 1) + 0.5
    assert len(result["sample"]) == 40
    assert "Transformer" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("run, args, flag", [
    (autograd, AutogradArgs(steps=0), "--steps"),
    (autograd, AutogradArgs(hidden=[0]), "--hidden"),
    (backprop, BackpropArgs(n_embd=30, n_head=4), "--n-head"),
    (backprop, BackpropArgs(data=["/nonexistent/corpus"]), "/nonexistent/corpus"),
    (ngram, NgramArgs(orders=[0, 2]), "--orders"),
    (ngram, NgramArgs(smoothing=["good-turing"]), "--smoothing"),
    (ngram, NgramArgs(k=0), "--k"),
    (ngram, NgramArgs(neural_embd=30), "--neural-embd"),
])
def test_bad_input_is_one_line(run, args, flag, tmp_path):
    args.out = str(tmp_path)
    with pytest.raises(UserError) as e:
        run(args)
    assert flag in str(e.value) and "\n" not in str(e.value)
