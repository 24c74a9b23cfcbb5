"""GRPO steps on a tiny model: a learnable reward goes up, the LoRA reference is the base model, the KL starts at
0 and every option (several iterations, KL, each loss type, micro-batches) runs; a non-finite loss stops before
the update."""

import copy

import pytest
import torch

from llmlab.align.grpo import GRPOSettings, answer_accuracy, grpo_step, reference_fn
from llmlab.align.rewards import Sample, answer_is_correct
from llmlab.align.rollout import completion_logps, pad_completions
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import apply_lora
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.generate import generate
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer

LOW = 150  # the toy reward: the share of completion tokens with an id below this


@pytest.fixture(scope="module")
def setup():
    text = " ".join(m["content"] for t in make_tasks(200) for m in t["messages"])
    tok = Tokenizer.train(text, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    tasks = []
    for t in make_tasks(8, seed=3):
        prompt = tok.render(t["messages"][:-1], add_generation_prompt=True)
        tasks.append({"prompt_ids": tok.encode(prompt, allowed_special="all"), "prompt": prompt, "answer": t["answer"]})
    return tok, tasks


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(get_preset("llama-tiny", n_layer=2, n_embd=48, vocab_size=300, seq_len=128))


def low_ids(sample: Sample) -> float:
    ids = sample.completion_ids
    return sum(i < LOW for i in ids) / max(len(ids), 1)


def test_a_learnable_reward_goes_up(setup):
    tok, tasks = setup
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    settings = GRPOSettings(group_size=8, max_new_tokens=6)
    rewards = []
    for step in range(14):
        m = grpo_step(model, opt, tok, tasks[:2], {"low": low_ids}, [1.0], settings, seed=step * 100,
                      stop_ids=end_of_turn_ids(tok))
        rewards.append(m["reward"])
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.15, rewards
    assert {"loss", "reward_std", "completion_length", "clip_ratio/region_mean", "rewards/low"} <= set(m)


def test_lora_reference_is_the_base_and_kl_starts_at_zero(setup):
    tok, tasks = setup
    base = tiny(1)
    model = apply_lora(copy.deepcopy(base), rank=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5)  # a trained adapter: policy and base differ
    ref = reference_fn(model)
    ids, mask = pad_completions([[5, 6, 7], [8, 9]], tok.pad_id)
    prompts = [t["prompt_ids"] for t in tasks[:2]]
    with torch.no_grad():
        expected, _ = completion_logps(base, prompts, ids, mask)
        policy, _ = completion_logps(model, prompts, ids, mask)
    torch.testing.assert_close(ref(prompts, ids, mask), expected)
    assert not torch.allclose(policy, expected)
    fresh = apply_lora(tiny(1), rank=4, alpha=8)  # B = 0: the policy is its reference
    opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    m = grpo_step(fresh, opt, tok, tasks[:2], {"low": low_ids}, [1.0], GRPOSettings(group_size=4, max_new_tokens=5,
                  beta=0.1), seed=0, stop_ids=end_of_turn_ids(tok), ref=reference_fn(fresh))
    assert m["kl"] == pytest.approx(0.0, abs=1e-6)
    m = grpo_step(fresh, opt, tok, tasks[:2], {"low": low_ids}, [1.0], GRPOSettings(group_size=4, max_new_tokens=5,
                  beta=0.1), seed=1, stop_ids=end_of_turn_ids(tok), ref=reference_fn(fresh))
    assert m["kl"] > 0


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_every_option_runs(setup, loss_type):
    tok, tasks = setup
    model = tiny()
    ref_model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    settings = GRPOSettings(group_size=4, max_new_tokens=5, beta=0.05, num_iterations=2, loss_type=loss_type,
                            micro_batch=3, scale_rewards=loss_type != "dr_grpo")
    m = grpo_step(model, opt, tok, tasks[:2], {"low": low_ids}, [1.0], settings, seed=0,
                  stop_ids=end_of_turn_ids(tok), ref=reference_fn(model, ref_model))
    assert all(v == v for v in m.values() if isinstance(v, float))  # no NaN anywhere
    with pytest.raises(ValueError, match="reference"):
        grpo_step(model, opt, tok, tasks[:2], {"low": low_ids}, [1.0], settings, seed=0,
                  stop_ids=end_of_turn_ids(tok))


def test_non_finite_loss_stops_before_the_update(setup):
    tok, tasks = setup
    model = tiny()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("inf")  # every logit of token 0 is inf: NaN log-probabilities
    with pytest.raises(UserError, match="not finite"):
        grpo_step(model, opt, tok, tasks[:2], {"low": low_ids}, [1.0], GRPOSettings(group_size=2, max_new_tokens=3,
                  temperature=0.0), seed=0, stop_ids=set())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("lm_head.weight", "tok_emb.weight"))


def test_settings_and_accuracy(setup):
    tok, tasks = setup
    for bad in (GRPOSettings(group_size=1), GRPOSettings(loss_type="ppo"), GRPOSettings(num_iterations=0)):
        with pytest.raises(UserError):
            bad.check()
    wrong = [{**t, "answer": "not an answer anyone writes"} for t in tasks]
    scored = answer_accuracy(tiny(), tok, wrong, 4, end_of_turn_ids(tok))
    samples = scored["samples"]
    assert scored["accuracy"] == 0.0 and len(samples) == 8
    # batched scoring equals answering one prompt at a time
    model = tiny()
    stops = end_of_turn_ids(tok)
    outs = [generate(model, t["prompt_ids"], 4, temperature=0.0, stop_ids=stops) for t in tasks]
    answers = [tok.decode([i for i in o if i not in stops]) for o in outs]
    assert [s["answer"] for s in samples] == answers
    expected = sum(answer_is_correct(a, t["answer"]) for a, t in zip(answers, tasks, strict=True)) / len(tasks)
    scored = answer_accuracy(model, tok, tasks, 4, stops, batch_size=3)
    assert scored["accuracy"] == expected
    assert scored["tokens_per_answer"] == sum(len(o) for o in outs) / len(outs)
    assert scored["finished"] == sum(bool(o) and o[-1] in stops for o in outs) / len(outs)
