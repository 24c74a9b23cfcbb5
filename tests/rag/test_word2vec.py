"""Word2Vec: skip-gram pairs equal a word-by-word reference, and words used in the same contexts end up near
each other while unrelated ones do not."""

import random

import pytest
import torch

from llmlab.common.errors import UserError
from llmlab.rag.word2vec import skipgram_pairs, tokenize, train_word2vec


def test_skipgram_pairs_equal_a_loop():
    ids = torch.arange(30)
    got = skipgram_pairs(ids, 3, torch.Generator().manual_seed(0))
    reach = torch.randint(1, 4, (30,), generator=torch.Generator().manual_seed(0))
    expected = sorted((i, j) for i in range(30) for j in range(30) if 0 < abs(i - j) <= reach[i])
    assert sorted(zip(got[0].tolist(), got[1].tolist(), strict=True)) == expected


def test_shared_contexts_make_neighbours():
    rng = random.Random(0)
    animals, tools = ["cat", "dog", "horse", "cow"], ["hammer", "saw", "drill", "wrench"]
    sentences = []
    for _ in range(1500):
        if rng.random() < 0.5:
            sentences.append(f"the {rng.choice(animals)} eats grass and sleeps in the barn")
        else:
            sentences.append(f"the {rng.choice(tools)} cuts metal in the workshop garage")
    model = train_word2vec(sentences, dim=16, window=3, negatives=4, min_count=3, epochs=2, batch_size=512,
                           lr=0.02, subsample=0, progress=False)  # every word is "frequent" in 11 words
    assert model.losses[-1] < model.losses[0]
    near = [w for w, _ in model.neighbours("cat", 3)]
    assert set(near) <= set(animals) | {"eats", "grass", "sleeps", "barn"}
    assert model.unit[model.index["cat"]] @ model.unit[model.index["dog"]] > \
        model.unit[model.index["cat"]] @ model.unit[model.index["saw"]]
    assert len(model.analogy("cat", "dog", "hammer", 2)) == 2
    with pytest.raises(UserError, match="not in the vocabulary"):
        model.neighbours("unicorn")
    assert tokenize("Return the GCD2 value.") == ["return", "the", "gcd", "value"]
    with pytest.raises(UserError, match="min_count"):
        train_word2vec(["a few words only"], progress=False)
