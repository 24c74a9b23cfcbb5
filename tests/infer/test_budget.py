"""Budget forcing on a scripted model whose wishes are known: it wants to close its thinking at once (so the
minimum must hold it back, by suppression or by "Wait") or never (so the maximum must close it), and then
always answers "7". `controlled_decode` itself equals `generate_batch` on a real (tiny) model."""

import pytest
import torch
import torch.nn as nn

from llmlab.data.reasoning import THINK_CLOSE
from llmlab.data.tasks import make_tasks
from llmlab.infer.budget import budget_generate, controlled_decode, marker_start_ids
from llmlab.infer.generate import generate_batch
from llmlab.models import Transformer, get_preset
from llmlab.models.config import ModelConfig
from llmlab.tokenizer import Tokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="module")
def tok():
    text = " ".join(m["content"] for t in make_tasks(200) for m in t["messages"]) + " <think> </think> Wait" * 20
    return Tokenizer.train(text, 300, special_tokens=SPECIALS)


class Scripted(nn.Module):
    """A model by rule: while thinking it wants `</think>` at once (wants_to_close) or never (it writes "a"); a
    started marker it finishes; after `</think>` it answers "7" and ends. Runs through the KV cache like a model."""

    def __init__(self, tok, wants_to_close: bool):
        super().__init__()
        self.config = ModelConfig(vocab_size=tok.vocab_size, seq_len=256, n_layer=1, n_head=1, n_kv_head=1, n_embd=4)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.tok, self.close = tok, tok.encode(THINK_CLOSE)
        self.seven, self.filler = tok.encode("7")[0], tok.encode("a")[0]
        self.wish = self.close[0] if wants_to_close else self.filler
        self.seen: list[list[int]] = []

    def next_token(self, seq: list[int]) -> int:
        if THINK_CLOSE in self.tok.decode(seq):
            return self.tok.eos_id if seq[-1] == self.seven else self.seven
        if seq[-1] in self.close[:-1]:
            return self.close[self.close.index(seq[-1]) + 1]
        return self.wish

    def forward(self, idx, kv_cache=None, positions=None, attn_mask=None, last_only=False):
        if kv_cache.pos == 0:
            self.seen = [[] for _ in range(idx.shape[0])]
        kv_cache.advance(idx.shape[1])
        logits = torch.zeros(idx.shape[0], 1, self.config.vocab_size)
        for b, row in enumerate(idx.tolist()):
            self.seen[b] += row
            logits[b, 0, self.next_token(self.seen[b])] = 10.0
            logits[b, 0, self.filler] = max(float(logits[b, 0, self.filler]), 5.0)  # its choice when refused
        return logits


def prompt(tok) -> list[int]:
    return tok.encode("<|im_start|>user\n2+5?<|im_end|>\n<|im_start|>assistant\n", allowed_special="all")


def test_unforced_it_closes_at_once_and_answers(tok):
    (out,) = budget_generate(Scripted(tok, True), tok, [prompt(tok)], max_thinking=50)
    assert out.answer == "7" and out.thinking == "" and not out.forced_end and out.waits == 0
    assert out.thinking_tokens == len(tok.encode(THINK_CLOSE))


def test_minimum_by_suppression(tok):
    (out,) = budget_generate(Scripted(tok, True), tok, [prompt(tok)], min_thinking=6, max_thinking=50)
    assert out.answer == "7" and out.thinking_tokens >= 6 and out.waits == 0
    assert out.thinking.replace(" ", "") == "a" * 6  # the second choice while the marker was refused


def test_minimum_by_wait(tok):
    (out,) = budget_generate(Scripted(tok, True), tok, [prompt(tok)], min_thinking=6, max_thinking=50, mode="wait")
    assert out.answer == "7" and out.waits >= 1 and "Wait" in out.thinking and out.thinking_tokens >= 6


def test_maximum_forces_the_end(tok):
    outs = budget_generate(Scripted(tok, False), tok, [prompt(tok)] * 2, max_thinking=9)
    for out in outs:
        assert out.forced_end and out.thinking_tokens == 9 and out.answer == "7"
        assert THINK_CLOSE in tok.decode(out.ids)
    (none,) = budget_generate(Scripted(tok, False), tok, [prompt(tok)], max_thinking=0)
    assert none.thinking_tokens == 0 and none.thinking == "" and none.answer == "7"


def test_marker_start_ids(tok):
    starts = marker_start_ids(tok)
    assert tok.encode(THINK_CLOSE)[0] in starts
    assert all(THINK_CLOSE.startswith(tok.decode([i]).lstrip()) or tok.decode([i]).lstrip().startswith(THINK_CLOSE)
               for i in starts)
    assert tok.encode("7")[0] not in starts


def test_bad_settings(tok):
    with pytest.raises(ValueError, match="min_thinking"):
        budget_generate(Scripted(tok, True), tok, [prompt(tok)], min_thinking=5, max_thinking=2)
    with pytest.raises(ValueError, match="mode"):
        budget_generate(Scripted(tok, True), tok, [prompt(tok)], mode="think harder")


def test_controlled_decode_greedy_equals_generate_batch(tok):
    torch.manual_seed(0)
    model = Transformer(get_preset("llama-tiny", n_layer=2, n_embd=48, vocab_size=tok.vocab_size, seq_len=64)).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    rows: list[list[int]] = [[] for _ in prompts]

    def choose(step, logits):
        nxt = logits.argmax(-1)
        for r, t in zip(rows, nxt.tolist(), strict=True):
            r.append(t)
        return nxt

    assert controlled_decode(model, prompts, 7, choose) == 7
    assert rows == generate_batch(model, prompts, 7, temperature=0.0)
