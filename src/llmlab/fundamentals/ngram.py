"""Character n-gram language models: counts, add-k and interpolated Kneser-Ney smoothing, perplexity, sampling.

A model of order n predicts each character from the n - 1 before it. Every document is padded on the left
with n - 1 `BOS` symbols, so its first characters are predicted from "start of text" contexts; BOS is only
ever context, never predicted. The vocabulary is the training characters plus `UNK`, which stands for any
character the training text lacks, so held-out text always has a finite perplexity.

Smoothing (Chen & Goodman 1998, "An empirical study of smoothing techniques for language modeling"):
- `addk`: (c(h w) + k) / (c(h) + k |V|) on the order-n counts alone (Lidstone; k = 1 is Laplace).
- `kn`: interpolated Kneser-Ney (Kneser & Ney 1995; C&G eq. 12-14). At order m with context h:
      P_m(w | h) = max(c_m(h w) - D_m, 0) / c_m(h) + gamma_m(h) * P_{m-1}(w | h minus its first char)
      gamma_m(h) = D_m * N1+(h .) / c_m(h)
  where c_n is the raw count at the top order and, below it, c_m(h w) is the continuation count
  N1+(. h w) = how many distinct characters (BOS included) precede h w; P_0 is uniform over the vocabulary, so every
  character keeps some mass. A context never seen passes the lower order through unchanged.
  One discount per order, D = n1 / (n1 + 2 n2) (Ney et al. 1994), n_r = how many n-grams have count r.
- `mkn`: modified Kneser-Ney (C&G eq. 17-19): three discounts per order, for counts 1, 2 and 3+,
      D_r = r - (r + 1) Y n_{r+1} / n_r with Y = n1 / (n1 + 2 n2),
  and gamma_m(h) = (D_1 N1(h .) + D_2 N2(h .) + D_3+ N3+(h .)) / c_m(h).
  Discounts are clamped into [MIN_DISCOUNT, r]: on small texts the count-of-counts can be zero or give a
  negative D, and a zero discount would leave no mass for unseen characters.

Raw counts of a k-gram do not depend on the model's order (the padding a k-gram sees is the same), so
`count_ngrams` counts once up to the largest order and models of every smaller order share the counts.

Not here: words, tokenizers, or neural models (the recipe trains llmlab's Transformer on the same text).
"""

import math
import random
from collections import Counter
from dataclasses import dataclass

from llmlab.common.io import atomic_write

BOS = "\x02"  # ASCII start-of-text: left padding, context only; a BOS inside the text is read as UNK
UNK = "\ufffd"  # the Unicode replacement character stands for any character training never saw
MIN_DISCOUNT = 0.05
SMOOTHINGS = ("addk", "kn", "mkn")


@dataclass
class NgramCounts:
    """Raw counts of every k-gram, k = 1..n, over BOS-padded documents; `raw[k]` maps a k-char string to its count."""

    vocab: list[str]
    raw: dict[int, Counter]

    @property
    def max_order(self) -> int:
        return max(self.raw)


def normalize(text: str, vocab: set[str]) -> str:
    """Characters outside the vocabulary (and BOS itself) become UNK.

    >>> normalize("abz", {"a", "b", UNK})
    'ab\ufffd'
    """
    return "".join(c if c in vocab and c != BOS else UNK for c in text)


def count_ngrams(texts: list[str], n: int) -> NgramCounts:
    """Count all k-grams (k = 1..n) ending at each character of each document.

    >>> c = count_ngrams(["abab"], 2)
    >>> dict(c.raw[2]) == {BOS + "a": 1, "ab": 2, "ba": 1}
    True
    """
    if n < 1:
        raise ValueError(f"order n must be at least 1, got {n}")
    chars = {c for t in texts for c in t} - {BOS}
    if not chars:
        raise ValueError("no training text: give at least one non-empty document")
    vocab = sorted(chars | {UNK})
    raw: dict[int, Counter] = {k: Counter() for k in range(1, n + 1)}
    for text in texts:
        s = BOS * (n - 1) + text.replace(BOS, UNK)
        for k in range(1, n + 1):
            raw[k].update(s[i - k + 1:i + 1] for i in range(n - 1, len(s)))
    return NgramCounts(vocab, raw)


def estimate_discounts(counts: list[int], modified: bool) -> tuple[float, float, float]:
    """(D_1, D_2, D_3+) from the count-of-counts of one order (C&G 1998, eq. 19; one shared D when not modified).

    >>> estimate_discounts([1, 1, 1, 2, 3, 4], modified=False)  # n1 = 3, n2 = 1: D = 3 / 5
    (0.6, 0.6, 0.6)
    """
    n_r = Counter(c for c in counts if c <= 4)
    n1, n2 = n_r[1], n_r[2]
    y = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.0
    if not modified:
        d = min(max(y, MIN_DISCOUNT), 1.0)
        return d, d, d
    out = []
    for r in (1, 2, 3):
        d = r - (r + 1) * y * n_r[r + 1] / n_r[r] if n_r[r] else y
        out.append(min(max(d, MIN_DISCOUNT), float(r)))
    return out[0], out[1], out[2]


class NgramLM:
    """A character model of order n over shared counts, with one of `SMOOTHINGS`.

    `tables[m]` maps a context h (m - 1 chars) to (next-char counts, c_m(h), gamma_m(h)), with continuation
    counts below the top order for Kneser-Ney.
    """

    def __init__(self, counts: NgramCounts, n: int, smoothing: str = "mkn", k: float = 0.01,
                 discount: float | None = None):
        if not 1 <= n <= counts.max_order:
            raise ValueError(f"order n must be in 1..{counts.max_order} (the counted orders), got {n}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing {smoothing!r} is unknown; choose one of {', '.join(SMOOTHINGS)}")
        if smoothing == "addk" and not k > 0:
            raise ValueError(f"add-k needs k > 0 (k = 0 gives unseen characters probability 0), got {k}")
        if discount is not None and not 0 < discount <= 1:
            raise ValueError(f"a fixed discount must be in (0, 1], got {discount}")
        self.n, self.smoothing, self.k = n, smoothing, k
        self.vocab = counts.vocab
        self.index = {c: i for i, c in enumerate(self.vocab)}
        orders = [n] if smoothing == "addk" else range(1, n + 1)
        self.discounts: dict[int, tuple[float, float, float]] = {}
        self.tables: dict[int, dict[str, tuple[dict[str, int], int, float]]] = {}
        for m in orders:
            grams = counts.raw[m] if m == n else Counter(g[1:] for g in counts.raw[m + 1])  # continuation counts
            if smoothing == "addk":
                self.discounts[m] = (0.0, 0.0, 0.0)
            elif discount is not None:
                self.discounts[m] = (discount, discount, discount)
            else:
                self.discounts[m] = estimate_discounts(list(grams.values()), modified=smoothing == "mkn")
            self.tables[m] = self._table(grams, self.discounts[m])

    @staticmethod
    def _table(grams: Counter, d: tuple[float, float, float]) -> dict[str, tuple[dict[str, int], int, float]]:
        children: dict[str, dict[str, int]] = {}
        for g, c in grams.items():
            children.setdefault(g[:-1], {})[g[-1]] = c
        table = {}
        for h, nxt in children.items():
            total = sum(nxt.values())
            mass = sum(d[min(c, 3) - 1] for c in nxt.values())  # D_1 N1 + D_2 N2 + D_3+ N3+
            table[h] = (nxt, total, mass / total)
        return table

    def prob(self, w: str, context: str) -> float:
        """P(w | the last n - 1 characters of context); context is BOS-padded by the caller (see `score`)."""
        V = len(self.vocab)
        if self.smoothing == "addk":
            h = context[len(context) - self.n + 1:]  # the last n - 1 chars ("" when n = 1)
            nxt, total, _ = self.tables[self.n].get(h, ({}, 0, 0.0))
            return (nxt.get(w, 0) + self.k) / (total + self.k * V)
        p = 1.0 / V
        for m in range(1, self.n + 1):  # lowest order first: each order interpolates with the one below
            h = context[len(context) - m + 1:]
            entry = self.tables[m].get(h)
            if entry is None:
                continue  # context never seen: this order adds nothing, keep the lower-order estimate
            nxt, total, gamma = entry
            c = nxt.get(w, 0)
            d = self.discounts[m][min(c, 3) - 1] if c else 0.0
            p = (c - d) / total + gamma * p
        return p

    def distribution(self, context: str) -> list[float]:
        """P(w | context) for every w in `vocab`, in vocabulary order (sums to 1)."""
        return [self.prob(w, context) for w in self.vocab]

    def score(self, texts: list[str]) -> dict[str, float]:
        """Total negative log-likelihood of documents, and per character: perplexity and bits per character."""
        vocab = set(self.vocab)
        nll, chars = 0.0, 0
        for text in texts:
            s = BOS * (self.n - 1) + normalize(text, vocab)
            for i in range(self.n - 1, len(s)):
                nll -= math.log(self.prob(s[i], s[i - self.n + 1:i]))
            chars += len(text)
        if not chars:
            raise ValueError("no text to score: give at least one non-empty document")
        return {"nll": nll, "chars": chars, "ppl": math.exp(nll / chars), "bpc": nll / chars / math.log(2)}

    def sample(self, n_chars: int, seed: int = 0, prompt: str = "") -> str:
        """`n_chars` characters drawn one at a time after `prompt`; the same seed gives the same text."""
        rng = random.Random(seed)
        s = BOS * (self.n - 1) + normalize(prompt, set(self.vocab))
        out = []
        for _ in range(n_chars):
            c = rng.choices(self.vocab, weights=self.distribution(s[len(s) - self.n + 1:]))[0]
            out.append(c)
            s += c
        return "".join(out)


def perplexity_table(train: list[str], held_out: list[str], orders: list[int], smoothing: str = "mkn",
                     k: float = 0.01, train_eval_chars: int = 50_000) -> list[dict]:
    """One row per order: held-out perplexity and bits per character, and the same on (a prefix of) training text.

    Training perplexity keeps falling with n. Held-out perplexity under add-k turns back up once most long
    contexts are rare (their few counts get nearly all the mass); Kneser-Ney keeps improving, more slowly,
    because a rare context hands most of its mass to the shorter one.
    """
    if not orders or min(orders) < 1:
        raise ValueError(f"orders must be a non-empty list of integers >= 1, got {orders}")
    counts = count_ngrams(train, max(orders))
    train_sample, total = [], 0
    for text in train:
        if total >= train_eval_chars:
            break
        train_sample.append(text[:train_eval_chars - total])
        total += len(train_sample[-1])
    rows = []
    for n in sorted(orders):
        model = NgramLM(counts, n, smoothing, k)
        val, tr = model.score(held_out), model.score(train_sample)
        rows.append({"n": n, "smoothing": smoothing, "val_ppl": val["ppl"], "val_bpc": val["bpc"],
                     "train_ppl": tr["ppl"], "train_bpc": tr["bpc"], "contexts": len(model.tables[n])})
    return rows


def plot_perplexity_table(rows: list[dict], path: str, neural_bpc: float | None = None) -> None:
    """Bits per character against n, held-out (solid) and training (dashed) per smoothing; a neural model as a line."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, smoothing in enumerate(dict.fromkeys(r["smoothing"] for r in rows)):
        mine = [r for r in rows if r["smoothing"] == smoothing]
        color = f"C{i}"
        ax.plot([r["n"] for r in mine], [r["val_bpc"] for r in mine], "o-", color=color, label=f"{smoothing} held-out")
        ax.plot([r["n"] for r in mine], [r["train_bpc"] for r in mine], "--", color=color, alpha=0.6,
                label=f"{smoothing} train")
    if neural_bpc is not None:
        ax.axhline(neural_bpc, color="k", linestyle=":", label="neural (Transformer) held-out")
    ax.set_xlabel("order n (each character predicted from the n - 1 before it)")
    ax.set_ylabel("bits per character")
    ax.set_title("character n-gram models")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
