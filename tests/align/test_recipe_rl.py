"""`llmlab align grpo|ppo|budget|reasoning` end to end on a tiny model in a temp dir: outputs reopen with
`llmlab.load` as the model was when training ended, a resumed run equals the uninterrupted one, and bad data,
a raising reward and a non-finite reward stop with a one-line error and the last checkpoint intact."""

import json
import math
import shutil

import pytest
import torch

import llmlab
from llmlab.align import rewards
from llmlab.common import log
from llmlab.common.checkpoint import read_meta, save_checkpoint
from llmlab.common.errors import UserError
from llmlab.data.reasoning import train_test_cot
from llmlab.data.tasks import make_tasks
from llmlab.models import Transformer, get_preset
from llmlab.recipes.align_rl import BudgetArgs, GRPOArgs, PPOArgs, ReasoningArgs, budget, grpo, ppo, reasoning
from llmlab.tokenizer import Tokenizer

IDX = torch.randint(3, 320, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    log.set_quiet(True)
    cot = [t["messages"] for t in train_test_cot(100, 0)[0]]
    text = " ".join(m["content"] for c in [t["messages"] for t in make_tasks(300)] + cot for m in c)
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=160))
    path = tmp_path_factory.mktemp("base") / "tiny"
    save_checkpoint(path, model, {}, tokenizer=tok)
    return str(path)


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDX)


def grpo_args(base, out, **kw) -> GRPOArgs:
    args = dict(model=base, out=str(out), n_train=16, eval_examples=4, max_steps=3, prompts_per_step=2, group_size=3,
                max_new_tokens=5, rewards=["correct", "terse"], lr=5e-3, ckpt_interval=1, progress=False,
                targets=["q_proj", "v_proj"], rank=4)
    return GRPOArgs(**{**args, **kw})


def test_grpo_lora_output_reopens(base, tmp_path):
    s = grpo(grpo_args(base, tmp_path / "run"))
    out = tmp_path / "run"
    assert s["steps"] == 3 and s["accuracy_before"] is not None and s["accuracy_after"] is not None
    for name in ("summary.json", "history.json", "curves.png", "report.md", "adapter_config.json",
                 "adapter_model.safetensors", "checkpoint/trainable.safetensors"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["kind"] == "grpo"
    trained = logits(s["model"])
    torch.testing.assert_close(logits(llmlab.load(out).model), trained, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(llmlab.load(base).model), trained, atol=1e-4)
    peft_only = tmp_path / "peft_only"  # the PEFT files alone (no checkpoint/) open to the same model
    peft_only.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(out / name, peft_only / name)
    torch.testing.assert_close(logits(llmlab.load(peft_only).model), trained, atol=1e-5, rtol=0)


def test_grpo_resume_is_exact(base, tmp_path):
    s = grpo(grpo_args(base, tmp_path / "straight", eval_examples=0))
    grpo(grpo_args(base, tmp_path / "resumed", eval_examples=0, max_steps=1))
    r = grpo(grpo_args(base, tmp_path / "resumed", eval_examples=0, resume=True))
    straight = json.loads((tmp_path / "straight" / "history.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert len(straight) == len(resumed) == 3
    for a, b in zip(straight, resumed, strict=True):
        assert a["sample"] == b["sample"] and a["reward"] == b["reward"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(logits(r["model"]), logits(s["model"]), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="other settings"):
        grpo(grpo_args(base, tmp_path / "resumed", eval_examples=0, max_steps=5, lr=1e-3, resume=True))


def test_grpo_full_with_kl_and_think(base, tmp_path):
    s = grpo(grpo_args(base, tmp_path / "full", method="full", beta=0.05, think=True, loss_type="dr_grpo",
                       rewards=["format", "answer"], max_steps=2))
    assert all("kl" in r for r in json.loads((tmp_path / "full" / "history.json").read_text()))
    torch.testing.assert_close(logits(llmlab.load(tmp_path / "full").model), logits(s["model"]), atol=1e-5, rtol=0)


def test_ppo_runs_resumes_with_its_value_head_and_reopens(base, tmp_path):
    args = dict(model=base, n_train=16, eval_examples=4, prompts_per_step=4, max_new_tokens=5, ppo_epochs=2,
                mini_batch=2, rewards=["terse"], lr=5e-3, ckpt_interval=1, progress=False, rank=4)
    s = ppo(PPOArgs(**args, out=str(tmp_path / "a"), max_steps=3))
    assert (tmp_path / "a" / "checkpoint" / "value_head.safetensors").is_file()
    history = json.loads((tmp_path / "a" / "history.json").read_text())
    assert {"reward", "kl", "vf_loss", "pg_loss"} <= set(history[0])
    ppo(PPOArgs(**args, out=str(tmp_path / "b"), max_steps=2))
    r = ppo(PPOArgs(**args, out=str(tmp_path / "b"), max_steps=3, resume=True))
    torch.testing.assert_close(r["value_head"].summary.weight, s["value_head"].summary.weight)
    torch.testing.assert_close(logits(r["model"]), logits(s["model"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(llmlab.load(tmp_path / "a").model), logits(s["model"]), atol=1e-5, rtol=0)


def test_bad_input(base, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "2+2?", "answer": "4"}\n{"prompt": "3+3?", "answer": "6"}\n{"answer": "1"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:3: missing field"):
        grpo(grpo_args(base, tmp_path / "o1", data=str(bad)))
    s = grpo(grpo_args(base, tmp_path / "o2", data=str(bad), skip_bad_rows=True, max_steps=1, eval_examples=0))
    assert s["skipped_rows"] == 1 and s["train_prompts"] == 2
    with pytest.raises(UserError, match="not empty"):
        grpo(grpo_args(base, tmp_path / "o2"))
    with pytest.raises(UserError, match="no such file"):
        grpo(grpo_args(base, tmp_path / "o3", data=str(tmp_path / "missing.jsonl")))
    with pytest.raises(UserError, match="group_size"):
        grpo(grpo_args(base, tmp_path / "o4", group_size=1))
    with pytest.raises(UserError, match="unknown"):
        grpo(grpo_args(base, tmp_path / "o5", rewards=["shiny"]))
    with pytest.raises(UserError, match="--method"):
        grpo(grpo_args(base, tmp_path / "o6", method="prompt"))
    with pytest.raises(UserError, match="do not fit"):
        grpo(grpo_args(base, tmp_path / "o7", max_new_tokens=150))


def test_a_raising_or_non_finite_reward_stops_with_the_checkpoint_intact(base, tmp_path, monkeypatch):
    calls = {"n": 0}

    def flaky(sample):
        calls["n"] += 1
        if calls["n"] > 12:  # steps 1 and 2 score 6 samples each; step 3 fails
            raise RuntimeError("grader crashed")
        return 1.0

    monkeypatch.setitem(rewards.REWARDS, "flaky", flaky)
    out = tmp_path / "raise"
    with pytest.raises(UserError, match=r"reward 'flaky' raised RuntimeError: grader crashed; on prompt"):
        grpo(grpo_args(base, out, rewards=["flaky"], max_steps=4))
    assert read_meta(out / "checkpoint")["state"]["step"] == 2
    llmlab.load(out)
    calls["n"] = 0
    s = grpo(grpo_args(base, tmp_path / "skip", rewards=["flaky"], max_steps=3, skip_reward_errors=True))
    assert json.loads((tmp_path / "skip" / "history.json").read_text())[-1]["reward_errors"] == 6 and s["steps"] == 3

    monkeypatch.setitem(rewards.REWARDS, "nan", lambda sample: math.nan)
    with pytest.raises(UserError, match="not finite"):
        grpo(grpo_args(base, tmp_path / "nan", rewards=["nan"], max_steps=2))


def test_budget_and_reasoning_recipes(base, tmp_path):
    rows = budget(BudgetArgs(model=base, out=str(tmp_path / "budget"), budgets=[0, 4], eval_examples=3,
                             max_answer_tokens=3, min_thinking=2))
    assert [r["budget"] for r in rows] == [0, 4] and rows[0]["thinking_tokens"] == 0
    assert rows[1]["thinking_tokens"] <= 4 + 2  # a "Wait" or a started marker may run a token or two over
    assert (tmp_path / "budget" / "budget.png").is_file() and (tmp_path / "budget" / "budget.json").is_file()
    with pytest.raises(UserError, match="budgets"):
        budget(BudgetArgs(model=base, budgets=[-1]))
    r = reasoning(ReasoningArgs(out=str(tmp_path / "cot.jsonl"), n_train=5, n_heldout=2))
    lines = (tmp_path / "cot.jsonl").read_text().splitlines()
    assert len(lines) == 5 and r["n_heldout"] == 2 and "<think>" in json.loads(lines[0])["messages"][-1]["content"]
