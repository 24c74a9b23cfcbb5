"""Adapters, prompt tuning and the classification head: identity at start, only their parameters train."""

import torch
import torch.nn.functional as F

from llmlab.eval.classification import accuracy, confusion_matrix
from llmlab.finetune.adapters import apply_adapters
from llmlab.finetune.heads import add_classification_head
from llmlab.finetune.prompt_tuning import PromptTuned
from llmlab.infer import generate, generate_batch
from llmlab.infer.classify import last_token_logits
from llmlab.models import Transformer, get_preset


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_preset("llama-tiny", n_layer=2, n_embd=64, vocab_size=128, seq_len=48, **kw))


def _train(model, idx, steps=5, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(idx)[:, :-1].flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_adapters_start_as_identity_and_train():
    model = tiny()
    idx = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        before = model(idx)
    apply_adapters(model, bottleneck=8)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), before)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".adapter." in n for n in names)
    losses = _train(model, idx)
    assert losses[-1] < losses[0]


def test_prompt_tuning_trains_only_the_prompt_and_masks_extend():
    model = tiny()
    tuned = PromptTuned(model, n_virtual=4)
    idx = torch.randint(0, 128, (2, 10))
    assert tuned(idx).shape == (2, 10, 128)
    assert [n for n, p in tuned.named_parameters() if p.requires_grad] == ["prompt"]
    # a (B, S) padding mask and a full (B, T, S) mask give the same logits for an unpadded row
    with torch.no_grad():
        full = tuned(idx)
        pad = tuned(idx, attn_mask=torch.ones(2, 10, dtype=torch.bool))
        block = tuned(idx, attn_mask=torch.ones(2, 10, 10, dtype=torch.bool))
    torch.testing.assert_close(pad, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(block, full, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(tuned(idx, last_only=True), full[:, -1:], atol=1e-5, rtol=0)
    prompt0 = tuned.prompt.detach().clone()
    losses = _train(tuned, idx)
    assert losses[-1] < losses[0] and not torch.equal(prompt0, tuned.prompt)


def test_classification_head_learns_a_toy_task():
    """Class = whether token 7 occurs in the text; right-padded rows read their last real token."""
    model = add_classification_head(tiny(), num_classes=2)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(8, 128, (64, 12), generator=g)
    labels = torch.randint(0, 2, (64,), generator=g)
    idx[labels == 1, 3] = 7
    mask = torch.ones(64, 12, dtype=torch.long)
    mask[::2, 10:] = 0  # half the rows are two tokens shorter
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(last_token_logits(model(idx, attn_mask=mask), mask), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        preds = last_token_logits(model(idx, attn_mask=mask), mask).argmax(-1)
    assert accuracy(preds, labels) > 0.9
    cm = confusion_matrix(preds, labels, 2)
    assert cm.sum() == 64 and cm.trace() == (preds == labels).sum()


def test_prompt_tuning_generates_the_same_with_and_without_the_cache():
    tuned = PromptTuned(tiny(), n_virtual=5, seed=1)
    assert tuned.config.seq_len == 48 - 5
    prompts = [[3, 9, 27, 81], [5, 6], [100, 2, 7]]
    plain = [generate(tuned, p, 10, temperature=0.0, use_cache=False) for p in prompts]
    assert [generate(tuned, p, 10, temperature=0.0) for p in prompts] == plain
    assert generate_batch(tuned, prompts, 10, temperature=0.0) == plain  # left padding, per-row positions
    # the context left for real tokens ends generation, with room for the virtual tokens in the cache
    assert len(generate(tuned, list(range(1, 40)), 20, temperature=0.0)) == 43 - 39


def test_logits_mask_projects_only_the_chosen_positions():
    model = tiny().eval()
    tuned = PromptTuned(tiny(), n_virtual=3).eval()
    idx = torch.randint(0, 128, (2, 10))
    mask = torch.rand(2, 10) > 0.5
    with torch.no_grad():
        for m in (model, tuned):
            torch.testing.assert_close(m(idx, logits_mask=mask), m(idx)[mask], atol=1e-5, rtol=0)
