"""`llmlab finetune` end to end on a tiny model in a temp dir: every method runs, resumes exactly, and every
output folder reopens with `llmlab.load` as the model was when training ended."""

import json
import shutil

import pytest
import torch

import llmlab
import llmlab.infer.classify
from llmlab.cli import main
from llmlab.common import log
from llmlab.common.checkpoint import save_checkpoint
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import LoRALinear
from llmlab.finetune.methods import SFT_METHODS
from llmlab.infer import generate
from llmlab.models import Transformer, get_preset
from llmlab.quantize import QuantizedLinear
from llmlab.recipes.classify import ClassifyArgs
from llmlab.recipes.classify import run as classify
from llmlab.recipes.finetune import CompareArgs, FinetuneArgs, compare
from llmlab.recipes.finetune import run as finetune
from llmlab.tokenizer import Tokenizer


def make_base(path) -> str:
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=128))
    save_checkpoint(path, model, {}, tokenizer=tok)
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    log.set_quiet(True)
    return make_base(tmp_path_factory.mktemp("base") / "tiny")


def cfg(base, out, **kw):
    args = dict(model=base, data="tasks", out=str(out), n_train=48, eval_examples=4, max_new_tokens=4,
                max_steps=3, batch_size=2, seq_len=128, warmup_steps=1, ckpt_interval=2, progress=False)
    return FinetuneArgs(**{**args, **kw})


IDX = torch.randint(3, 320, (2, 12), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDX)


@pytest.mark.parametrize("method", SFT_METHODS)
def test_every_method_trains_and_its_output_reopens(base, tmp_path, method):
    out = tmp_path / method
    lr = {"full": 1e-3}.get(method)  # big enough steps that a wrongly loaded output would show
    s = finetune(cfg(base, out, method=method, targets=["q_proj", "v_proj"], rank=4, lr=lr))
    assert s["steps"] == 3 and 0 < s["trainable_params"] <= s["total_params"]
    assert s["exact_match_before"] is not None and s["exact_match_after"] is not None
    assert json.loads((out / "summary.json").read_text())["method"] == method
    loaded = llmlab.load(out)
    trained = logits(s["model"])
    torch.testing.assert_close(logits(loaded.model), trained, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(llmlab.load(base).model), trained, atol=1e-4)
    # greedy generation from the reopened folder is the in-process model's
    assert loaded.generate(IDX[0].tolist(), 6, temperature=0) == generate(s["model"], IDX[0], 6,
                                                                                          temperature=0)
    if method in ("lora", "qlora"):
        assert (out / "adapter_config.json").is_file()
        assert isinstance(loaded.model.blocks[0].attn.q_proj, LoRALinear)
    if method == "qlora":
        assert s["base_weight_bytes"]["nf4"] < s["base_weight_bytes"]["bfloat16"] / 3
        assert isinstance(loaded.model.blocks[0].attn.k_proj, QuantizedLinear)


def test_lora_resume_is_exact_and_merge_keeps_the_logits(base, tmp_path):
    full = finetune(cfg(base, tmp_path / "a", max_steps=4))
    finetune(cfg(base, tmp_path / "b", max_steps=2))
    resumed = finetune(cfg(base, tmp_path / "b", max_steps=4, resume=True))
    losses = lambda d: [r["loss"] for r in json.loads((d / "history.json").read_text())]  # noqa: E731
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-6)
    assert resumed["steps"] == full["steps"] == 4
    with pytest.raises(UserError, match="other settings"):
        finetune(cfg(base, tmp_path / "b", max_steps=6, resume=True, rank=4))
    with pytest.raises(UserError, match="not empty"):
        finetune(cfg(base, tmp_path / "b"))
    expected = logits(llmlab.load(tmp_path / "a").model)
    assert main(["merge", str(tmp_path / "a"), "--out", str(tmp_path / "merged")]) == 0
    torch.testing.assert_close(logits(llmlab.load(tmp_path / "merged").model), expected, atol=1e-5, rtol=0)
    # the PEFT folder alone (no checkpoint/) opens as base + adapter too
    shutil.rmtree(tmp_path / "a" / "checkpoint")
    torch.testing.assert_close(logits(llmlab.load(tmp_path / "a").model), expected, atol=1e-5, rtol=0)


def test_qlora_merges_into_float_weights(base, tmp_path):
    s = finetune(cfg(base, tmp_path / "q", method="qlora", eval_examples=0))
    assert main(["merge", str(tmp_path / "q")]) == 0
    merged = llmlab.load(tmp_path / "q-merged").model
    assert not any(isinstance(m, (QuantizedLinear, LoRALinear)) for m in merged.modules())
    torch.testing.assert_close(logits(merged), logits(s["model"]), atol=1e-4, rtol=0)


def test_a_missing_base_is_one_line_naming_it(tmp_path, capsys):
    base = make_base(tmp_path / "base")
    finetune(cfg(base, tmp_path / "p", method="prompt", eval_examples=0, max_steps=1))
    shutil.rmtree(base)
    with pytest.raises(UserError, match=f"cannot load its base model '{base}'"):
        llmlab.load(tmp_path / "p")
    assert main(["generate", "--checkpoint", str(tmp_path / "p"), "--prompt", "hi"]) == 2
    assert "cannot load its base model" in capsys.readouterr().err


def test_cli_bad_data_row_is_one_line(base, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    rc = main(["finetune", "--model", base, "--data", str(data), "--out", str(tmp_path / "o"), "--max-steps", "1",
               "--no-progress"])
    assert rc == 2 and "d.jsonl:2: missing field 'completion'" in capsys.readouterr().err


def test_compare_writes_a_table(base, tmp_path):
    rows = compare(CompareArgs(model=base, methods=["lora", "prompt"], out=str(tmp_path), max_steps=2, batch_size=2,
                               seq_len=128, n_train=24, eval_examples=2, isolate=False))
    assert [r["method"] for r in rows] == ["lora", "prompt"] and "model" not in rows[0]
    text = (tmp_path / "compare.md").read_text()
    assert "| lora |" in text and "exact match after" in text


def test_classifier_reopens_and_classifies(base, tmp_path, capsys):
    s = classify(ClassifyArgs(model=base, out=str(tmp_path / "c"), n_train=60, max_steps=4, batch_size=8,
                              lr=1e-3, progress=False))
    assert s["classes"] == ["arithmetic", "conversion", "string"] and s["held_out"] == 12
    assert sum(map(sum, s["confusion_matrix"])) == 12 and (tmp_path / "c" / "summary.json").is_file()
    loaded = llmlab.load(tmp_path / "c")
    texts = ["Convert 3 hours to minutes.", "Reverse the letters of 'apple'.", "Mia has 3 pens and buys 2 more."]
    labels, probs = loaded.classify(texts)
    expected = llmlab.infer.classify.class_probabilities(s["model"], s["tokenizer"], texts, 128)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert labels == [s["classes"][i] for i in expected.argmax(-1).tolist()]
    assert probs.shape == (3, 3) and torch.allclose(probs.sum(-1), torch.ones(3))
    with pytest.raises(UserError, match="classification head"):
        loaded.generate("hi", 3)
    data = tmp_path / "c.jsonl"
    data.write_text('{"text": "buy now", "label": "spam"}\n{"text": "hi"}\n')
    assert main(["finetune", "classify", "--model", base, "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "c.jsonl:2: missing field" in capsys.readouterr().err


def test_full_finetune_resumes_exactly(base, tmp_path):
    finetune(cfg(base, tmp_path / "a", method="full", max_steps=3, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="full", max_steps=2, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="full", max_steps=3, eval_examples=0, resume=True))
    losses = lambda d: [r["loss"] for r in json.loads((d / "history.json").read_text())]  # noqa: E731
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-6)
    assert llmlab.load(tmp_path / "b").model.config.n_layer == 2


def test_prompt_tuning_resumes_exactly(base, tmp_path):
    finetune(cfg(base, tmp_path / "a", method="prompt", max_steps=3, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="prompt", max_steps=2, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="prompt", max_steps=3, eval_examples=0, resume=True))
    losses = lambda d: [r["loss"] for r in json.loads((d / "history.json").read_text())]  # noqa: E731
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-6)
