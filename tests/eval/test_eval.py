"""Evaluation: held-out loss equals plain cross-entropy, exact match compares on form, classification scores."""

import math

import pytest
import torch
import torch.nn.functional as F

from llmlab.eval.bpb import bits_per_byte
from llmlab.eval.classification import confusion_matrix, evaluate_classifier
from llmlab.eval.exact_match import exact_match, exact_match_score, normalize_answer
from llmlab.eval.loss import heldout_loss, loss_by_position, mean_heldout_loss
from llmlab.models import Transformer, get_preset
from llmlab.train.objectives import sft_loss


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=32)).eval()


def test_heldout_loss_is_cross_entropy_over_real_targets():
    model = tiny()
    idx = torch.randint(0, 128, (3, 16))
    targets = torch.randint(0, 128, (3, 16))
    targets[0, :5] = -100
    targets[2, 10:] = -100
    with torch.no_grad():
        expected = F.cross_entropy(model(idx).flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    total, count = heldout_loss(model, [(idx[:2], targets[:2]), (idx[2:], targets[2:])])
    assert count == 48 - 5 - 6
    assert math.isclose(total, expected.item(), rel_tol=1e-5)
    # the training objective over the same targets is the same mean
    with torch.no_grad():
        assert math.isclose(sft_loss(model, (idx, targets)).item(), total / count, rel_tol=1e-5)
    assert math.isclose(mean_heldout_loss(model, [(idx, targets)]), total / count, rel_tol=1e-5)
    assert math.isnan(mean_heldout_loss(model, [(idx, torch.full_like(targets, -100))]))


def test_loss_by_position_averages_each_column_over_its_targets():
    model = tiny()
    idx, targets = torch.randint(0, 128, (3, 16)), torch.randint(0, 128, (3, 16))
    targets[0, 3] = -100
    with torch.no_grad():
        per_token = F.cross_entropy(model(idx).transpose(1, 2), targets, ignore_index=-100, reduction="none")
    short = (idx[:1, :7], targets[:1, :7])  # a shorter last window adds to its first positions only
    with torch.no_grad():
        extra = F.cross_entropy(model(short[0]).transpose(1, 2), short[1], ignore_index=-100, reduction="none")[0]
    by_position = loss_by_position(model, [(idx, targets), short], seq_len=20)
    assert len(by_position) == 20 and by_position[16:] == [0.0] * 4
    rows = [(per_token[i], targets[i]) for i in range(3)] + [(extra, short[1][0])]  # each window's losses
    expected = [sum(loss[t] for loss, tgt in rows if t < len(tgt) and tgt[t] != -100)
                / sum(1 for _, tgt in rows if t < len(tgt) and tgt[t] != -100) for t in range(16)]
    torch.testing.assert_close(torch.tensor(by_position[:16], dtype=torch.float32), torch.stack(expected))


def test_bits_per_byte_golden():
    assert math.isclose(bits_per_byte(math.log(2) * 8, 4), 2.0)


def test_exact_match_normalisation():
    assert exact_match(" 3000.\nmore text", "3000") and not exact_match("The answer is 3000", "3000")
    assert normalize_answer("'elppa'") == "elppa" and normalize_answer("") == ""


def test_exact_match_score_by_greedy_generation():
    from llmlab.tokenizer import Tokenizer

    tok = Tokenizer.train("the answer is four and five " * 50, 300,
                          special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    model = Transformer(get_preset("llama-tiny", n_layer=1, n_embd=32, vocab_size=tok.vocab_size, seq_len=64))
    convs = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "four"}]] * 3
    score, samples = exact_match_score(model, tok, convs, max_new_tokens=3)
    assert 0.0 <= score <= 1.0 and len(samples) == 3
    assert score == sum(exact_match(s["answer"], "four") for s in samples) / 3
    assert math.isnan(exact_match_score(model, tok, [], 3)[0])


def test_confusion_matrix_golden_and_classifier_scores():
    cm = confusion_matrix(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]

    class Fixed(torch.nn.Module):  # predicts class = the last real token's id mod 2
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, idx, attn_mask=None):
            return F.one_hot(idx % 2, 2).float()  # (B, T, 2)

    model = Fixed()
    idx = torch.tensor([[2, 4, 1], [3, 0, 0], [4, 4, 4]])  # read at 4, 3 and 4: predictions 0, 1, 0
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    acc, cm = evaluate_classifier(model, [(idx, torch.tensor([0, 1, 1]), mask)], 2)
    assert acc == pytest.approx(2 / 3) and cm.tolist() == [[1, 0], [1, 1]]
