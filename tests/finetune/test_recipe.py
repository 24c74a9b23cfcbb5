"""`llmlab finetune` end to end on a tiny model in a temp dir: every method runs, LoRA resumes exactly,
the output folder opens as base + adapter, and merge writes a loadable checkpoint."""

import json

import pytest
import torch

import llmlab
from llmlab.cli import main
from llmlab.common import log
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import LoRALinear
from llmlab.finetune.trainer import METHODS, FinetuneConfig, finetune
from llmlab.models import Transformer, get_preset
from llmlab.models.pretrained import load
from llmlab.tokenizer import Tokenizer
from llmlab.train.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    log.set_quiet(True)
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=128))
    path = tmp_path_factory.mktemp("base") / "tiny"
    save_checkpoint(path, model, tok, {})
    return str(path)


def cfg(base, out, **kw):
    args = dict(model=base, data="tasks", out=str(out), n_train=48, eval_examples=4, max_new_tokens=4,
                max_steps=3, batch_size=2, seq_len=128, warmup_steps=1, ckpt_interval=2, progress=False)
    return FinetuneConfig(**{**args, **kw})


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs(base, tmp_path, method):
    s = finetune(cfg(base, tmp_path / method, method=method, targets=["q_proj", "v_proj"], rank=4))
    assert s["steps"] == 3 and 0 < s["trainable_params"] <= s["total_params"]
    assert s["exact_match_before"] is not None and s["exact_match_after"] is not None
    assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method
    if method in ("lora", "qlora"):
        assert (tmp_path / method / "adapter_config.json").is_file()
    if method == "qlora":
        assert s["base_weight_bytes"]["nf4"] < s["base_weight_bytes"]["bfloat16"] / 3


def test_lora_resume_is_exact_and_output_opens(base, tmp_path):
    full = finetune(cfg(base, tmp_path / "a", max_steps=4))
    finetune(cfg(base, tmp_path / "b", max_steps=2))
    resumed = finetune(cfg(base, tmp_path / "b", max_steps=4, resume=True))
    losses = lambda d: [r["loss"] for r in json.loads((d / "history.json").read_text())]
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-6)
    assert resumed["steps"] == full["steps"] == 4
    with pytest.raises(UserError, match="other settings"):
        finetune(cfg(base, tmp_path / "b", max_steps=6, resume=True, rank=4))
    with pytest.raises(UserError, match="not empty"):
        finetune(cfg(base, tmp_path / "b"))
    # the adapter folder opens as base + adapter, and merging gives the same logits
    adapted = llmlab.load(tmp_path / "a")
    assert isinstance(adapted.model.blocks[0].attn.q_proj, LoRALinear)
    idx = torch.randint(0, 320, (1, 12))
    with torch.no_grad():
        expected = adapted.model(idx)
    assert main(["merge", str(tmp_path / "a"), "--out", str(tmp_path / "merged")]) == 0
    merged = load(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged.model(idx), expected, atol=1e-5, rtol=0)


def test_cli_bad_data_row_is_one_line(base, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    rc = main(["finetune", "--model", base, "--data", str(data), "--out", str(tmp_path / "o"), "--max-steps", "1",
               "--no-progress"])
    assert rc == 2 and "d.jsonl:2: missing field 'completion'" in capsys.readouterr().err


def test_compare_writes_a_table(base, tmp_path):
    from llmlab.recipes.finetune_compare import CompareArgs, run

    rows = run(CompareArgs(model=base, methods=["lora", "prompt"], out=str(tmp_path), max_steps=2, batch_size=2,
                           seq_len=128, n_train=24, eval_examples=2, isolate=False))
    assert [r["method"] for r in rows] == ["lora", "prompt"]
    text = (tmp_path / "compare.md").read_text()
    assert "| lora |" in text and "exact match after" in text


def test_classify_recipe_and_bad_rows(base, tmp_path, capsys):
    from llmlab.finetune.classify import ClassifyConfig, classify

    s = classify(ClassifyConfig(model=base, out=str(tmp_path / "c"), n_train=60, max_steps=4, batch_size=8,
                                lr=1e-3, progress=False))
    assert s["classes"] == ["arithmetic", "conversion", "string"] and s["held_out"] == 12
    assert sum(map(sum, s["confusion_matrix"])) == 12 and (tmp_path / "c" / "summary.json").is_file()
    data = tmp_path / "c.jsonl"
    data.write_text('{"text": "buy now", "label": "spam"}\n{"text": "hi"}\n')
    assert main(["finetune", "classify", "--model", base, "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "c.jsonl:2: missing field" in capsys.readouterr().err


def test_full_finetune_resumes_exactly_and_opens_with_load(base, tmp_path):
    finetune(cfg(base, tmp_path / "a", method="full", max_steps=3, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="full", max_steps=2, eval_examples=0))
    finetune(cfg(base, tmp_path / "b", method="full", max_steps=3, eval_examples=0, resume=True))
    losses = lambda d: [r["loss"] for r in json.loads((d / "history.json").read_text())]
    assert losses(tmp_path / "b") == pytest.approx(losses(tmp_path / "a"), abs=1e-6)
    assert load(tmp_path / "b").model.config.n_layer == 2
