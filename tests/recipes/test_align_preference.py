"""`llmlab align dpo|reward|constitution` end to end on a tiny model in a temp dir: outputs reopen with
`llmlab.load` as trained, peft loads the DPO adapter on the transformers twin, resume is exact, a non-finite
loss stops with the last checkpoint intact, and user mistakes are one-line errors."""

import json

import pytest
import torch

import llmlab
import llmlab.align.dpo
from llmlab.align.reward import score
from llmlab.common import checkpoint, log
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.loading import save_pretrained
from llmlab.models import Transformer, get_preset
from llmlab.recipes.align_preference import ConstitutionArgs, DPOArgs, RewardArgs, constitution, dpo, reward
from llmlab.tokenizer import Tokenizer

IDX = torch.randint(3, 320, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny Llama with a ChatML tokenizer, written in Hugging Face's format (so transformers and peft read it)."""
    log.set_quiet(True)
    text = " ".join(m["content"] for t in make_tasks(300) for m in t["messages"])
    tok = Tokenizer.train(text, 320, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=320, seq_len=160,
                                   tie_embeddings=False))
    path = tmp_path_factory.mktemp("base") / "tiny-hf"
    save_pretrained(model, path, tok)
    return str(path)


def cfg(cls, base, out, **kw):
    args = dict(model=base, out=str(out), n_train=24, eval_pairs=8, max_steps=3, batch_size=2, max_len=160,
                warmup_steps=1, ckpt_interval=2, progress=False, device="cpu")
    if cls is DPOArgs:
        args.update(eval_examples=4, max_new_tokens=4)
    return cls(**{**args, **kw})


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(IDX)


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "lora"
    return out, dpo(cfg(DPOArgs, base, out, lr=5e-2))


def test_dpo_lora_run_reopens_with_llmlab(base, lora_run):
    out, s = lora_run
    assert s["steps"] == 3 and s["preference_accuracy_before"] == 0.5  # policy == reference: every reward ties
    assert s["preference_accuracy_after"] is not None and s["exact_match_after"] is not None
    assert 0.0 <= s["answer_accuracy_before"] <= 1.0 and 0.0 <= s["answer_accuracy_after"] <= 1.0
    for name in ("summary.json", "history.json", "rewards.png", "report.md", "adapter_config.json",
                 "adapter_model.safetensors"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected"} <= set(history[-1])
    trained = logits(s["model"])
    torch.testing.assert_close(logits(llmlab.load(out).model), trained, atol=1e-5, rtol=0)
    assert not torch.allclose(logits(llmlab.load(base).model), trained, atol=1e-4)


def test_peft_loads_the_dpo_adapter_on_the_transformers_model(base, lora_run):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    out, s = lora_run
    theirs = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(IDX).logits, logits(s["model"]), atol=1e-4, rtol=1e-4)


def test_dpo_resume_is_exact_and_guards_settings(base, tmp_path):
    full = dpo(cfg(DPOArgs, base, tmp_path / "a", max_steps=4, eval_examples=0))
    dpo(cfg(DPOArgs, base, tmp_path / "b", max_steps=2, eval_examples=0))
    resumed = dpo(cfg(DPOArgs, base, tmp_path / "b", max_steps=4, eval_examples=0, resume=True))
    rows = lambda d: json.loads((d / "history.json").read_text())  # noqa: E731
    for key in ("loss", "rewards/margins", "logps/chosen"):
        assert [r[key] for r in rows(tmp_path / "b")] == pytest.approx([r[key] for r in rows(tmp_path / "a")],
                                                                       abs=1e-6)
    torch.testing.assert_close(logits(resumed["model"]), logits(full["model"]), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="other settings"):
        dpo(cfg(DPOArgs, base, tmp_path / "b", max_steps=6, resume=True, beta=0.5))
    with pytest.raises(UserError, match="not empty"):
        dpo(cfg(DPOArgs, base, tmp_path / "b"))
    with pytest.raises(UserError, match="holds no checkpoint"):
        dpo(cfg(DPOArgs, base, tmp_path / "c", resume=True))


@pytest.mark.parametrize("loss_type", ["ipo", "simpo"])
def test_dpo_full_training_reopens(base, tmp_path, loss_type):
    out = tmp_path / loss_type
    s = dpo(cfg(DPOArgs, base, out, method="full", loss_type=loss_type, lr=1e-3, eval_examples=0,
                beta=2.0 if loss_type == "simpo" else 0.1))
    assert checkpoint.read_meta(out)["weights"] == "full"
    torch.testing.assert_close(logits(llmlab.load(out).model), logits(s["model"]), atol=1e-5, rtol=0)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(base, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    real, calls = llmlab.align.dpo.dpo_loss, []

    def flaky(*args, **kwargs):
        calls.append(1)
        loss, c, r = real(*args, **kwargs)
        return (loss * float("nan") if len(calls) > 2 else loss), c, r

    monkeypatch.setattr(llmlab.align.dpo, "dpo_loss", flaky)
    with pytest.raises(UserError, match="not finite"):
        dpo(cfg(DPOArgs, base, out, max_steps=4, eval_pairs=0, eval_examples=0))
    saved = checkpoint.read_meta(out / "checkpoint")
    assert saved["state"]["step"] == 2 and len(saved["state"]["history"]) == 2  # the step-2 checkpoint, whole


def test_reward_model_reopens_and_exports(base, tmp_path):
    out = tmp_path / "rm"
    s = reward(cfg(RewardArgs, base, out, lr=1e-2, max_steps=4))
    assert s["pairwise_accuracy_after"] is not None and (out / "hf" / "config.json").is_file()
    assert (out / "reward_model.png").is_file() and (out / "report.md").is_file()
    loaded = llmlab.load(out)
    ids = [IDX[0].tolist(), IDX[1, :7].tolist()]
    torch.testing.assert_close(score(loaded.model, ids), score(s["model"], ids), atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="reward model"):  # a scalar head cannot sample tokens
        loaded.generate(ids[0], 3)
    with pytest.raises(UserError, match="--method"):
        reward(cfg(RewardArgs, base, tmp_path / "x", method="prompt"))


def test_constitution_writes_rows(base, tmp_path):
    s = constitution(ConstitutionArgs(model=base, out=str(tmp_path / "cai"), max_prompts=2, max_new_tokens=4,
                                      device="cpu", progress=False))
    assert s["prompts"] == 2 and s["principles"] == 12
    revisions = [json.loads(line) for line in (tmp_path / "cai" / "revisions.jsonl").read_text().splitlines()]
    assert len(revisions) == 2 and {"answer", "critique", "revision", "principle"} <= set(revisions[0])
    sft = (tmp_path / "cai" / "sft.jsonl").read_text().splitlines()
    pairs = (tmp_path / "cai" / "preference.jsonl").read_text().splitlines()
    assert len(sft) + s["dropped"] >= 2 and len(pairs) == s["preference_rows"]
