"""`llmlab align compare` end to end on a tiny model: every stage runs as its own command, every model is scored on
the same held-out questions, the report has a row per model, and a second run keeps the finished stages."""

import json

import pytest
import torch

from llmlab.common import log
from llmlab.common.checkpoint import save_checkpoint
from llmlab.common.errors import UserError
from llmlab.data.reasoning import task_prompts, train_test_cot
from llmlab.data.tasks import make_tasks
from llmlab.models import Transformer, get_preset
from llmlab.recipes.align_compare import CompareArgs, compare
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    log.set_quiet(True)
    cot = [t["messages"] for t in train_test_cot(50, 0)[0]]
    text = " ".join(m["content"] for c in [t["messages"] for t in make_tasks(200)] + cot for m in c)
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=160))
    path = tmp_path_factory.mktemp("base") / "tiny"
    save_checkpoint(path, model, {}, tokenizer=tok)
    return str(path)


def test_compare_runs_every_stage_on_the_same_questions(base, tmp_path):
    args = CompareArgs(model=base, out=str(tmp_path / "cmp"), examples=4, eval_examples=3, prompts_per_step=2,
                       group_size=2, max_new_tokens=4, cot_max_new_tokens=6, rank=2, device="cpu")
    rows = compare(args)
    out = tmp_path / "cmp"
    assert [r["model"] for r in rows] == ["base", "SFT", "GRPO", "CoT SFT", "CoT SFT + GRPO"]
    assert all(r["examples"] == (0 if r["model"] == "base" else 4) for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 and 1 <= r["tokens_per_answer"] <= 6 for r in rows)
    for name in ("report.md", "compare.json", "compare.png", "grpo/curves.png", "cot-grpo/curves.png",
                 "sft/adapter_model.safetensors", "data/direct.jsonl", "data/cot.jsonl"):
        assert (out / name).is_file(), name
    # SFT trains on the questions GRPO walks, never on a held-out one
    direct = [json.loads(line)["messages"][1]["content"] for line in (out / "data/direct.jsonl").open()]
    train, held = task_prompts(4, 3, 0)
    assert direct == [t["messages"][1]["content"] for t in train]
    assert not set(direct) & {t["messages"][1]["content"] for t in held}
    grpo = json.loads((out / "grpo/summary.json").read_text())
    assert grpo["held_out"] == 3 and grpo["train_prompts"] == 4 and grpo["examples_seen"] == 4
    report = (out / "report.md").read_text()
    assert "| CoT SFT + GRPO |" in report and "llmlab align grpo" in report and "llmlab finetune" in report
    again = compare(args)  # finished stages are kept: the same numbers, no training
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]
    assert json.loads((out / "compare.json").read_text())["rows"] == again


def test_compare_refuses_what_cannot_run(base, tmp_path):
    with pytest.raises(UserError, match="examples"):
        compare(CompareArgs(model=base, out=str(tmp_path / "a"), examples=2))
    with pytest.raises(UserError, match="cot-sft-merged"):
        compare(CompareArgs(model=base, out=str(tmp_path / "b"), stages=["cot-grpo"], examples=4))
