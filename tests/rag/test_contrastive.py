"""InfoNCE equals sentence-transformers' MultipleNegativesRankingLoss on the same embeddings (loss and
gradients, with and without hard negatives); batches never repeat a passage; training lowers the loss."""

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.rag.contrastive import info_nce, pair_batches, train_embedder
from llmlab.rag.embeddings import load_embedder


@pytest.mark.parametrize("negatives", [0, 1, 2])
def test_info_nce_equals_multiple_negatives_ranking_loss(negatives):
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    g = torch.Generator().manual_seed(negatives)
    q = torch.randn(8, 32, generator=g, requires_grad=True)
    docs = [torch.randn(8, 32, generator=g, requires_grad=True) for _ in range(1 + negatives)]
    mnrl = losses.MultipleNegativesRankingLoss(model=torch.nn.Identity())
    expected = mnrl.compute_loss_from_embeddings([q, *docs], labels=None)
    q_grad, d_grad = torch.autograd.grad(expected, [q, docs[0]])
    ours = info_nce(q, torch.cat(docs))
    torch.testing.assert_close(ours, expected)
    for a, b in zip(torch.autograd.grad(ours, [q, docs[0]]), (q_grad, d_grad), strict=True):
        torch.testing.assert_close(a, b)


def test_batches_hold_no_repeated_passage():
    class Chars:
        def encode(self, text, add_special_tokens=True):
            return [ord(c) % 50 + 3 for c in text]

        def add_special(self, ids):
            return [1, *ids, 2]

        def pad(self, rows):
            T = max(map(len, rows))
            return (torch.tensor([r + [0] * (T - len(r)) for r in rows]),
                    torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows]))

    pairs = [(f"q{i}", f"passage {i % 5}") for i in range(20)]  # 4 questions share each passage
    next_batch = pair_batches(pairs, Chars(), 4, 32)
    for _ in range(20):
        q_idx, q_mask, p_idx, p_mask = next_batch()
        rows = [tuple(r[m.bool()].tolist()) for r, m in zip(p_idx, p_mask, strict=True)]
        assert len(rows) == len(set(rows)) == 4
    with pytest.raises(UserError, match="in-batch negatives"):
        pair_batches(pairs[:1], Chars(), 4, 32)


def test_training_lowers_the_loss(tiny_encoder):
    encoder = load_embedder(tiny_encoder)
    model = encoder.model
    pairs = [(f"what is topic {t}?", f"topic {t} is about {w}") for t, w in
             enumerate(["cats", "rivers", "engines", "music", "stars", "bread", "trains", "rain"])]
    state = train_embedder(model, encoder.tokenizer, pairs, steps=25, batch_size=8, lr=1e-3, warmup_steps=2,
                           progress=False)
    first, last = state.history[0]["loss"], state.history[-1]["loss"]
    assert last < first * 0.7
    with pytest.raises(UserError, match="positive"):
        train_embedder(model, encoder.tokenizer, pairs, steps=0)
