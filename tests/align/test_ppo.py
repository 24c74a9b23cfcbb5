"""PPO steps on a tiny model: the value head starts at 0 and learns, a learnable reward goes up while the KL to
the reference stays bounded, the reward-model adapter scores prompt + completion ids, and a non-finite loss
stops before the update."""

import copy

import pytest
import torch

from llmlab.align.grpo import reference_fn
from llmlab.align.ppo import PPOSettings, ValueHead, model_reward, ppo_step
from llmlab.align.rewards import Sample
from llmlab.common.errors import UserError
from llmlab.data.tasks import make_tasks
from llmlab.finetune.lora import apply_lora
from llmlab.infer.api import end_of_turn_ids
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer

LOW = 150


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
    return sum(i < LOW for i in sample.completion_ids) / max(len(sample.completion_ids), 1)


def test_reward_goes_up_and_kl_stays_bounded(setup):
    tok, tasks = setup
    model, ref_model = tiny(), tiny().requires_grad_(False)
    head = ValueHead(model.config.n_embd)
    with torch.no_grad():
        assert float(head(torch.randn(3, 48)).abs().max()) == 0.0
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-2)
    settings = PPOSettings(max_new_tokens=6, ppo_epochs=4, mini_batch=4, kl_coef=0.05)
    history = []
    for step in range(12):
        history.append(ppo_step(model, head, opt, tok, tasks, {"low": low_ids}, [1.0], settings, seed=step,
                                stop_ids=end_of_turn_ids(tok), ref=reference_fn(model, ref_model)))
    rewards = [h["reward"] for h in history]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # same weights before the first update
    assert all(abs(h["kl"]) < 30 for h in history)  # summed over 6 tokens
    assert float(head.summary.weight.detach().abs().sum()) > 0
    assert {"pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "non_score_reward", "completion_length"} <= set(history[0])


def test_lora_reference_and_whitened_rewards(setup):
    tok, tasks = setup
    model = apply_lora(tiny(), rank=4, alpha=8)
    head = ValueHead(model.config.n_embd)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-2)
    settings = PPOSettings(max_new_tokens=5, ppo_epochs=1, whiten_rewards=True)
    m = ppo_step(model, head, opt, tok, tasks[:4], {"low": low_ids}, [1.0], settings, seed=0,
                 stop_ids=end_of_turn_ids(tok), ref=reference_fn(model))
    assert m["kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA's B starts at 0: the policy is its base
    m = ppo_step(model, head, opt, tok, tasks[:4], {"low": low_ids}, [1.0], settings, seed=1,
                 stop_ids=end_of_turn_ids(tok), ref=reference_fn(model))
    assert m["kl"] != 0.0


def test_model_reward_scores_prompt_and_completion_ids():
    seen = []

    def score(model, ids):  # llmlab.align.reward.score's shape: a list of sequences -> rewards (N,)
        seen.append((model, ids))
        return torch.tensor([len(x) / 10 for x in ids])

    rm = object()
    fn = model_reward(rm, score)
    assert fn(Sample("p", "c", None, [1, 2], [3, 4, 5])) == 0.5
    assert seen == [(rm, [[1, 2, 3, 4, 5]])]


def test_non_finite_loss_stops_before_the_update(setup):
    tok, tasks = setup
    model = tiny()
    head = ValueHead(model.config.n_embd)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    before = copy.deepcopy(head.state_dict())
    with torch.no_grad():
        head.summary.bias.fill_(float("inf"))
    with pytest.raises(UserError, match="not finite"):
        ppo_step(model, head, opt, tok, tasks[:2], {"low": low_ids}, [1.0], PPOSettings(max_new_tokens=3), seed=0,
                 stop_ids=end_of_turn_ids(tok), ref=reference_fn(model, tiny()))
    assert torch.equal(head.summary.weight, before["summary.weight"])


def test_model_reward_with_the_reward_model_stage():
    from llmlab.align.reward import score

    rm = tiny(2)
    rm.lm_head = torch.nn.Linear(rm.config.n_embd, 1)  # the reward model: a scalar head on the decoder
    fn = model_reward(rm, score)
    sample = Sample("p", "c", None, [5, 6, 7], [8, 9])
    with torch.no_grad():
        expected = float(rm(torch.tensor([[5, 6, 7, 8, 9]]))[0, -1, 0])  # the head at the last token
    assert fn(sample) == pytest.approx(expected, abs=1e-5)
