"""Word2Vec: skip-gram with negative sampling (Mikolov et al. 2013), the static word vectors contextual
embeddings replaced: one vector per word type, whatever the sentence around it.

For each centre word w and each context word c within a random window (1..`window` words either side,
so nearer words are sampled more often, as word2vec.c does), the model raises sigma(v_w . u_c) and lowers
sigma(v_w . u_n) for `negatives` words n drawn from the unigram distribution to the 3/4 power:

    loss = -log sigma(v_w . u_c) - sum_n log sigma(-v_w . u_n)

Frequent words are subsampled: a word of frequency f is kept with probability sqrt(t / f) + t / f
(t = 1e-4; word2vec.c's formula; `subsample=0` keeps every word, for tiny corpora). Words are lowercase
letter runs, kept when they occur at least `min_count` times. `neighbours` (cosine) and `analogy`
(b - a + c, the king - man + woman test) read the input vectors v. Training is sparse: only the rows a batch
touches get gradients (SparseAdam).
This file does not read files; the recipe passes text in (Python's own sources and docs by default).
"""

import math
import re
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmlab.common import log
from llmlab.common.errors import UserError

WORD = re.compile(r"[a-z]+")
SUBSAMPLE_T = 1e-4  # word2vec.c's default threshold for subsampling frequent words


@dataclass
class Word2Vec:
    words: list[str]
    vectors: torch.Tensor  # (V, dim) input vectors, what neighbours and analogies read
    losses: list[float]

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unit = F.normalize(self.vectors, dim=1)

    def _id(self, word: str) -> int:
        if word not in self.index:
            raise UserError(f"{word!r} is not in the vocabulary ({len(self.words)} words seen at least min_count "
                            "times); try a more common word")
        return self.index[word]

    def _nearest(self, v: torch.Tensor, k: int, exclude: set[int]) -> list[tuple[str, float]]:
        sims = self.unit @ F.normalize(v, dim=0)  # (V,)
        sims[list(exclude)] = float("-inf")
        top = sims.topk(min(k, len(self.words) - len(exclude)))
        return [(self.words[i], float(s)) for s, i in zip(top.values, top.indices, strict=True)]

    def neighbours(self, word: str, k: int = 8) -> list[tuple[str, float]]:
        """The k words with the most similar vectors (cosine), the word itself left out."""
        i = self._id(word)
        return self._nearest(self.unit[i], k, {i})

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """a is to b as c is to ...: words nearest to b - a + c (3CosAdd), the three words left out."""
        ia, ib, ic = self._id(a), self._id(b), self._id(c)
        return self._nearest(self.unit[ib] - self.unit[ia] + self.unit[ic], k, {ia, ib, ic})


def tokenize(text: str) -> list[str]:
    """>>> tokenize("Return the Greatest common divisor.")
    ['return', 'the', 'greatest', 'common', 'divisor']
    """
    return WORD.findall(text.lower())


def build_vocab(tokens: list[str], min_count: int = 5, max_words: int = 30000) -> tuple[list[str], torch.Tensor]:
    """(words by frequency, their counts) for words seen at least min_count times, at most max_words of them."""
    counts = Counter(tokens).most_common(max_words)
    words = [w for w, c in counts if c >= min_count]
    if len(words) < 10:
        raise UserError(f"only {len(words)} words occur at least min_count={min_count} times; give more text or "
                        "lower min_count")
    return words, torch.tensor([c for _, c in counts[:len(words)]], dtype=torch.float)


def skipgram_pairs(ids: torch.Tensor, window: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, context) id pairs: for each offset d in 1..window, a pair wherever the centre's random window
    (1..window) reaches d, in both directions."""
    reach = torch.randint(1, window + 1, (len(ids),), generator=generator)  # (N,)
    centres, contexts = [], []
    for d in range(1, window + 1):
        ok = reach[:-d] >= d  # centre i sees i + d
        centres += [ids[:-d][ok], ids[d:][reach[d:] >= d]]
        contexts += [ids[d:][ok], ids[:-d][reach[d:] >= d]]
    return torch.cat(centres), torch.cat(contexts)


def train_word2vec(texts: list[str], dim: int = 100, window: int = 5, negatives: int = 5, min_count: int = 5,
                   epochs: int = 1, batch_size: int = 4096, lr: float = 0.01, max_tokens: int | None = 2_000_000,
                   subsample: float = SUBSAMPLE_T, seed: int = 0, progress: bool = True) -> Word2Vec:
    """Skip-gram with negative sampling over the texts' words; returns the vocabulary and its vectors."""
    if dim < 1 or window < 1 or negatives < 1 or epochs < 1 or batch_size < 1:
        raise UserError("word2vec: dim, window, negatives, epochs and batch_size must all be at least 1")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokens = [t for text in texts for t in tokenize(text)][:max_tokens]
    words, counts = build_vocab(tokens, min_count)
    index = {w: i for i, w in enumerate(words)}
    ids = torch.tensor([index.get(t, -1) for t in tokens])
    ids = ids[ids >= 0]
    freq = counts / counts.sum()
    keep_p = (torch.sqrt(subsample / freq) + subsample / freq).clamp(max=1.0) if subsample else torch.ones(len(words))
    noise = counts.pow(0.75)
    noise /= noise.sum()
    centre_emb = torch.nn.Embedding(len(words), dim, sparse=True)
    context_emb = torch.nn.Embedding(len(words), dim, sparse=True)
    torch.nn.init.uniform_(centre_emb.weight, -0.5 / dim, 0.5 / dim)  # word2vec.c's init; contexts start at 0
    torch.nn.init.zeros_(context_emb.weight)
    optimizer = torch.optim.SparseAdam([centre_emb.weight, context_emb.weight], lr=lr)
    losses: list[float] = []
    for epoch in range(epochs):
        kept = ids[torch.rand(len(ids), generator=g) < keep_p[ids]]  # subsampled anew each epoch
        centres, contexts = skipgram_pairs(kept, window, g)
        order = torch.randperm(len(centres), generator=g)
        steps = math.ceil(len(order) / batch_size)
        for step in range(steps):
            rows = order[step * batch_size:(step + 1) * batch_size]
            v = centre_emb(centres[rows])  # (B, dim)
            u_pos = context_emb(contexts[rows])  # (B, dim)
            u_neg = context_emb(torch.multinomial(noise, len(rows) * negatives, True, generator=g)
                                .view(len(rows), negatives))  # (B, n, dim)
            pos = F.logsigmoid((v * u_pos).sum(-1))  # (B,)
            neg = F.logsigmoid(-(u_neg @ v[:, :, None]).squeeze(-1)).sum(-1)  # (B,)
            loss = -(pos + neg).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if progress and (step % 200 == 0 or step == steps - 1):
                log.info(f"word2vec epoch {epoch + 1}/{epochs} step {step + 1}/{steps} loss {loss.item():.3f}")
    return Word2Vec(words, centre_emb.weight.detach().clone(), losses)
