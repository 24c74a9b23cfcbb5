"""Rollouts: sampled rows stop at end of turn, each row's sample depends only on its prompt and seed, greedy
rows equal `generate_batch`, and the recomputed log-probabilities equal a plain one-sequence-at-a-time pass."""

import pytest
import torch

from llmlab.align.rollout import completion_logps, pad_completions, rollout, sample_rows
from llmlab.data.tasks import make_tasks
from llmlab.infer.api import end_of_turn_ids
from llmlab.infer.generate import generate_batch
from llmlab.models import Transformer, get_preset
from llmlab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def lm():
    text = " ".join(m["content"] for t in make_tasks(200) for m in t["messages"])
    tok = Tokenizer.train(text, 300, special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=48, vocab_size=300, seq_len=96)).eval()
    prompts = [tok.encode(tok.render(t["messages"][:-1], add_generation_prompt=True), allowed_special="all")
               for t in make_tasks(4, seed=5)]
    return model, tok, prompts


def test_greedy_rows_equal_generate_batch(lm):
    model, tok, prompts = lm
    stops = end_of_turn_ids(tok)
    ours = sample_rows(model, prompts, 12, [0] * len(prompts), stops, temperature=0.0)
    assert ours == generate_batch(model, prompts, 12, temperature=0.0, stop_ids=stops)


def test_a_row_samples_the_same_alone_or_in_a_batch(lm):
    model, tok, prompts = lm
    stops = end_of_turn_ids(tok)
    batch = sample_rows(model, prompts, 10, [11, 12, 13, 14], stops, temperature=1.0)
    alone = sample_rows(model, [prompts[2]], 10, [13], stops, temperature=1.0)
    assert batch[2] == alone[0]
    assert batch[0] != batch[1] or batch[1] != batch[3]  # different seeds, different samples


def test_rollout_groups_masks_and_stops(lm):
    model, tok, prompts = lm
    # a stop token every row will meet: the most likely first token of the first prompt
    stop = int(model(torch.tensor([prompts[0]]))[0, -1].argmax())
    ro = rollout(model, tok, prompts[:2], 3, 8, seed=7, stop_ids={stop}, temperature=0.7)
    assert len(ro.prompt_ids) == 6 and ro.prompt_ids[:3] == [prompts[0]] * 3 and ro.prompt_ids[3] == prompts[1]
    assert ro.completion_ids.shape[0] == 6 and ro.mask.shape == ro.completion_ids.shape
    for b in range(6):
        n = int(ro.mask[b].sum())
        row = ro.completion_ids[b, :n].tolist()
        assert ro.mask[b, :n].all() and not ro.mask[b, n:].any()
        assert ro.truncated[b] == (row[-1] != stop)
        assert (stop not in row[:-1]) and (n == 8 or row[-1] == stop)
        assert ro.texts[b] == tok.decode([t for t in row if t != stop])
    again = rollout(model, tok, prompts[:2], 3, 8, seed=7, stop_ids={stop}, temperature=0.7)
    assert torch.equal(again.completion_ids, ro.completion_ids)


def test_logps_equal_one_sequence_at_a_time(lm):
    model, tok, prompts = lm
    rows = [[5, 9, 17, 3], [40], [7, 7, 8]]
    ids, mask = pad_completions(rows, tok.pad_id)
    logps, hidden = completion_logps(model, prompts[:3], ids, mask, temperature=0.7, with_hidden=True)
    for b, (p, r) in enumerate(zip(prompts[:3], rows, strict=True)):
        with torch.no_grad():
            logits = model(torch.tensor([p + r]))[0, len(p) - 1:-1] / 0.7  # (n, V)
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
        torch.testing.assert_close(logps[b, :len(r)], expected, atol=1e-4, rtol=1e-4)
        assert (logps[b, len(r):] == 0).all()
    assert hidden.shape == (3, ids.shape[1], model.config.n_embd)
    ro = rollout(model, tok, prompts[:1], 2, 6, seed=1, stop_ids=end_of_turn_ids(tok))
    fresh, _ = completion_logps(model, ro.prompt_ids, ro.completion_ids, ro.mask)
    torch.testing.assert_close(ro.logps, fresh)
